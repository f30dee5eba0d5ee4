"""Env steps per second of 1 vs 2 torchrun processes (gloo, one torch thread each) for PPO on Hopper-v5
(policies/ppo_scale_hopper.yaml) and DPPO fine-tuning on PushT (policies/dppo_scale_pusht.yaml).

Runs `torchrun --nproc_per_node N -m robopol train ...` alternately for N = 1 and 2 (interleaved, as the
machine may be shared), takes the mean steps_per_second of the iterations after the first from
train.csv (rank 0 logs all ranks' env steps over its iteration time), and records the load average beside
each run. Writes bench/out/scale/scale.json and scale.png; copy them to bench/results/.

    python bench/bench_scale.py [--repeats 3] [--workloads ppo_hopper dppo_pusht]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "scale"
TORCHRUN = Path(sys.executable).with_name("torchrun")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MUJOCO_GL": "osmesa"}
# name -> (overrides, env steps per process: None runs the YAML's total on every process count)
WORKLOADS = {"ppo_hopper": (["task=hopper", "policy=ppo_scale_hopper"], None),  # 16 iterations of 1, 8 of 2
             "dppo_pusht": (["task=pusht", "policy=dppo_scale_pusht"], 57600)}  # 3 iterations of each


def robopol(*args: str) -> None:
    print("$ robopol", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "robopol.cli", *args], check=True, cwd=ROOT, env=ENV,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pusht_bc() -> Path:
    """A short BC-diffusion PushT run with the fine-tuning recipe's network: DPPO needs a checkpoint to start from."""
    run, demos = OUT / "pusht-bc", OUT / "pusht.zarr"
    if not (run / "checkpoints").exists():
        robopol("demos", "pusht", "--n", "10", "--noise", "2.0", "--seed", "1000", "--format", "zarr", "--out", str(demos))
        robopol("pretrain", "task=pusht", "policy=bc_diffusion_pusht", f"policy.algo.dataset={demos}",
                "policy.algo.num_steps=200", "train.eval_episodes=1", "train.progress=false", f"train.run_dir={run}")
    return run


def run(procs: int, overrides: list[str], name: str, steps_per_process: int | None) -> dict[str, float]:
    run_dir = OUT / f"{name}-{procs}p-{len(list(OUT.glob(f'{name}-*')))}"
    load_before = os.getloadavg()[0]
    if steps_per_process:
        overrides = [*overrides, f"train.total_env_steps={procs * steps_per_process}"]
    cmd = [str(TORCHRUN), "--nproc_per_node", str(procs), "-m", "robopol", "train", *overrides, f"train.run_dir={run_dir}"]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, capture_output=True, env=ENV)
    rows = list(csv.DictReader((run_dir / "train.csv").read_text().splitlines()))[1:]
    rate = sum(float(r["steps_per_second"]) for r in rows) / len(rows)
    return {"processes": procs, "env_steps_per_second": rate, "iterations_timed": len(rows),
            "load_before": load_before, "load_after": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    summary = OUT / "scale.json"
    result = json.loads(summary.read_text()) if summary.exists() else {
        "machine": "2-vCPU VM, no GPU, torch 2.13 CPU, gloo, one torch thread per process", "workloads": {}}
    for name in args.workloads:
        overrides, steps_per_process = WORKLOADS[name]
        overrides = overrides + ([f"train.pretrained={pusht_bc()}"] if name == "dppo_pusht" else [])
        runs = [run(procs, overrides, name, steps_per_process) for _ in range(args.repeats) for procs in (1, 2)]
        mean = {str(p): sum(r["env_steps_per_second"] for r in runs if r["processes"] == p) / args.repeats for p in (1, 2)}
        result["workloads"][name] = {"overrides": overrides, "env_steps_per_process": steps_per_process, "runs": runs, "mean_env_steps_per_second": mean,
                                     "speedup_2_vs_1": mean["2"] / mean["1"]}
        summary.write_text(json.dumps(result, indent=2))
        print(name, {p: round(v) for p, v in mean.items()}, f"{mean['2'] / mean['1']:.2f}x", flush=True)
    plot(result, OUT / "scale.png")


def plot(result: dict, path: Path) -> None:
    """Per workload: each run's env steps/s for 1 and 2 processes, and the ideal 2x line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = result["workloads"]
    fig, axes = plt.subplots(1, len(workloads), figsize=(5 * len(workloads), 3.8), squeeze=False)
    for ax, (name, r) in zip(axes[0], workloads.items()):
        for procs in (1, 2):
            rates = [x["env_steps_per_second"] for x in r["runs"] if x["processes"] == procs]
            ax.scatter([procs] * len(rates), rates, label=f"{procs} process(es)")
        one = r["mean_env_steps_per_second"]["1"]
        ax.plot([1, 2], [one, 2 * one], "k--", label="ideal (2x)")
        ax.set_xticks([1, 2])
        ax.set_xlabel("processes")
        ax.set_ylabel("env steps / s")
        ax.set_title(f"{name}: {r['speedup_2_vs_1']:.2f}x")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
