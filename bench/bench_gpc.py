"""GPC bench: two moderate Lift parents of different families trained on different demonstrations
(policies/gpc_lift_diffusion.yaml, policies/gpc_lift_flow.yaml), their composition's weights chosen by
`robopol compose --search-episodes` on the evaluation seeds, then composed vs each parent on held-out
seeds. Every step is a CLI command (printed as it runs); outputs under bench/out/gpc, the summary in
bench/results/gpc.json and gpc.png.

    python bench/bench_gpc.py [--search-episodes 10] [--held-out 50]
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
PARENTS = {"A: diffusion, demos seed 1000": ("gpc_lift_diffusion", 1000, "lift-a"),
           "B: flow, demos seed 2000": ("gpc_lift_flow", 2000, "lift-b")}


def robopol(*args: str) -> None:
    cmd = [sys.executable, "-m", "robopol.cli", *args]
    print("$ robopol", " ".join(args), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--search-episodes", type=int, default=10)
    parser.add_argument("--held-out", type=int, default=50)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    runs = {}
    for label, (recipe, seed, run) in PARENTS.items():
        demos = OUT / f"lift_gpc_{run[-1]}.hdf5"
        if not demos.exists():
            robopol("demos", "lift", "--n", "8", "--noise", "0.15", "--seed", str(seed), "--out", str(demos))
        if not (OUT / run / "checkpoints").exists():
            robopol("pretrain", "task=lift", f"policy={recipe}", f"policy.algo.dataset={demos}", f"train.run_dir={OUT / run}")
        runs[label] = OUT / run
    composed = OUT / "lift-ab"
    start = time.time()
    robopol("compose", *map(str, runs.values()), "--search-episodes", str(args.search_episodes), "--out", str(composed))
    search_s = time.time() - start
    search = json.loads(Path(f"{composed}-search.json").read_text())
    held_out = {}
    for label, path in {**runs, f"composed, weights {search['chosen']}": composed}.items():
        ckpt = load_checkpoint(path)
        t0 = time.time()
        held_out[label] = {**evaluate(load_policy(ckpt), ckpt.config.task, ckpt.config.policy, args.held_out,
                                      seed_base=HELD_OUT_SEED_BASE), "seconds": round(time.time() - t0, 1)}
        print(label, held_out[label]["success_rate"], flush=True)
    result = {"task": "lift", "machine": "2-vCPU VM, no GPU, torch 2.13 CPU, one torch thread",
              "search": search, "search_seconds": round(search_s, 1),
              "held_out_seeds": [HELD_OUT_SEED_BASE, HELD_OUT_SEED_BASE + args.held_out - 1], "held_out": held_out}
    (OUT / "gpc.json").write_text(json.dumps(result, indent=2))
    plot(result, OUT / "gpc.png")
    results = ROOT / "bench" / "results"
    for name in ("gpc.json", "gpc.png"):
        shutil.copy(OUT / name, results / name)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    scores = result["search"]["scores"]
    left.plot([s["weights"][0] for s in scores], [s["success_rate"] for s in scores], "o-")
    left.set_xlabel("weight of parent A (diffusion); B gets 1 - w")
    left.set_ylabel(f"success, {result['search']['episodes']} evaluation seeds")
    left.set_title("weight search (Lift)")
    labels = list(result["held_out"])
    right.bar(range(len(labels)), [result["held_out"][k]["success_rate"] for k in labels])
    right.set_xticks(range(len(labels)), [k.split(",")[0] for k in labels])
    right.set_ylabel(f"success, {len(range(*result['held_out_seeds'])) + 1} held-out seeds")
    right.set_title("held out")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    main()
