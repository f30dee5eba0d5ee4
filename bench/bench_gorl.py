"""GoRL beside PPO and FPO on Hopper-v5 and Walker2d-v5 at 1M env steps, several seeds each: evaluation
return against env steps and wall time with GoRL's stage switches marked, the evaluation return just
before and just after each switch (policies/gorl.yaml evaluates at both), env steps/s of each entry
and the decoder-training time of each switch. Writes bench/out/gorl-1m.json and .png.

    python bench/bench_gorl.py                          # tasks/{hopper,walker2d}_1m x policies/{gorl,ppo,fpo}, seeds 0, 1
    python bench/bench_gorl.py --tasks walker2d_1m --policies gorl --seeds 1 --reuse   # one more entry, beside saved ones
    python bench/bench_gorl.py --tasks hopper_stand_1500k --policies gorl_hopper_stand ppo fpo \
        --seeds 0 --reuse --name gorl-hopper-stand      # DMC hopper-stand (and --seeds 1 in a second process)
    python bench/bench_gorl.py --policies gorl_stage_anneal --seeds 0 --reuse --name gorl-sa \
        --include bench/results/gorl-1m.json            # a variant beside the saved entries (seed 1 in a second process)
    python bench/bench_gorl.py --tasks hopper_1m --policies gorl ppo --seeds 0 --name gorl-smoke \\
        --override train.total_env_steps=20480 train.eval_episodes=2 \\
        --gorl-override "policy.algo.stage_env_steps=[8192]" policy.algo.decoder_steps=200   # a smoke run

Every setting comes from the task and policy files (each entry is `robopol train task=T policy=P
train.seed=S`); --override / --gorl-override only shrink a smoke run. Env steps/s is measured over the
PPO iterations alone (for GoRL, the iterations without a switch), so it excludes evaluation and the
switches, whose decoder training is reported per switch. With --reuse an entry whose run folder
(bench/out/NAME-runs/TASK-POLICY-sSEED) holds a finished run is read, not run again, and the summary
covers every finished entry there, so seeds can run in separate processes, one per core."""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from robopol.config import load_run_config  # noqa: E402
from robopol.runner import train  # noqa: E402

OUT = Path(__file__).parent / "out"
COLORS = {"gorl": "tab:red", "gorl_stage_anneal": "tab:purple", "ppo": "tab:blue", "fpo": "tab:green"}


def read(path: Path) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(open(path))]


def switches(train_rows: list[dict[str, float]], eval_rows: list[dict[str, float]]) -> list[dict[str, float]]:
    """Each stage switch: the env steps it ended at, its decoder-training seconds, and the evaluation
    logged just before it (the last one after the previous iteration) and just after it."""
    out, previous = [], 0.0
    for row in train_rows:
        if "decoder_seconds" in row:
            before = [r for r in eval_rows if previous < r["env_steps"] < row["env_steps"]]
            after = [r for r in eval_rows if r["env_steps"] == row["env_steps"]]
            out.append({"stage": row["stage"], "env_steps": row["env_steps"], "wall_time": row["wall_time"],
                        "decoder_seconds": row["decoder_seconds"], "decoder_loss": row["decoder_loss"],
                        "return_before": before[-1]["return_mean"] if before else None,
                        "return_after": after[0]["return_mean"] if after else None})
        previous = row["env_steps"]
    return out


def finished(run_dir: Path) -> bool:
    return (run_dir / "eval.csv").exists() and (run_dir / "wall_seconds").exists()


def run(task: str, policy: str, seed: int, overrides: list[str], runs: Path, reuse: bool = False) -> dict:
    run_dir = runs / f"{task}-{policy}-s{seed}"
    cfg = load_run_config([f"task={task}", f"policy={policy}", f"train.seed={seed}", f"train.run_dir={run_dir}",
                           "train.video=false", "train.progress=false", "train.checkpoint_every=1000", *overrides])
    if not (reuse and finished(run_dir)):
        shutil.rmtree(run_dir, ignore_errors=True)
        start = time.perf_counter()
        train(cfg)
        (run_dir / "wall_seconds").write_text(f"{time.perf_counter() - start}\n")
    wall = float((run_dir / "wall_seconds").read_text())
    train_rows, eval_rows = read(run_dir / "train.csv"), read(run_dir / "eval.csv")
    steps, seconds, previous = 0.0, 0.0, 0.0
    for row in train_rows:
        if "decoder_seconds" not in row:
            steps += row["env_steps"] - previous
            seconds += (row["env_steps"] - previous) / row["steps_per_second"]
        previous = row["env_steps"]
    entry = {"task": task, "policy": policy, "seed": seed, "env_id": cfg.task.env_id, "wall_seconds": wall,
             "env_steps": int(train_rows[-1]["env_steps"]), "steps_per_second": steps / seconds,
             "final_return": eval_rows[-1]["return_mean"], "switches": switches(train_rows, eval_rows),
             "curve": [{"env_steps": r["env_steps"], "wall_time": r["wall_time"], "return": r["return_mean"]}
                       for r in eval_rows]}
    print(f"{task} {policy} seed {seed}: return {entry['final_return']:.0f}, {entry['steps_per_second']:.0f} "
          f"env steps/s, wall {wall:.0f} s, switches {entry['switches']}", flush=True)
    return entry


def summarise(entries: list[dict]) -> dict:
    """Per task and policy: mean and std of the final return over seeds, mean env steps/s, and for GoRL each switch's
    mean decoder seconds and the mean relative change of the return across it."""
    out: dict[str, dict] = {}
    for task in sorted({e["task"] for e in entries}):
        for policy in sorted({e["policy"] for e in entries if e["task"] == task}):
            group = [e for e in entries if e["task"] == task and e["policy"] == policy]
            row = {"seeds": len(group), "final_return_mean": float(np.mean([e["final_return"] for e in group])),
                   "final_return_std": float(np.std([e["final_return"] for e in group])),
                   "steps_per_second": float(np.mean([e["steps_per_second"] for e in group]))}
            switch_lists = [e["switches"] for e in group if e["switches"]]
            if switch_lists:
                row["decoder_seconds_per_switch"] = float(np.mean([s["decoder_seconds"] for sl in switch_lists for s in sl]))
                row["return_change_at_switch"] = [
                    float(np.mean([(s["return_after"] - s["return_before"]) / max(abs(s["return_before"]), 1e-8)
                                   for s in column if s["return_before"] is not None and s["return_after"] is not None]))
                    for column in zip(*switch_lists)]
            out[f"{task}/{policy}"] = row
    return out


def plot(entries: list[dict], path: Path) -> None:
    tasks = sorted({e["task"] for e in entries})
    fig, axes = plt.subplots(len(tasks), 2, figsize=(12, 4 * len(tasks)), squeeze=False)
    for row, task in zip(axes, tasks):
        for entry in (e for e in entries if e["task"] == task):
            color = COLORS.get(entry["policy"], COLORS.get(entry["policy"].split("_")[0], "black"))  # gorl_hopper_stand: gorl's
            label = f"{entry['policy']} seed {entry['seed']}"
            for ax, x in zip(row, ("env_steps", "wall_time")):
                ax.plot([p[x] for p in entry["curve"]], [p["return"] for p in entry["curve"]], color=color,
                        alpha=0.5 + 0.5 * (entry["seed"] == 0), marker=".", label=label)
                for switch in entry["switches"]:
                    ax.axvline(switch[x], color=color, linestyle=":", alpha=0.6)
        row[0].set(title=f"{task}: evaluation return (dotted: GoRL stage switches)", xlabel="env steps", ylabel="return")
        row[1].set(title=task, xlabel="wall time (s)", ylabel="return")
        row[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["hopper_1m", "walker2d_1m"])
    parser.add_argument("--policies", nargs="+", default=["gorl", "ppo", "fpo"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds of every entry")
    parser.add_argument("--reuse", action="store_true", help="read finished runs instead of running them again")
    parser.add_argument("--override", nargs="*", default=[], help="key=value for every entry (smoke runs only)")
    parser.add_argument("--gorl-override", nargs="*", default=[], help="key=value for GoRL entries (smoke runs only)")
    parser.add_argument("--include", type=Path, nargs="*", default=[],
                        help="results JSON files (e.g. bench/results/gorl-1m.json) whose entries join the summary and "
                             "plot: runs whose folders are gone; an entry run here wins over one of the same name")
    parser.add_argument("--name", default="gorl-1m")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    runs = OUT / f"{args.name}-runs"
    entries = [run(task, policy, seed, args.override + (args.gorl_override if policy.startswith("gorl") else []), runs, args.reuse)
               for task in args.tasks for seed in args.seeds for policy in args.policies]
    done = {(e["task"], e["policy"], e["seed"]) for e in entries}
    if args.reuse:  # every other finished entry saved beside these
        for folder in sorted(runs.glob("*-s*")):
            task, policy, seed = folder.name.rsplit("-", 2)
            if finished(folder) and (task, policy, int(seed[1:])) not in done:
                entries.append(run(task, policy, int(seed[1:]), args.override, runs, reuse=True))
                done.add((task, policy, int(seed[1:])))
    for path in args.include:
        entries += [e for e in json.loads(path.read_text())["entries"] if (e["task"], e["policy"], e["seed"]) not in done]
    entries.sort(key=lambda e: (e["task"], e["policy"], e["seed"]))
    result = {"entries": entries, "summary": summarise(entries), "included": [str(p) for p in args.include],
              "overrides": args.override,
              "gorl_overrides": args.gorl_override,
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__}}
    (OUT / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    plot(entries, OUT / f"{args.name}.png")
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
