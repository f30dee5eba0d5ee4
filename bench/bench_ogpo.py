"""Benchmark: OGPO (off-policy) beside DPPO (on-policy), both from a deliberately weak BC start, on PushT
and Lift (or Can): success against env steps and against wall time, one plot per task, and the final
policies (and their BC starts) on 200 held-out evaluation seeds.

Every stage is one `robopol` command, so each number reproduces with the CLI alone:
    robopol demos TASK --n N --noise X --seed 1000 --out DATA          (few demonstrations: a weak start)
    robopol pretrain task=TASK policy=bc_flow_TASK policy.algo.dataset=DATA train.run_dir=RUNS/TASK-bc_flow
    robopol pretrain task=TASK policy=bc_diffusion_TASK ...             (DPPO fine-tunes a diffusion actor)
    robopol train task=TASK policy=ogpo_finetune_TASK train.pretrained=RUNS/TASK-bc_flow train.run_dir=...
    robopol train task=TASK policy=dppo_finetune_TASK train.pretrained=RUNS/TASK-bc_diffusion train.run_dir=...
DPPO works on a diffusion chain and OGPO on a flow, so "the same BC start" is two BC runs, one per actor,
on the same demonstrations with the same recipe budget. `--smoke` shrinks every budget through CLI
overrides (listed in SMOKE) to prove the pipeline end to end in minutes and to time both methods per env
step and per update; its success numbers mean nothing. Outputs: bench/out/ogpo/ (runs, data, JSON, PNG).

    python bench/bench_ogpo.py --tasks pusht lift            # the real run: hours on a CPU
    python bench/bench_ogpo.py --tasks pusht lift --smoke    # minutes
    python bench/bench_ogpo.py --tasks lift --seed 1         # another fine-tuning seed from the same BC starts"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "osmesa")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from robopol.checkpoint import load_checkpoint, load_policy  # noqa: E402
from robopol.evaluate import evaluate  # noqa: E402
from robopol.sim.factory import EVAL_SEED_BASE  # noqa: E402

OUT = Path(__file__).parent / "out" / "ogpo"
HELD_OUT_SEED_BASE = EVAL_SEED_BASE + 2_000_000  # seeds no in-run evaluation uses
HELD_OUT_EPISODES = 200
# Few demonstrations so BC starts weak (the issue asks for a start at or below ~0.5 success).
DEMOS: dict[str, dict[str, Any]] = {"pusht": {"n": 50, "noise": 2.0, "ext": "zarr"},
                                    "lift": {"n": 5, "noise": 0.15, "ext": "hdf5"},  # 10 gave BC 0.84-0.88
                                    "can": {"n": 30, "noise": 0.05, "ext": "hdf5"}}
METHODS = {"ogpo": ("ogpo_finetune", "bc_flow"), "dppo": ("dppo_finetune", "bc_diffusion")}
# Lift's DPPO reference runs from the weak start on OGPO's evaluation cadence; PushT's is the README's DPPO run.
RECIPE_SUFFIX = {("dppo", "lift"): "_weak"}
PLUMBING = ["train.video=false", "train.progress=false", "train.threads=1"]
# --smoke only: tiny budgets, so the whole pipeline runs in minutes on one core.
SMOKE = {"demos": 2, "held_out": 4,
         "bc": ["policy.algo.num_steps=30", "policy.algo.val_every=0", "train.eval_episodes=2"],
         "ogpo": ["train.total_env_steps=1200", "train.rollout_steps=25", "train.eval_every=3", "train.eval_episodes=2",
                  "sim.num_envs=4", "policy.algo.learning_starts=400"],
         "dppo": ["train.total_env_steps=1200", "train.rollout_steps=25", "train.eval_every=3", "train.eval_episodes=2",
                  "sim.num_envs=4", "policy.algo.minibatch_size=50"]}


def robopol(*args: str) -> None:
    cmd = ["nice", "-n", "5", sys.executable, "-m", "robopol.cli", *args]
    print("+", " ".join(cmd[3:]), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})


def seed_suffix(seed: int) -> str:
    """What names a fine-tuning seed's run folder and outputs: nothing for seed 0, -sSEED otherwise."""
    return f"-s{seed}" if seed else ""


def stage_dir(task: str, stage: str, seed: int = 0) -> Path:
    """A stage's run folder; the BC starts are shared by every fine-tuning seed."""
    return OUT / "runs" / f"{task}-{stage}{seed_suffix(seed)}"


def prepare(task: str, smoke: bool) -> None:
    """Demonstrations and the two BC starts (cached)."""
    demos = DEMOS[task]
    n = SMOKE["demos"] if smoke else demos["n"]
    data = OUT / "data" / f"{task}-{n}x{demos['noise']}.{demos['ext']}"
    if not data.exists():
        robopol("demos", task, "--n", str(n), "--noise", str(demos["noise"]), "--seed", "1000", "--out", str(data))
    for bc in ("bc_flow", "bc_diffusion"):
        if not (stage_dir(task, bc) / "config.json").exists():
            robopol("pretrain", f"task={task}", f"policy={bc}_{task}", f"policy.algo.dataset={data}",
                    f"train.run_dir={stage_dir(task, bc)}", *PLUMBING, *(SMOKE["bc"] if smoke else []))


def finetune(task: str, method: str, smoke: bool, seed: int) -> None:
    recipe, bc = METHODS[method]
    if not (stage_dir(task, method, seed) / "eval.csv").exists():
        robopol("train", f"task={task}", f"policy={recipe}_{task}{RECIPE_SUFFIX.get((method, task), '')}",
                f"train.pretrained={stage_dir(task, bc)}", f"train.seed={seed}",
                f"train.run_dir={stage_dir(task, method, seed)}", *PLUMBING, *(SMOKE[method] if smoke else []))


def rows(run: Path, stream: str) -> list[dict[str, str]]:
    with open(run / f"{stream}.csv", newline="") as f:
        return list(csv.DictReader(f))


def summarise(task: str, method: str, smoke: bool, seed: int) -> dict[str, Any]:
    """The in-run curve, per-step costs from train.csv, and start/final success on held-out seeds."""
    run = stage_dir(task, method, seed)
    train, curve = rows(run, "train"), rows(run, "eval")
    last = train[-1]
    steps, wall = float(last["env_steps"]), float(last["wall_time"])
    final_ckpt = load_checkpoint(run)
    start = load_checkpoint(stage_dir(task, METHODS[method][1]))
    start.config.policy.actor = final_ckpt.config.policy.actor  # the BC weights under the fine-tuning sampler
    episodes = SMOKE["held_out"] if smoke else HELD_OUT_EPISODES
    held = held_out(run, {"start": start, "final": final_ckpt}, episodes)
    return {"env_steps": steps, "wall_time": wall, "iterations": len(train),
            "seconds_per_1k_env_steps": 1000 * wall / steps, "seconds_per_iteration": wall / len(train),
            "gradient_steps": float(last.get("gradient_steps") or 0),
            "curve": [(float(r["env_steps"]), float(r["wall_time"] or 0), float(r["success_rate"])) for r in curve],
            "held_out_episodes": episodes, "held_out": held}


def held_out(run: Path, checkpoints: dict[str, Any], episodes: int) -> dict[str, float]:
    """Success of each checkpoint on the held-out seeds under the fine-tuning run's task and sampler, cached
    in RUN/held_out.json (keyed by checkpoint path and episodes), so `--methods ogpo` and `--methods dppo`
    can fill it on separate cores and a later full run only reads it."""
    cache_path = run / "held_out.json"

    def cached() -> dict[str, float]:
        return json.loads(cache_path.read_text()) if cache_path.exists() else {}

    final = checkpoints["final"]
    for name, ckpt in reversed(checkpoints.items()):  # the final first: the start may be filling in elsewhere
        key = f"{name} {ckpt.path} {episodes}"
        if key not in cached():
            success = evaluate(load_policy(ckpt), final.config.task, final.config.policy, episodes,
                               seed_base=HELD_OUT_SEED_BASE)["success_rate"]
            cache_path.write_text(json.dumps({**cached(), key: success}, indent=2))
    return {name: cached()[f"{name} {ckpt.path} {episodes}"] for name, ckpt in checkpoints.items()}


def plot(task: str, results: dict[str, dict[str, Any]], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for method, r in results.items():
        steps, wall, success = zip(*r["curve"])
        axes[0].plot(steps, success, marker="o", label=method.upper())
        axes[1].plot(wall, success, marker="o", label=method.upper())
    axes[0].set_xlabel("env steps")
    axes[1].set_xlabel("wall time (s)")
    for ax in axes:
        ax.set_ylabel("success rate")
        ax.legend()
    fig.suptitle(f"{task}: OGPO vs DPPO from a weak BC start")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["pusht", "lift"], choices=sorted(DEMOS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--smoke", action="store_true", help="tiny budgets (see SMOKE): pipeline check and cost timing")
    parser.add_argument("--seed", type=int, default=0, help="fine-tuning seed (train.seed); the BC starts are shared")
    args = parser.parse_args()
    global OUT
    OUT = OUT / "smoke" if args.smoke else OUT
    report: dict[str, Any] = {}
    suffix = seed_suffix(args.seed)
    for task in args.tasks:
        prepare(task, args.smoke)
        for method in args.methods:
            finetune(task, method, args.smoke, args.seed)
        report[task] = {method: summarise(task, method, args.smoke, args.seed) for method in args.methods}
        plot(task, report[task], OUT / f"ogpo-{task}{suffix}.png")
        for method, r in report[task].items():
            print(f"{task} {method}: {r['env_steps']:.0f} env steps in {r['wall_time']:.0f} s "
                  f"({r['seconds_per_1k_env_steps']:.1f} s per 1k env steps, {r['seconds_per_iteration']:.2f} s per "
                  f"iteration); held-out success {r['held_out']['start']:.2f} -> {r['held_out']['final']:.2f}")
    (OUT / f"ogpo{suffix}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
