"""Benchmark: task x {scripted expert, BC-diffusion, BC-flow, BC+DPPO, BC+FPO} on PushT and robomimic.

Per task: write noisy scripted-expert demonstrations, behaviour-clone a diffusion and a flow policy,
fine-tune them on the sparse task reward with DPPO and FPO, and evaluate everything with the task's
protocol on the same fixed seeds. A fine-tuning stage is evaluated at step 0 (its BC start under the
fine-tuning sampler) and along the way, and its start and result are checked again on held-out seeds.
Each stage caches its result in bench/out/runs/<task>-<stage>/result.json, so stages can run as separate
(background) processes and be re-aggregated; a killed fine-tuning stage resumes from its checkpoint:

    python bench/bench_benchmarks.py --tasks pusht --stages expert bc_diffusion dppo
    python bench/bench_benchmarks.py --report            # table + JSON + PNG from the cached stages

Not run in CI: a full pass takes hours on a CPU."""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "osmesa")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from robopol.checkpoint import load_checkpoint, load_policy  # noqa: E402
from robopol.config import RunConfig, load_run_config  # noqa: E402
from robopol.demos import write_demonstrations  # noqa: E402
from robopol.evaluate import evaluate  # noqa: E402
from robopol.experts import make_expert  # noqa: E402
from robopol.protocols import PROTOCOLS, eval_seeds, run_episodes  # noqa: E402
from robopol.sim.factory import EVAL_SEED_BASE, make_base_env  # noqa: E402
from robopol.runner import resume, train  # noqa: E402

OUT = Path(__file__).parent / "out"
RUNS = OUT / "runs"
DATA = Path(__file__).parent / "data"
STAGES = ("expert", "bc_diffusion", "bc_flow", "dppo", "fpo")
HELD_OUT_SEED_BASE = EVAL_SEED_BASE + 1_000_000  # seeds for the held-out check of a fine-tuning claim
FINETUNE = {"dppo": ("dppo_finetune", "bc_diffusion"), "fpo": ("fpo_finetune", "bc_flow")}
# Demonstrations: Lift few and noisy so BC starts below the expert; Can and Square 100 near-clean ones
# (40 Can demos at noise 0.2 gave BC 0.05, a start RL on a sparse reward cannot lift).
BUDGETS: dict[str, dict[str, Any]] = {
    "pusht": dict(demos=200, noise=2.0, fmt="zarr", bc_steps=30_000, ft_steps=dict(dppo=1_650_000, fpo=900_000),
                  eval_episodes=50, ft_eval_episodes=50, eval_every=4, held_out_episodes=200),
    "lift": dict(demos=40, noise=0.15, fmt="hdf5", bc_steps=10_000, ft_steps=dict(dppo=100_000, fpo=100_000),
                 eval_episodes=50, ft_eval_episodes=10, eval_every=10, held_out_episodes=50),
    "can": dict(demos=100, noise=0.05, fmt="hdf5", bc_steps=20_000, ft_steps=dict(dppo=50_000, fpo=50_000),
                eval_episodes=50, ft_eval_episodes=10, eval_every=10, held_out_episodes=50),
    "square": dict(demos=100, noise=0.05, fmt="hdf5", bc_steps=20_000, ft_steps=dict(dppo=32_000, fpo=32_000),
                   eval_episodes=50, ft_eval_episodes=10, eval_every=10, held_out_episodes=50),
}
COMMON = ["train.video=false", "train.progress=false"]
# Per-task overrides for BC and fine-tuning alike (fine-tuning must keep the BC network and chunking).
# PushT: keypoint observations, one observed frame (two let BC copy the agent's velocity instead of reading
# the block), chunks of 2 actions, a 512x4 network (256x3 underfits the pusher: 17 px median error on its
# own training data, score 0.12), and random-noise evaluation (zero noise averages the pushing modes).
TASK_OVERRIDES: dict[str, list[str]] = {
    "pusht": ["task.env_kwargs.obs_type=keypoints", "policy.n_obs_steps=1", "policy.n_action_steps=2",
              "policy.actor.hidden=[512,512,512,512]", "policy.eval_noise=random"],
}
# Fine-tuning overrides per (task, stage).
# PushT fine-tunes on the potential-based progress reward (coverage gain plus a success bonus): its dense
# coverage reward pays for hovering short of the goal, and the success reward gives no signal to a BC
# start that rarely succeeds.
# Fine-tuning from a strong BC start on small batches: a sparse reward gives nearly equal returns, and
# per-minibatch advantage normalisation turns their noise into full-size Adam steps that walk the BC
# weights away. Measured with the policies/*.yaml defaults (8 envs, 1.6k env steps per update): DPPO took
# Can from 0.90 to 0.66 in 60k steps; FPO took Can from 1.00 to 0.0 in 16k and PushT's score from 0.41
# to 0.18 in 12k (at lr 1e-5: 0.26). Lift kept 1.00 with both. So Can and PushT fine-tune on 16 envs,
# 400-sample minibatches, 5 epochs and a 10x slower actor.
_STABLE = ["sim.num_envs=16", "policy.algo.update_epochs=5", "policy.algo.minibatch_size=400"]
# PushT also collects one full episode per env for each update (64 envs x 150 chunks = 19.2k env steps):
# with 20 episodes per update (32 x 100) both methods walked away from BC (FPO 0.28 -> 0.04 success in
# 64k steps, DPPO flat at 0.08-0.10 for 190k), as DPPO's own runs use 50 envs x 300 steps per update.
# Gamma is 0.99 per chunk, and DPPO samples with a 0.05 std floor: the default 0.1 is 26 px of noise on
# every pushed position and holds the BC policy to 0.02 success (0.10 at a 0.02 floor). DPPO rose slowly
# and was still rising at 500k (0.08 -> 0.20) and at 1M (last points 0.28 / 0.28 / 0.30 / 0.16), so its
# run was extended to 1.65M, what one session holds. FPO uses FPO++'s asymmetric trust region. At lr 1e-5
# it rose from 0.28 to 0.40-0.48 by 150k steps in two runs and then fell (0.18-0.24 by 230-300k), and
# annealed to zero over 200k it never rose (0.24); its clip fraction stayed under 1% and rollout returns
# wandered without a trend, a random walk with a weak drift. So it runs at lr 3e-6 for 900k steps; it held
# 0.34-0.40 to 540k and then fell again (0.18-0.34), as the score did (0.66 -> 0.48). The
# held-out-seed check (held_out below, 200 episodes) keeps these choices honest.
_PUSHT = ["sim.num_envs=64", "train.rollout_steps=150", "policy.algo.minibatch_size=1600",
          "task.env_kwargs.reward=progress", "policy.algo.gamma=0.99"]
STAGE_OVERRIDES: dict[tuple[str, str], list[str]] = {
    ("can", "dppo"): [*_STABLE, "policy.algo.lr=1e-5"],
    ("can", "fpo"): [*_STABLE, "policy.algo.lr=3e-6"],
    ("pusht", "dppo"): [*_PUSHT, "policy.algo.lr=3e-5", "policy.actor.min_sampling_std=0.05"],
    ("pusht", "fpo"): [*_PUSHT, "policy.algo.update_epochs=5", "policy.algo.lr=3e-6", "policy.algo.trust_region=aspo"],
}


def dataset(task: str) -> Path:
    budget = BUDGETS[task]
    path = DATA / f"{task}-{budget['demos']}x{budget['noise']}.{budget['fmt']}"
    if not path.exists():
        stats = write_demonstrations(task, budget["demos"], path, noise=budget["noise"], seed=1000, fmt=budget["fmt"])
        path.with_suffix(".json").write_text(json.dumps(stats))
    return path


def run_expert(task: str) -> dict[str, Any]:
    cfg = load_run_config([f"task={task}"])
    env, expert = make_base_env(cfg.task), make_expert(task, BUDGETS[task]["noise"])  # the demonstrator
    started = time.perf_counter()
    records = run_episodes(env, lambda obs: expert.act(obs, env), eval_seeds(BUDGETS[task]["eval_episodes"]),
                           reset=expert.reset)
    env.close()
    return {**PROTOCOLS[task](records), "env_steps": 0, "wall_time": time.perf_counter() - started}


def run_bc(task: str, stage: str) -> dict[str, Any]:
    budget = BUDGETS[task]
    cfg = load_run_config([f"task={task}", f"policy={stage}", f"policy.algo.dataset={dataset(task)}",
                           f"policy.algo.num_steps={budget['bc_steps']}", "policy.algo.lr=3e-4",
                           f"train.eval_episodes={budget['eval_episodes']}", *TASK_OVERRIDES.get(task, []), *COMMON])
    started = time.perf_counter()
    _, result = train(cfg, RUNS / f"{task}-{stage}")
    return {**result, "env_steps": 0, "wall_time": time.perf_counter() - started}


def finetune_config(task: str, stage: str) -> RunConfig:
    policy, parent = FINETUNE[stage]
    budget = BUDGETS[task]
    return load_run_config([f"task={task}", f"policy={policy}", f"train.pretrained={RUNS / f'{task}-{parent}'}",
                            f"train.total_env_steps={budget['ft_steps'][stage]}", f"train.eval_every={budget['eval_every']}",
                            f"train.eval_episodes={budget['ft_eval_episodes']}", "train.checkpoint_every=5",
                            *TASK_OVERRIDES.get(task, []), *STAGE_OVERRIDES.get((task, stage), []), *COMMON])


def run_finetune(task: str, stage: str) -> dict[str, Any]:
    parent = FINETUNE[stage][1]
    if not (RUNS / f"{task}-{parent}" / "result.json").exists():
        raise SystemExit(f"{stage} on {task} needs the {parent} stage first")
    run_dir, cfg = RUNS / f"{task}-{stage}", finetune_config(task, stage)
    if not (run_dir / "checkpoints" / "LATEST").exists():
        train(cfg, run_dir)
    elif load_checkpoint(run_dir).env_steps < cfg.train.total_env_steps:  # killed, or a budget raised since
        resume(run_dir, cfg.train.total_env_steps)
    final = evaluate(load_policy(run_dir), cfg.task, cfg.policy, BUDGETS[task]["eval_episodes"])
    rows = eval_rows(task, stage)
    start = {k: float(v) for k, v in rows[0].items() if k in ("success_rate", "mean_max_reward", "episodes")}
    return {**final, "env_steps": int(float(rows[-1]["env_steps"])), "wall_time": float(rows[-1]["wall_time"]),
            "start": start, "held_out": held_out(task, stage)}


def eval_rows(task: str, stage: str) -> list[dict[str, str]]:
    """The in-run evaluations of a fine-tuning stage, in step order."""
    with open(RUNS / f"{task}-{stage}" / "eval.csv", newline="") as f:
        return list(csv.DictReader(f))


def held_out(task: str, stage: str) -> dict[str, dict[str, float]]:
    """The BC start and the fine-tuned policy on seeds no in-run evaluation has seen, both with the
    fine-tuning sampler: the in-run curve chose the settings, so the claim is checked elsewhere."""
    cfg, budget = finetune_config(task, stage), BUDGETS[task]
    start = load_checkpoint(cfg.train.pretrained)
    start.config.policy.actor = cfg.policy.actor  # the BC weights under the fine-tuning sampler (e.g. DPPO's std floor)
    return {name: evaluate(load_policy(ckpt), cfg.task, cfg.policy, budget["held_out_episodes"],
                           seed_base=HELD_OUT_SEED_BASE)
            for name, ckpt in (("start", start), ("final", load_checkpoint(RUNS / f"{task}-{stage}")))}


def run_stage(task: str, stage: str) -> None:
    path = RUNS / f"{task}-{stage}" / "result.json"
    if path.exists():
        print(f"{task} {stage}: cached")
        return
    result = (run_expert(task) if stage == "expert" else run_bc(task, stage) if stage.startswith("bc_")
              else run_finetune(task, stage))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, default=float))
    print(f"{task} {stage}: {result}")


def curve(task: str, stage: str, key: str) -> list[tuple[float, float]]:
    """A metric (success_rate, PushT's mean_max_reward) vs env steps while fine-tuning. Runs from before
    the trainer evaluated its pretrained start at step 0 begin at the BC stage's own evaluation."""
    points = [(float(r["env_steps"]), float(r[key])) for r in eval_rows(task, stage)]
    if points[0][0] > 0:
        parent = json.loads((RUNS / f"{task}-{FINETUNE[stage][1]}" / "result.json").read_text())
        points.insert(0, (0.0, parent[key]))
    return points


def report(tasks: list[str]) -> None:
    results = {t: {s: json.loads(p.read_text()) for s in STAGES if (p := RUNS / f"{t}-{s}" / "result.json").exists()}
               for t in tasks}
    (OUT / "benchmarks.json").write_text(json.dumps(results, indent=2, default=float))
    print("| task | method | success | PushT score | start (success / score) | env steps | wall time (s) |")
    print("|---|---|---|---|---|---|---|")
    for task, stages in results.items():
        for stage, r in stages.items():
            score = f"{r['mean_max_reward']:.3f}" if "mean_max_reward" in r else "-"
            start = r.get("start", {})
            start_text = " / ".join(f"{start[k]:.2f}" for k in ("success_rate", "mean_max_reward") if k in start) or "-"
            if "held_out" in r:
                start_text += "; held-out seeds ({final[episodes]:.0f} ep) {start[success_rate]:.2f} -> {final[success_rate]:.2f}".format(
                    **r["held_out"])
            print(f"| {task} | {stage} | {r['success_rate']:.2f} ({int(r['episodes'])} ep) | {score} | {start_text} | "
                  f"{int(r['env_steps'])} | {r['wall_time']:.0f} |")
    curves = {t: [s for s in FINETUNE if (RUNS / f"{t}-{s}" / "eval.csv").exists()] for t in tasks}
    curves = {t: c for t, c in curves.items() if c}
    if curves:
        fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.6), squeeze=False)
        for ax, (task, by_stage) in zip(axes[0], curves.items()):
            for stage in by_stage:
                line, = ax.plot(*zip(*curve(task, stage, "success_rate")), marker="o", label=f"BC+{stage.upper()} success")
                if task == "pusht":
                    ax.plot(*zip(*curve(task, stage, "mean_max_reward")), ls="--", color=line.get_color(),
                            label=f"BC+{stage.upper()} score")
            ax.set_title(task)
            ax.set_xlabel("fine-tuning env steps")
            ax.set_ylabel("success rate / PushT score")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(OUT / "benchmarks_finetune.png", dpi=100)
        plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(BUDGETS), choices=list(BUDGETS))
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--report", action="store_true", help="only aggregate the cached stages")
    args = parser.parse_args()
    RUNS.mkdir(parents=True, exist_ok=True)
    if not args.report:
        for task in args.tasks:
            for stage in args.stages:
                run_stage(task, stage)
    report(args.tasks)


if __name__ == "__main__":
    main()
