"""Hopper-v5: robopol PPO beside SB3 PPO (same envs, same env steps, same hyper-parameters), plus
robopol FPO and DPPO from scratch, in one run. Writes bench/out/hopper-<steps>k.json and .png.

    python bench/bench_hopper.py                                   # the table's @300k column
    python bench/bench_hopper.py --task hopper_1m --only robopol-fpo
    python bench/bench_hopper.py --throughput-rounds 3              # its env steps/s column

Every setting comes from the task file (tasks/hopper_300k.yaml, hopper_1m.yaml, hopper_throughput.yaml,
hopper_async.yaml) and the policy files as shipped, so `robopol train task=hopper_300k
policy=ppo` reproduces a row alone; SB3 reads the same env steps, envs, evaluation cadence, episodes and
seed from the task file.

Throughput excludes evaluation time for every entry; evaluation uses the same fixed seeds and
deterministic actions for all of them."""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import time
from pathlib import Path

import gymnasium as gym
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from robopol.config import load_run_config  # noqa: E402
from robopol.sim.factory import EVAL_SEED_BASE  # noqa: E402
from robopol.runner import train  # noqa: E402

OUT = Path(__file__).parent / "out"


def run_robopol(task: str, policy: str, label: str = "") -> dict:
    run_dir = OUT / f"hopper-robopol-{label or policy}"
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = load_run_config([f"task={task}", f"policy={policy}", "train.video=false", f"train.run_dir={run_dir}",
                           "train.checkpoint_every=1000", "train.progress=false"])
    start = time.perf_counter()
    train(cfg)
    wall = time.perf_counter() - start
    train_rows = list(csv.DictReader(open(run_dir / "train.csv")))
    eval_rows = list(csv.DictReader(open(run_dir / "eval.csv")))
    previous = [{"env_steps": 0}] + train_rows
    train_seconds = sum((float(r["env_steps"]) - float(p["env_steps"])) / float(r["steps_per_second"])
                        for p, r in zip(previous, train_rows))
    env_steps = int(float(train_rows[-1]["env_steps"]))
    return {"name": f"robopol-{label or policy}", "env_steps": env_steps, "train_seconds": train_seconds, "wall_seconds": wall,
            "steps_per_second": env_steps / train_seconds,
            "curve": [{"env_steps": int(float(r["env_steps"])), "wall_time": float(r["wall_time"]),
                       "return": float(r["return_mean"])} for r in eval_rows]}


def sb3_evaluate(model, vecnorm, episodes: int) -> float:
    returns = []
    for i in range(episodes):
        env = gym.make("Hopper-v5")
        obs, _ = env.reset(seed=EVAL_SEED_BASE + i)
        done, total = False, 0.0
        while not done:
            action, _ = model.predict(vecnorm.normalize_obs(obs[None]), deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action[0])
            total += reward
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def interleaved_throughput(rounds: int) -> dict:
    """Env steps/s of each entry, alternating short runs so a busy machine slows them all alike."""
    entries = {
        "robopol-ppo": lambda: run_robopol("hopper_throughput", "ppo"),
        "sb3-ppo": lambda: run_sb3(**sb3_settings("hopper_throughput")),
        "robopol-ppo-async": lambda: run_robopol("hopper_async", "ppo", "ppo-async"),
        "robopol-fpo": lambda: run_robopol("hopper_throughput", "fpo"),
        "robopol-dppo": lambda: run_robopol("hopper_throughput", "dppo"),
    }
    rates: dict[str, list[float]] = {name: [] for name in entries}
    for _ in range(rounds):
        for name, run in entries.items():
            rates[name].append(run()["steps_per_second"])
            print(name, f"{rates[name][-1]:.0f} steps/s", flush=True)
    median = {name: float(np.median(r)) for name, r in rates.items()}
    ratios = {"robopol_ppo_over_sb3_ppo": median["robopol-ppo"] / median["sb3-ppo"],
              "robopol_ppo_async_over_sb3_ppo": median["robopol-ppo-async"] / median["sb3-ppo"],
              "robopol_fpo_over_robopol_ppo": median["robopol-fpo"] / median["robopol-ppo"],
              "robopol_dppo_over_robopol_ppo": median["robopol-dppo"] / median["robopol-ppo"]}
    steps = load_run_config(["task=hopper_throughput"]).train.total_env_steps
    return {"rounds": rounds, "steps_per_run": steps, "steps_per_second": rates, "median": median, "ratios": ratios}


def sb3_settings(task: str) -> dict[str, int]:
    """SB3's env steps, envs, number of evaluations, episodes and seed: robopol PPO's on tasks/<task>.yaml,
    evaluated as many times, spread evenly over the run."""
    cfg = load_run_config([f"task={task}", "policy=ppo"])
    iterations = cfg.train.total_env_steps // (cfg.sim.num_envs * cfg.train.rollout_steps)
    evals = iterations // cfg.train.eval_every if cfg.train.eval_every else 0
    return {"steps": cfg.train.total_env_steps, "num_envs": cfg.sim.num_envs, "evals": evals,
            "episodes": cfg.train.eval_episodes, "seed": cfg.train.seed}


def run_sb3(steps: int, num_envs: int, evals: int, episodes: int, seed: int) -> dict:
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    venv = VecNormalize(make_vec_env("Hopper-v5", n_envs=num_envs, seed=seed), gamma=0.99)
    model = PPO("MlpPolicy", venv, n_steps=256, batch_size=64, n_epochs=10, learning_rate=lambda f: 3e-4 * f,
                gamma=0.99, gae_lambda=0.95, clip_range=0.2, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5,
                device="cpu", seed=seed, verbose=0)
    every = steps // evals if evals else steps + 1
    curve: list[dict] = []
    clock = {"eval": 0.0, "start": time.perf_counter(), "next": every}

    class Evaluate(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps >= clock["next"]:
                t = time.perf_counter()
                ret = sb3_evaluate(model, venv, episodes)
                clock["eval"] += time.perf_counter() - t
                curve.append({"env_steps": self.num_timesteps, "wall_time": t - clock["start"], "return": ret})
                clock["next"] += every
            return True

    model.learn(total_timesteps=steps, callback=Evaluate())
    wall = time.perf_counter() - clock["start"]
    if evals and (not curve or curve[-1]["env_steps"] < model.num_timesteps):
        t = time.perf_counter()
        curve.append({"env_steps": model.num_timesteps, "wall_time": t - clock["start"], "return": sb3_evaluate(model, venv, episodes)})
        clock["eval"] += time.perf_counter() - t
    train_seconds = wall - clock["eval"]
    return {"name": "sb3-ppo", "env_steps": int(model.num_timesteps), "train_seconds": train_seconds, "wall_seconds": wall,
            "steps_per_second": model.num_timesteps / train_seconds, "curve": curve}


def plot(results: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in results:
        xs = [p["env_steps"] for p in r["curve"]]
        ws = [p["wall_time"] for p in r["curve"]]
        ys = [p["return"] for p in r["curve"]]
        axes[0].plot(xs, ys, marker="o", label=r["name"])
        axes[1].plot(ws, ys, marker="o", label=r["name"])
    for ax, xlabel in zip(axes, ("env steps", "wall time [s]")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("evaluation return (10 fixed seeds)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Hopper-v5 on {platform.node() or 'this machine'} ({torch.get_num_threads()} torch thread)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="hopper_300k", help="tasks/<TASK>.yaml: env steps, envs, evaluation, seed")
    parser.add_argument("--only", default="robopol-ppo,sb3-ppo,robopol-fpo,robopol-dppo")
    parser.add_argument("--throughput-rounds", type=int, default=0,
                        help="instead of learning curves, measure steps/s in this many interleaved rounds")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    if args.throughput_rounds:
        report = interleaved_throughput(args.throughput_rounds)
        report["machine"] = {"node": platform.node(), "processor": platform.processor(), "cores": os.cpu_count()}
        (OUT / "hopper-throughput.json").write_text(json.dumps(report, indent=2))
        print(json.dumps({"median": report["median"], "ratios": report["ratios"]}, indent=2))
        return
    results = []
    for name in args.only.split(","):
        if name == "sb3-ppo":
            results.append(run_sb3(**sb3_settings(args.task)))
        else:
            results.append(run_robopol(args.task, name.removeprefix("robopol-")))
        print(json.dumps({k: v for k, v in results[-1].items() if k != "curve"}), flush=True)
    by_name = {r["name"]: r for r in results}
    ratios = {}
    if "robopol-ppo" in by_name and "sb3-ppo" in by_name:
        ratios["robopol_ppo_over_sb3_ppo"] = by_name["robopol-ppo"]["steps_per_second"] / by_name["sb3-ppo"]["steps_per_second"]
    for name in ("robopol-fpo", "robopol-dppo"):
        if name in by_name and "robopol-ppo" in by_name:
            ratios[f"{name}_over_robopol_ppo"] = by_name[name]["steps_per_second"] / by_name["robopol-ppo"]["steps_per_second"]
    report = {"machine": {"node": platform.node(), "processor": platform.processor(), "cpus": torch.get_num_threads()},
              "args": vars(args), "results": results, "ratios": ratios}
    stem = f"hopper-{load_run_config([f'task={args.task}']).train.total_env_steps // 1000}k"
    (OUT / f"{stem}.json").write_text(json.dumps(report, indent=2))
    plot(results, OUT / f"{stem}.png")
    print("| run | env steps | env steps/s | final return |")
    print("|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {r['env_steps']} | {r['steps_per_second']:.0f} | {r['curve'][-1]['return']:.0f} |")
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
