"""SAC: robopol beside Stable-Baselines3 on the same task, env steps and hyper-parameters (rl-zoo's
MuJoCo settings: policies/sac.yaml), the runs side by side on one core each. Writes
bench/out/sac-<task file>.json and .png (sac-hopper_300k, sac-halfcheetah_300k, sac-hopper_sac_throughput).

    python bench/bench_sac.py --task hopper_300k      # or halfcheetah_300k; --policies sac sac_bf16

The task file holds the env, env steps, seed and evaluation episodes; each policy file (policies/sac.yaml,
sac_bf16.yaml) a robopol run's settings. Evaluation during training is switched off in every run.

Throughput is env steps over the wall time of training alone (no evaluation in either run); the
final return is deterministic (tanh of the mean) over the same 10 fixed evaluation seeds for both."""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import platform
import shutil
import time
from pathlib import Path

import gymnasium as gym
import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from robopol.checkpoint import load_policy  # noqa: E402
from robopol.config import load_run_config  # noqa: E402
from robopol.evaluate import evaluate  # noqa: E402
from robopol.runner import train  # noqa: E402
from robopol.sim.factory import EVAL_SEED_BASE  # noqa: E402

OUT = Path(__file__).parent / "out"


def run_robopol(task: str, policy: str, queue: mp.Queue) -> None:
    torch.set_num_threads(1)
    run_dir = OUT / f"sac-{task}-robopol-{policy}"
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = load_run_config([f"task={task}", f"policy={policy}", "train.eval_every=0", "train.video=false",
                           "train.progress=false", "train.checkpoint_every=100", f"train.run_dir={run_dir}"])
    episodes, autocast = cfg.train.eval_episodes, cfg.train.autocast
    start = time.perf_counter()
    train(cfg)
    rows = list(csv.DictReader(open(run_dir / "train.csv")))
    train_seconds = float(rows[-1]["wall_time"])
    final = evaluate(load_policy(run_dir), cfg.task, cfg.policy, episodes)
    curve = [(int(float(r["env_steps"])), float(r["episode_return"])) for r in rows if r.get("episode_return")]
    queue.put({"name": "robopol SAC" + (" (bf16 autocast)" if autocast == "bf16" else ""), "policy": policy, "env_steps": int(float(rows[-1]["env_steps"])), "train_seconds": train_seconds,
               "wall_seconds": time.perf_counter() - start, "steps_per_second": int(float(rows[-1]["env_steps"])) / train_seconds,
               "return_mean": final["return_mean"], "return_std": final["return_std"], "curve": curve})


def run_sb3(env_id: str, steps: int, seed: int, episodes: int, queue: mp.Queue) -> None:
    from stable_baselines3 import SAC
    from stable_baselines3.common.monitor import Monitor

    torch.set_num_threads(1)
    env = Monitor(gym.make(env_id))
    model = SAC("MlpPolicy", env, learning_starts=10_000, seed=seed, device="cpu", verbose=0)  # rl-zoo's Hopper/HalfCheetah
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    train_seconds = time.perf_counter() - start
    lengths, returns = np.cumsum(env.get_episode_lengths()), env.get_episode_rewards()
    curve = [(int(s), float(np.mean(returns[max(0, i - 9):i + 1]))) for i, s in enumerate(lengths)][::10]
    finals = []
    for i in range(episodes):
        ev = gym.make(env_id)
        obs, _ = ev.reset(seed=EVAL_SEED_BASE + i)
        done, total = False, 0.0
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = ev.step(action)
            total += float(reward)
            done = terminated or truncated
        finals.append(total)
    queue.put({"name": "SB3 SAC", "env_steps": steps, "train_seconds": train_seconds,
               "wall_seconds": time.perf_counter() - start, "steps_per_second": steps / train_seconds,
               "return_mean": float(np.mean(finals)), "return_std": float(np.std(finals)), "curve": curve})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="hopper_300k", help="a tasks/ file with a Gymnasium env and the budget "
                                                                  "(hopper_300k, halfcheetah_300k)")
    parser.add_argument("--policies", nargs="+", default=["sac", "sac_bf16"],
                        help="robopol runs, one per policies/ file (sac: fp32, sac_bf16: bf16 matrix products)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    cfg = load_run_config([f"task={args.task}", "policy=sac"])
    env_id, steps, seed, episodes = cfg.task.env_id, cfg.train.total_env_steps, cfg.train.seed, cfg.train.eval_episodes
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=run_robopol, args=(args.task, policy, queue)) for policy in args.policies]
    procs.append(ctx.Process(target=run_sb3, args=(env_id, steps, seed, episodes, queue)))
    for p in procs:
        p.start()
    results = sorted((queue.get() for _ in procs), key=lambda r: r["name"])
    for p in procs:
        p.join()
    sb3 = next(r for r in results if r["name"] == "SB3 SAC")
    for r in results:
        r["throughput_vs_sb3"] = r["steps_per_second"] / sb3["steps_per_second"]
    out = {"task": env_id, "task_file": args.task, "steps": steps, "seed": seed,
           "eval_seeds": [EVAL_SEED_BASE, EVAL_SEED_BASE + episodes - 1],
           "machine": f"{platform.machine()} {platform.processor() or ''} {mp.cpu_count()} cpus, torch {torch.__version__}, 1 thread each",
           "results": results}
    (OUT / f"sac-{args.task}.json").write_text(json.dumps(out, indent=2))
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        ax.plot(*zip(*r["curve"]), label=f"{r['name']}: {r['throughput_vs_sb3']:.2f}x SB3's steps/s, final {r['return_mean']:.0f}")
    ax.set_xlabel("env steps")
    ax.set_ylabel("training episode return")
    ax.set_title(f"SAC on {env_id}, {steps} env steps, seed {seed}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / f"sac-{args.task}.png", dpi=100)
    for r in results:
        print(f"{r['name']:28s} {r['steps_per_second']:7.1f} steps/s ({r['throughput_vs_sb3']:.2f}x SB3)  "
              f"final {r['return_mean']:8.1f} +- {r['return_std']:.1f}")


if __name__ == "__main__":
    main()
