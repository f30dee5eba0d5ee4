"""Env steps per second of 1 vs 2 torchrun processes (gloo, one torch thread each) for PPO on Hopper-v5.

Runs `torchrun --nproc_per_node N -m robopol train ...` alternately for N = 1 and 2 (interleaved, as the
machine is shared), reads the mean steps_per_second of the iterations after the first from train.csv,
and records the load average beside each run. Writes bench/out/scale.json; copy it to bench/results/."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
TORCHRUN = Path(sys.executable).with_name("torchrun")
PPO_HOPPER = ["task=hopper", "policy=ppo", "sim.num_envs=8", "train.rollout_steps=128", "train.total_env_steps=8192",
              "train.eval_every=0", "train.eval_episodes=1", "train.video=false", "train.progress=false",
              "train.checkpoint_every=1000"]


def run(procs: int, overrides: list[str], name: str) -> dict[str, float]:
    run_dir = OUT / f"{name}-{procs}p-{os.getpid()}-{len(list(OUT.glob('*')))}"
    load_before = os.getloadavg()[0]
    subprocess.run(["nice", "-n", "5", str(TORCHRUN), "--nproc_per_node", str(procs), "-m", "robopol", "train",
                    *overrides, f"train.run_dir={run_dir}"], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    rows = list(csv.DictReader((run_dir / "train.csv").read_text().splitlines()))[1:]
    rate = sum(float(r["steps_per_second"]) for r in rows) / len(rows)
    return {"processes": procs, "env_steps_per_second": rate, "load_before": load_before,
            "load_after": os.getloadavg()[0]}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    results = [run(procs, PPO_HOPPER, "ppo_hopper") for _ in range(repeats) for procs in (1, 2)]
    (OUT / "scale.json").write_text(json.dumps({"ppo_hopper": {"overrides": PPO_HOPPER, "runs": results}}, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
