"""Evaluation-time settings on a finished checkpoint (`robopol eval RUN policy.algo.guidance_weight=0.02`)
and sweeps over them (`robopol sweep`): the sampler settings an algorithm declares as `eval_settings`
(QGF: guidance weight, best-of-N) and the evaluation noise change; the weights never do."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from robopol.algos.base import algorithm_class
from robopol.checkpoint import Checkpoint, load_policy
from robopol.config import RunConfig
from robopol.data.atomic import atomic_output
from robopol.errors import ConfigError
from robopol.evaluate import evaluate
from robopol.typed_config import build, to_dict


def allowed_keys(cfg: RunConfig) -> list[str]:
    settings = algorithm_class(cfg.policy.algo.name).eval_settings
    return ["policy.eval_noise", *(f"policy.algo.{name}" for name in settings)]


def with_eval_settings(ckpt: Checkpoint, overrides: Sequence[str]) -> Checkpoint:
    """The checkpoint with `key=value` overrides of its evaluation-time settings, validated as the
    run's config is; any other key is refused, naming those allowed."""
    if not overrides:
        return ckpt
    data, allowed = to_dict(ckpt.config), allowed_keys(ckpt.config)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        if key not in allowed:
            raise ConfigError(f"{key}: not an evaluation-time setting of {ckpt.config.policy.algo.name} checkpoints; "
                              f"allowed: {', '.join(allowed)}")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = yaml.safe_load(text)
    return dataclasses.replace(ckpt, config=build(RunConfig, data))


def sweep(ckpt: Checkpoint, weights: Sequence[float], best_of_n: Sequence[int], episodes: int, seed_base: int,
          out: Path) -> dict[str, Any]:
    """Evaluate the checkpoint at guidance weight 0 and each of `weights`, for each best-of-N, on the
    same seeds; write sweep.json and sweep.png (success and, for PushT, score against w) to `out`."""
    rows = []
    # Every setting is built (and so validated) before the first episode, so a bad one fails at once.
    points = []
    for n in best_of_n:
        for w in [0.0, *weights]:
            setting = with_eval_settings(ckpt, [f"policy.algo.guidance_weight={w}", f"policy.algo.best_of_n={n}"])
            points.append((w, n, setting, load_policy(setting)))
    with tqdm(points, desc="sweep", unit="setting", dynamic_ncols=True) as bar:
        for w, n, setting, policy in bar:
            metrics = evaluate(policy, setting.config.task, setting.config.policy, episodes, seed_base)
            rows.append({"guidance_weight": w, "best_of_n": n, **metrics})
            bar.set_postfix(w=f"{w:g}", N=n, success=f"{metrics['success_rate']:.3f}")
    result = {"checkpoint": str(ckpt.path), "task": ckpt.config.task.name, "seeds": [seed_base, seed_base + episodes - 1],
              "eval_noise": ckpt.config.policy.eval_noise, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    with atomic_output(out / "sweep.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    plot_sweep([result], out / "sweep.png")
    return result


def plot_sweep(results: Sequence[dict[str, Any]], path: Path) -> Path:
    """One panel per metric (success; PushT score where present), one line per task and best-of-N,
    against the guidance weight (w = 0 drawn at the axis' left edge, the unguided BC policy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ["success_rate"] + (["mean_max_reward"] if any("mean_max_reward" in r for res in results
                                                               for r in res["rows"]) else [])
    lines = [(res, n) for res in results for n in sorted({r["best_of_n"] for r in res["rows"]})]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for k, (res, n) in enumerate(lines):  # colour by line, not by panel, so a line looks the same in each
            rows = [r for r in res["rows"] if r["best_of_n"] == n and metric in r]
            if rows:
                ax.plot([max(r["guidance_weight"], 1e-3) for r in rows], [r[metric] for r in rows], marker="o",
                        label=f"{res['task']}, best-of-{n}", color=f"C{k}")
        ax.set_xscale("log")
        ax.set_xlabel("guidance weight w (w = 0 plotted at 1e-3)")
        ax.set_ylabel({"success_rate": "success rate", "mean_max_reward": "PushT score"}[metric])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
