"""Benchmark: task x {scripted expert, BC-diffusion, BC-flow, BC+DPPO, BC+FPO} on PushT and robomimic.

Per task: write noisy scripted-expert demonstrations, behaviour-clone a diffusion and a flow policy,
fine-tune them on the sparse task reward with DPPO and FPO, and evaluate everything with the task's
protocol on the same fixed seeds. Each stage selects its recipe, policies/<recipe>_<task>.yaml (e.g.
policies/dppo_finetune_pusht.yaml), which holds every training setting and the CLI commands that
reproduce its README cell without this script. A fine-tuning stage is evaluated at step 0 (its BC start
under the fine-tuning sampler) and along the way, and its start and result are checked again on held-out
seeds.
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
# Every training setting lives in policies/<recipe>_<task>.yaml (e.g. policies/dppo_finetune_pusht.yaml,
# whose header says which README cell it produces and how to reproduce it with the CLI alone); this
# script selects those files and adds only plumbing: no video, no progress bar, frequent checkpoints
# so a killed stage resumes.
PLUMBING = ["train.video=false", "train.progress=false"]
# Demonstrations (`robopol demos TASK --n N --noise NOISE --seed 1000`): Lift few and noisy so BC starts
# below the expert; Can and Square 100 near-clean ones (40 Can demos at noise 0.2 gave BC 0.05, a start
# RL on a sparse reward cannot lift). The scripted expert column runs the demonstrator at the same noise.
DEMOS: dict[str, dict[str, Any]] = {
    "pusht": {"n": 200, "noise": 2.0, "fmt": "zarr"},
    "lift": {"n": 40, "noise": 0.15, "fmt": "hdf5"},
    "can": {"n": 100, "noise": 0.05, "fmt": "hdf5"},
    "square": {"n": 100, "noise": 0.05, "fmt": "hdf5"},
}
DEMO_SEED = 1000
HELD_OUT_EPISODES = {"pusht": 200, "lift": 50, "can": 50, "square": 50}


def dataset(task: str) -> Path:
    demos = DEMOS[task]
    path = DATA / f"{task}-{demos['n']}x{demos['noise']}.{demos['fmt']}"
    if not path.exists():
        stats = write_demonstrations(task, demos["n"], path, noise=demos["noise"], seed=DEMO_SEED, fmt=demos["fmt"])
        path.with_suffix(".json").write_text(json.dumps(stats))
    return path


def protocol_episodes(task: str) -> int:
    """Episodes of the task's evaluation protocol (train.eval_episodes in tasks/<task>.yaml): the table's
    expert and fine-tuned numbers use it, whatever a fine-tuning recipe evaluates along the way."""
    return load_run_config([f"task={task}"]).train.eval_episodes


def run_expert(task: str) -> dict[str, Any]:
    cfg = load_run_config([f"task={task}"])
    env, expert = make_base_env(cfg.task), make_expert(task, DEMOS[task]["noise"])  # the demonstrator
    started = time.perf_counter()
    records = run_episodes(env, lambda obs: expert.act(obs, env), eval_seeds(protocol_episodes(task)),
                           reset=expert.reset)
    env.close()
    return {**PROTOCOLS[task](records), "env_steps": 0, "wall_time": time.perf_counter() - started}


def run_bc(task: str, stage: str) -> dict[str, Any]:
    cfg = load_run_config([f"task={task}", f"policy={stage}_{task}", f"policy.algo.dataset={dataset(task)}", *PLUMBING])
    started = time.perf_counter()
    _, result = train(cfg, RUNS / f"{task}-{stage}")
    return {**result, "env_steps": 0, "wall_time": time.perf_counter() - started}


def finetune_config(task: str, stage: str) -> RunConfig:
    policy, parent = FINETUNE[stage]
    return load_run_config([f"task={task}", f"policy={policy}_{task}", f"train.pretrained={RUNS / f'{task}-{parent}'}",
                            "train.checkpoint_every=5", *PLUMBING])


def run_finetune(task: str, stage: str) -> dict[str, Any]:
    parent = FINETUNE[stage][1]
    if not (RUNS / f"{task}-{parent}" / "result.json").exists():
        raise SystemExit(f"{stage} on {task} needs the {parent} stage first")
    run_dir, cfg = RUNS / f"{task}-{stage}", finetune_config(task, stage)
    if not (run_dir / "checkpoints" / "LATEST").exists():
        train(cfg, run_dir)
    elif load_checkpoint(run_dir).env_steps < cfg.train.total_env_steps:  # killed, or a budget raised since
        resume(run_dir, cfg.train.total_env_steps)
    final = evaluate(load_policy(run_dir), cfg.task, cfg.policy, protocol_episodes(task))
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
    cfg = finetune_config(task, stage)
    start = load_checkpoint(cfg.train.pretrained)
    start.config.policy.actor = cfg.policy.actor  # the BC weights under the fine-tuning sampler (e.g. DPPO's std floor)
    return {name: evaluate(load_policy(ckpt), cfg.task, cfg.policy, HELD_OUT_EPISODES[task],
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
    parser.add_argument("--tasks", nargs="+", default=list(DEMOS), choices=list(DEMOS))
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
