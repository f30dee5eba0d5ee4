"""Run outputs a person reads: metrics CSVs, TensorBoard events and a learning-curve PNG."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


class RunLogger:
    """Appends rows to <run>/<stream>.csv (one file per stream: train, eval) and mirrors them to TensorBoard."""

    def __init__(self, run_dir: Path, tensorboard: bool = True) -> None:
        self.run_dir = run_dir
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, stream: str, env_steps: int, metrics: dict[str, float]) -> None:
        path = self.run_dir / f"{stream}.csv"
        row = {"env_steps": env_steps, **metrics}
        header = self._header(path)
        if header and set(row) - set(header):  # a new metric: rewrite the file with the union of columns
            self._write(path, [*self.read(stream), row])
        else:
            with open(path, "a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=header or list(row), restval="")
                if not header:
                    writer.writeheader()
                writer.writerow(row)
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(f"{stream}/{key}", value, env_steps)
            self.writer.flush()

    @staticmethod
    def _header(path: Path) -> list[str]:
        if not path.exists():
            return []
        with open(path, newline="") as f:
            return next(csv.reader(f), [])

    def read(self, stream: str) -> list[dict[str, str]]:
        path = self.run_dir / f"{stream}.csv"
        if not path.exists():
            return []
        with open(path, newline="") as f:
            return list(csv.DictReader(f))

    def truncate_after(self, step: int, streams: tuple[str, ...]) -> None:
        """On resume, drop rows logged after the checkpoint so curves do not double back."""
        for stream in streams:
            rows = self.read(stream)
            kept = [r for r in rows if int(float(r["env_steps"])) <= step]
            if len(kept) != len(rows):
                self._write(self.run_dir / f"{stream}.csv", kept)

    @staticmethod
    def _write(path: Path, rows: list[dict]) -> None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)

    def plot(self, title: str) -> Path:
        """<run>/learning_curve.png: training-episode and evaluation returns against env steps."""
        return self.plot_curves("learning_curve.png", [("train", "episode_return", "training episodes"),
                                                       ("eval", "return_mean", "evaluation")], title, ylabel="return")

    def plot_metrics(self, stream: str, keys: tuple[str, ...], title: str, name: str, xlabel: str = "env steps",
                     log_y: bool = False) -> Path:
        """<run>/<name>: the given columns of one stream against its step column (e.g. a BC loss curve)."""
        return self.plot_curves(name, [(stream, key, key) for key in keys], title, xlabel, log_y=log_y)

    def plot_curves(self, name: str, series: list[tuple[str, str, str]], title: str, xlabel: str = "env steps",
                    ylabel: str = "", log_y: bool = False) -> Path:
        """One PNG of (stream, column, label) series against each stream's step column."""
        path = self.run_dir / name
        fig, ax = plt.subplots(figsize=(7, 4))
        for stream, key, label in series:
            points = [(float(r["env_steps"]), float(r[key])) for r in self.read(stream) if r.get(key)]
            if points:
                ax.plot(*zip(*points), marker="o" if len(points) < 30 else None, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        if log_y:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
