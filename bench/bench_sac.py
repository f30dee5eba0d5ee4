"""SAC: robopol beside Stable-Baselines3 on the same task, env steps and hyper-parameters (rl-zoo's
MuJoCo settings: policies/sac.yaml), over several training seeds, one core per run. Writes
bench/out/sac-<task file>.json and .png (sac-hopper_300k, sac-halfcheetah_300k, sac-hopper_sac_throughput).

    python bench/bench_sac.py --task halfcheetah_300k --policies sac_bf16 --seeds 0 1 2

The task file holds the env, env steps and evaluation episodes; each policy file (policies/sac.yaml,
sac_bf16.yaml) a robopol run's settings. Evaluation during training is switched off in every run.
Each run (implementation, training seed) writes bench/out/sac-<task file>/<run>.json; a later call with
--reuse keeps the runs already there and runs only the missing ones, so seeds can be run in batches
(--only sb3 / --only robopol picks one side). The summary pools every requested run.

Throughput is env steps over the wall time of training alone (no evaluation in any run); the final
return is deterministic (tanh of the mean) over the same 10 fixed evaluation seeds for every run; across
training seeds the table reports the mean +- std of those per-run means."""

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


def run_robopol(task: str, policy: str, seed: int) -> dict:
    torch.set_num_threads(1)
    run_dir = OUT / f"sac-{task}" / f"robopol-{policy}-seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = load_run_config([f"task={task}", f"policy={policy}", f"train.seed={seed}", "train.eval_every=0",
                           "train.video=false", "train.progress=false", "train.checkpoint_every=100",
                           f"train.run_dir={run_dir}"])
    episodes, autocast = cfg.train.eval_episodes, cfg.train.autocast
    start = time.perf_counter()
    train(cfg)
    rows = list(csv.DictReader(open(run_dir / "train.csv")))
    train_seconds = float(rows[-1]["wall_time"])
    final = evaluate(load_policy(run_dir), cfg.task, cfg.policy, episodes)
    curve = [(int(float(r["env_steps"])), float(r["episode_return"])) for r in rows if r.get("episode_return")]
    steps = int(float(rows[-1]["env_steps"]))
    return {"name": "robopol SAC" + (" (bf16 autocast)" if autocast == "bf16" else ""), "policy": policy, "seed": seed,
            "env_steps": steps, "train_seconds": train_seconds,
            "wall_seconds": time.perf_counter() - start, "steps_per_second": steps / train_seconds,
            "return_mean": final["return_mean"], "return_std": final["return_std"], "curve": curve}


def run_sb3(env_id: str, steps: int, seed: int, episodes: int) -> dict:
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
    return {"name": "SB3 SAC", "policy": "sb3", "seed": seed, "env_steps": steps, "train_seconds": train_seconds,
            "wall_seconds": time.perf_counter() - start, "steps_per_second": steps / train_seconds,
            "return_mean": float(np.mean(finals)), "return_std": float(np.std(finals)), "curve": curve}


def run_one(job: tuple) -> dict:
    """One (implementation, seed) run in its own process; its result is written before it returns."""
    kind, path, args = job
    result = run_sb3(*args) if kind == "sb3" else run_robopol(*args)
    path.write_text(json.dumps(result, indent=2))
    return result


def summarise(runs: list[dict]) -> list[dict]:
    """Per implementation: mean steps/s, and the mean +- std over training seeds of the final returns."""
    rows = []
    for name in sorted({r["name"] for r in runs}):
        mine = sorted((r for r in runs if r["name"] == name), key=lambda r: r["seed"])
        finals = [r["return_mean"] for r in mine]
        rows.append({"name": name, "seeds": [r["seed"] for r in mine], "finals": finals,
                     "return_mean": float(np.mean(finals)), "return_std": float(np.std(finals)),
                     "steps_per_second": float(np.mean([r["steps_per_second"] for r in mine]))})
    sb3 = next((r for r in rows if r["name"] == "SB3 SAC"), None)
    for r in rows:
        r["throughput_vs_sb3"] = r["steps_per_second"] / sb3["steps_per_second"] if sb3 else float("nan")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="hopper_300k", help="a tasks/ file with a Gymnasium env and the budget "
                                                                  "(hopper_300k, halfcheetah_300k)")
    parser.add_argument("--policies", nargs="+", default=["sac", "sac_bf16"],
                        help="robopol runs, one per policies/ file (sac: fp32, sac_bf16: bf16 matrix products)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="training seeds (default: the task file's)")
    parser.add_argument("--only", choices=("sb3", "robopol"), default=None, help="run one side only (the summary still "
                                                                                 "pools both sides' saved runs)")
    parser.add_argument("--reuse", action="store_true", help="keep the runs already saved and run only missing ones")
    parser.add_argument("--jobs", type=int, default=mp.cpu_count(), help="runs at once, one core each")
    args = parser.parse_args()
    cfg = load_run_config([f"task={args.task}", "policy=sac"])
    env_id, steps, episodes = cfg.task.env_id, cfg.train.total_env_steps, cfg.train.eval_episodes
    seeds = args.seeds if args.seeds is not None else [cfg.train.seed]
    runs_dir = OUT / f"sac-{args.task}"
    runs_dir.mkdir(parents=True, exist_ok=True)
    wanted = [("sb3", runs_dir / f"sb3-seed{seed}.json", (env_id, steps, seed, episodes)) for seed in seeds]
    wanted += [("robopol", runs_dir / f"robopol-{policy}-seed{seed}.json", (args.task, policy, seed))
               for policy in args.policies for seed in seeds]
    todo = [job for job in wanted if (args.only in (None, job[0])) and not (args.reuse and job[1].exists())]
    with mp.get_context("spawn").Pool(max(1, min(args.jobs, len(todo))), maxtasksperchild=1) as pool:
        pool.map(run_one, todo, chunksize=1)
    runs = [json.loads(path.read_text()) for _, path, _ in wanted if path.exists()]
    rows = summarise(runs)
    out = {"task": env_id, "task_file": args.task, "steps": steps, "training_seeds": seeds,
           "eval_seeds": [EVAL_SEED_BASE, EVAL_SEED_BASE + episodes - 1],
           "machine": f"{platform.machine()} {platform.processor() or ''} {mp.cpu_count()} cpus, torch {torch.__version__}, "
                      f"1 thread per run, {args.jobs} runs at once",
           "summary": rows, "runs": runs}
    (OUT / f"sac-{args.task}.json").write_text(json.dumps(out, indent=2))
    fig, ax = plt.subplots(figsize=(7, 4))
    colours = {row["name"]: f"C{i}" for i, row in enumerate(rows)}
    for r in runs:
        ax.plot(*zip(*r["curve"]), color=colours[r["name"]], alpha=0.7, lw=1)
    for row in rows:
        ax.plot([], [], color=colours[row["name"]], label=f"{row['name']}: {row['throughput_vs_sb3']:.2f}x SB3's steps/s, "
                f"final {row['return_mean']:.0f} +- {row['return_std']:.0f} ({len(row['seeds'])} seeds)")
    ax.set_xlabel("env steps")
    ax.set_ylabel("training episode return")
    ax.set_title(f"SAC on {env_id}, {steps} env steps, training seeds {', '.join(map(str, seeds))}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / f"sac-{args.task}.png", dpi=100)
    for row in rows:
        print(f"{row['name']:28s} {row['steps_per_second']:7.1f} steps/s ({row['throughput_vs_sb3']:.2f}x SB3)  "
              f"final {row['return_mean']:8.1f} +- {row['return_std']:.1f} over seeds {row['seeds']}: "
              f"{', '.join(f'{f:.0f}' for f in row['finals'])}")


if __name__ == "__main__":
    main()
