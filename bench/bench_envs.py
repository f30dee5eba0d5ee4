"""Raw simulator throughput: env steps per second under random actions, no policy, no learner.
Writes bench/out/bench_envs.json.

    python bench/bench_envs.py --seconds 3

Entries: Hopper-v5 with 8 envs in Gymnasium's sync vector, in an EnvPool pool (1 and 2 worker
threads), each both bare and as robopol's training vector (make_vec_env: history and chunk of 1,
SAME_STEP resets); robopol's torch PointMass batched on the CPU. Actions are drawn before timing."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from robopol.config import PolicyConfig, TaskConfig
from robopol.sim.envpool_env import make_pool
from robopol.sim.factory import make_vec_env
from robopol.sim.point_mass import PointMass

OUT = Path(__file__).parent / "out"
NUM_ENVS = 8


def rate(step: Callable[[np.ndarray], object], actions: np.ndarray, seconds: float) -> float:
    """Env steps per second of `step` cycling through pre-drawn (T, num_envs, ...) actions."""
    step(actions[0])  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for a in actions:
            step(a)
        done += len(actions) * actions.shape[1]
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per entry")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (500, NUM_ENVS, 3)).astype(np.float32)
    chunked = actions[:, :, None]  # robopol's vectors take (num_envs, n_action_steps, act_dim)
    results: dict[str, float] = {}

    bare = gym.make_vec("Hopper-v5", NUM_ENVS, vectorization_mode="sync")
    bare.reset(seed=0)
    results["gymnasium_sync_bare"] = rate(bare.step, actions, args.seconds)
    for threads in (1, 2):
        pool = make_pool("Hopper-v5", {}, range(NUM_ENVS), threads)
        pool.reset()
        results[f"envpool_{threads}thread_bare"] = rate(lambda a, p=pool: p.step(a.astype(np.float64)), actions, args.seconds)
        pool.close()
    for backend, threads in (("gym", 0), ("envpool", 1), ("envpool", 2)):
        envs = make_vec_env(TaskConfig(backend=backend, env_id="Hopper-v5"), PolicyConfig(), NUM_ENVS,
                            envpool_threads=threads)
        envs.reset(seed=0)
        name = "robopol_gymnasium_sync" if backend == "gym" else f"robopol_envpool_{threads}thread"
        results[name] = rate(envs.step, chunked, args.seconds)
        envs.close()
    for n in (NUM_ENVS, 4096):
        env = PointMass(n)
        env.reset(seed=0)
        forces = torch.rand(50, n, 2) * 2 - 1
        results[f"torch_point_mass_{n}envs_cpu"] = rate(env.step, forces, args.seconds)

    import envpool

    record = {"env_steps_per_second": {k: round(v) for k, v in results.items()}, "num_envs": NUM_ENVS,
              "seconds_per_entry": args.seconds, "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
              "versions": {"gymnasium": gym.__version__, "envpool": envpool.__version__, "torch": torch.__version__}}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench_envs.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
