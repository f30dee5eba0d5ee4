"""GPC bench: per task two moderate BC parents trained on different demonstrations (Lift: a diffusion
and a flow parent, the cross-family pair, policies/gpc_lift_{diffusion,flow}.yaml; PushT: two flow
parents with one recipe, on demonstrations with 2 px and 8 px of expert noise,
policies/gpc_pusht_flow_{a,b}.yaml), their composition's weights chosen by `robopol compose
--search-episodes` on the evaluation seeds, then composed vs each parent on held-out seeds. Every step is a CLI command (printed as it runs); outputs
under bench/out/gpc, the summary in bench/results/gpc.json and gpc.png.

    python bench/bench_gpc.py [--tasks lift pusht] [--search-episodes lift=10 pusht=200] [--held-out lift=200 pusht=200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robopol.checkpoint import load_checkpoint, load_policy
from robopol.evaluate import evaluate
from robopol.sim.factory import EVAL_SEED_BASE

HELD_OUT_SEED_BASE = EVAL_SEED_BASE + 1_000_000  # as bench/bench_benchmarks.py: disjoint from the search's seeds
OUT = ROOT / "bench" / "out" / "gpc"
# task -> {parent label: (recipe, `robopol demos` arguments, run folder)}
PARENTS = {
    "lift": {"A: diffusion, demos seed 1000": ("gpc_lift_diffusion", ["--n", "8", "--noise", "0.15", "--seed", "1000"], "lift-a"),
             "B: flow, demos seed 2000": ("gpc_lift_flow", ["--n", "8", "--noise", "0.15", "--seed", "2000"], "lift-b")},
    "pusht": {"A: flow, demos 2 px, seed 1000": ("gpc_pusht_flow_a", ["--n", "200", "--noise", "2.0", "--seed", "1000"], "pusht-a"),
              "B: flow, demos 8 px, seed 2000": ("gpc_pusht_flow_b", ["--n", "200", "--noise", "8.0", "--seed", "2000"], "pusht-d")},
}


def robopol(*args: str) -> None:
    cmd = [sys.executable, "-m", "robopol.cli", *args]
    print("$ robopol", " ".join(args), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def per_task(items: list[str]) -> dict[str, int]:
    return {k: int(v) for k, v in (item.split("=") for item in items)}


def held_out_metrics(policy, ckpt, episodes: int) -> dict:
    """Success, mean return and (PushT) score on held-out seeds (evaluate runs them in blocks that bound memory)."""
    metrics = evaluate(policy, ckpt.config.task, ckpt.config.policy, episodes, seed_base=HELD_OUT_SEED_BASE)
    keys = [key for key in ("success_rate", "return_mean", "length_mean", "mean_max_reward", "episodes") if key in metrics]
    return {key: metrics[key] for key in keys} | {"eval_noise": ckpt.config.policy.eval_noise}


def run_task(task: str, search_episodes: int, held_out_episodes: int) -> dict:
    runs = {}
    for label, (recipe, demos_args, run) in PARENTS[task].items():
        demos = OUT / f"{run}.{'zarr' if task == 'pusht' else 'hdf5'}"
        if not demos.exists():
            robopol("demos", task, *demos_args, "--out", str(demos))
        if not (OUT / run / "checkpoints").exists():
            robopol("pretrain", f"task={task}", f"policy={recipe}", f"policy.algo.dataset={demos}", f"train.run_dir={OUT / run}")
        runs[label] = OUT / run
    composed = OUT / f"{task}-ab"
    search_s = None  # a search an earlier run of this script made is reused
    if not composed.exists():
        start = time.time()
        robopol("compose", *map(str, runs.values()), "--search-episodes", str(search_episodes), "--out", str(composed))
        search_s = round(time.time() - start, 1)
    search = json.loads(Path(f"{composed}-search.json").read_text())
    held_out = {}
    for label, path in {**runs, f"composed, weights {search['chosen']}": composed}.items():
        ckpt = load_checkpoint(path)
        t0 = time.time()
        held_out[label] = {**held_out_metrics(load_policy(ckpt), ckpt, held_out_episodes), "seconds": round(time.time() - t0, 1)}
        print(task, label, held_out[label]["success_rate"], flush=True)
    return {"search": search, "search_seconds": search_s,
            "held_out_seeds": [HELD_OUT_SEED_BASE, HELD_OUT_SEED_BASE + held_out_episodes - 1], "held_out": held_out}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", nargs="+", default=list(PARENTS), choices=list(PARENTS))
    parser.add_argument("--search-episodes", nargs="+", default=["lift=10", "pusht=200"])
    parser.add_argument("--held-out", nargs="+", default=["lift=200", "pusht=200"])
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    summary = OUT / "gpc.json"
    result = json.loads(summary.read_text()) if summary.exists() else {
        "machine": "2-vCPU VM, no GPU, torch 2.13 CPU, one torch thread", "tasks": {}}
    search, held = per_task(args.search_episodes), per_task(args.held_out)
    for task in args.tasks:
        result["tasks"][task] = run_task(task, search[task], held[task])
        summary.write_text(json.dumps(result, indent=2))
    plot(result, OUT / "gpc.png")
    results = ROOT / "bench" / "results"
    for name in ("gpc.json", "gpc.png"):
        shutil.copy(OUT / name, results / name)


def plot(result: dict, path: Path) -> None:
    """Per task: the weight search (left) and held-out success of each parent and the composition (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = result["tasks"]
    fig, axes = plt.subplots(len(tasks), 2, figsize=(10, 3.8 * len(tasks)), squeeze=False)
    for (left, right), (task, r) in zip(axes, tasks.items()):
        scores = r["search"]["scores"]
        left.plot([s["weights"][0] for s in scores], [s["success_rate"] for s in scores], "o-")
        left.set_xlabel("weight of parent A; B gets 1 - w")
        left.set_ylabel(f"success, {r['search']['episodes']} evaluation seeds")
        left.set_title(f"{task}: weight search")
        labels = list(r["held_out"])
        right.bar(range(len(labels)), [r["held_out"][k]["success_rate"] for k in labels])
        right.set_xticks(range(len(labels)), [k.split(",")[0] for k in labels])
        right.set_ylabel(f"success, {r['held_out_seeds'][1] - r['held_out_seeds'][0] + 1} held-out seeds")
        right.set_title(f"{task}: held out")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    main()
