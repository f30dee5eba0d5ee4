"""Hopper-v5: robopol PPO beside SB3 PPO (same env steps, same hyper-parameters), robopol PPO on
EnvPool's batched Hopper-v5 (task.backend=envpool), and robopol FPO and DPPO from scratch, in one run.
Writes bench/out/hopper-300k.json and .png (hopper-1m.* with --budget hopper_1m).

    python bench/bench_hopper.py                       # learning curves and throughput of every entry
    python bench/bench_hopper.py --throughput-rounds 3 # interleaved short runs (tasks/hopper_throughput.yaml)
    python bench/bench_hopper.py --budget hopper_1m --only sb3-ppo,robopol-ppo-envpool-compiled
                                                       # the same entries at tasks/hopper_1m.yaml's budget
    python bench/bench_hopper.py --only sb3-ppo,robopol-ppo-envpool-compiled --seeds 1,2,3
                                                       # returns over training seeds (hopper-300k-seeds.*)

Every setting comes from the config files each entry names (tasks/hopper_300k*.yaml, hopper_100k.yaml,
policies/ppo*.yaml, fpo.yaml, dppo.yaml); SB3 PPO reads its env steps, envs, evaluation cadence,
episodes, seed and hyper-parameters from tasks/hopper_300k.yaml + policies/ppo.yaml.

Throughput excludes evaluation time for every entry; evaluation uses the same fixed seeds and
deterministic actions for all of them. For robopol entries the time inside the simulator is the
time spent in the vector env's step (MuJoCo plus Gymnasium's or EnvPool's own per-step work), as a
fraction of the training time."""

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

# entry -> (task, policy): the files that hold every setting of the entry's README row.
ROBOPOL = {"robopol-ppo": ("hopper_300k", "ppo"), "robopol-ppo-compiled": ("hopper_300k", "ppo_compiled"),
           "robopol-ppo-envpool": ("hopper_300k_envpool", "ppo"),
           "robopol-ppo-envpool-compiled": ("hopper_300k_envpool", "ppo_compiled"),
           "robopol-fpo": ("hopper_100k", "fpo"), "robopol-dppo": ("hopper_100k", "dppo"),
           "robopol-fpo-compiled": ("hopper_100k", "fpo_compiled"), "robopol-dppo-compiled": ("hopper_100k", "dppo_compiled")}
SB3_TASK = ("hopper_300k", "ppo")
THROUGHPUT_TASK = "hopper_throughput"  # its budget, evaluation and seed replace each entry's in --throughput-rounds


def budget_overrides(task: str) -> tuple[str, ...]:
    """The env steps and evaluation settings of a task file (tasks/hopper_throughput.yaml, hopper_1m.yaml),
    applied to any entry, SB3's included."""
    train = load_run_config([f"task={task}"]).train
    return (f"train.total_env_steps={train.total_env_steps}", f"train.eval_every={train.eval_every}",
            f"train.eval_episodes={train.eval_episodes}")


class SimClock:
    """Times every vector-env step of the robopol runs while installed (wraps make_vec_env): Gymnasium's
    `step`, or EnvPool's `step_chunks`, the one the training loop calls."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> "SimClock":
        import robopol.loops.env_batch as env_batch

        self.module, self.make = env_batch, env_batch.make_vec_env
        clock = self

        def make(*args, **kwargs):
            envs = clock.make(*args, **kwargs)
            name = "step_chunks" if hasattr(envs, "step_chunks") else "step"  # what the loop calls (EnvPool: arrays)
            step = getattr(envs, name)

            def timed_step(actions):
                start = time.perf_counter()
                try:
                    return step(actions)
                finally:
                    clock.seconds += time.perf_counter() - start

            setattr(envs, name, timed_step)
            return envs

        env_batch.make_vec_env = make
        return self

    def __exit__(self, *exc) -> None:
        self.module.make_vec_env = self.make


def run_robopol(name: str, extra: tuple[str, ...] = ()) -> dict:
    task, policy = ROBOPOL[name]
    run_dir = OUT / f"hopper-{name}"
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = load_run_config([f"task={task}", f"policy={policy}", "train.video=false", f"train.run_dir={run_dir}",
                           "train.checkpoint_every=1000", "train.progress=false", *extra])
    start = time.perf_counter()
    with SimClock() as sim:
        train(cfg)
    wall = time.perf_counter() - start
    train_rows = list(csv.DictReader(open(run_dir / "train.csv")))
    eval_rows = list(csv.DictReader(open(run_dir / "eval.csv")))
    iterations = [(float(r["env_steps"]) - float(p["env_steps"]), float(r["steps_per_second"]))
                  for p, r in zip([{"env_steps": 0}] + train_rows, train_rows)]  # (env steps, their rate) each
    train_seconds = sum(steps / rate for steps, rate in iterations)
    env_steps = int(float(train_rows[-1]["env_steps"]))
    later = iterations[3:]  # past the first iterations' compiles (and DPPO's critic warm-up)
    return {"name": name, "env_steps": env_steps, "train_seconds": train_seconds, "wall_seconds": wall,
            "steps_per_second": env_steps / train_seconds,
            "steady_steps_per_second": sum(steps for steps, _ in later) / sum(steps / rate for steps, rate in later),
            "sim_seconds": sim.seconds,
            "sim_fraction": sim.seconds / train_seconds,
            "curve": [{"env_steps": int(float(r["env_steps"])), "wall_time": float(r["wall_time"]),
                       "return": float(r["return_mean"]), "return_std": float(r["return_std"])} for r in eval_rows]}


def sb3_evaluate(model, vecnorm, episodes: int) -> tuple[float, float]:
    """Mean and std of the return over the fixed evaluation seeds."""
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
    return float(np.mean(returns)), float(np.std(returns))


def interleaved_throughput(rounds: int, names: list[str]) -> dict:
    """Env steps/s of each entry in `names`, alternating short runs so a busy machine slows them all alike."""
    extra = budget_overrides(THROUGHPUT_TASK)
    entries = {name: (lambda: run_sb3(extra)) if name == "sb3-ppo" else (lambda name=name: run_robopol(name, extra))
               for name in names}
    rates: dict[str, list[float]] = {name: [] for name in entries}
    steady: dict[str, list[float]] = {name: [] for name in entries if name != "sb3-ppo"}  # after 3 iterations
    sim: dict[str, list[float]] = {name: [] for name in steady}
    for _ in range(rounds):
        for name, run in entries.items():
            result = run()
            rates[name].append(result["steps_per_second"])
            if name in steady:
                steady[name].append(result["steady_steps_per_second"])
                sim[name].append(result["sim_fraction"])
            print(name, f"{rates[name][-1]:.0f} steps/s", f"(after 3 iterations {steady[name][-1]:.0f})" if name in steady
                  else "", flush=True)
    median = {name: float(np.median(r)) for name, r in rates.items()}
    median_steady = {name: float(np.median(r)) for name, r in steady.items()}
    return {"rounds": rounds, "settings": list(extra), "steps_per_second": rates, "median": median,
            "steady_steps_per_second": steady, "median_steady": median_steady,
            "sim_fraction": sim, "median_sim_fraction": {name: float(np.median(f)) for name, f in sim.items()},
            "ratios": ratios({name: {"steps_per_second": rate} for name, rate in median.items()}),
            "steady_ratios": ratios({name: {"steps_per_second": rate}
                                     for name, rate in {**median, **median_steady}.items()})}


def ratios(by_name: dict[str, dict]) -> dict[str, float]:
    """Robopol's PPO entries over SB3 PPO, and FPO / DPPO over robopol PPO on the same (Gymnasium) envs,
    eager over eager and compiled over compiled, in env steps/s."""
    out = {}
    def rate(name: str) -> float:
        return by_name[name]["steps_per_second"]

    for name in ("robopol-ppo", "robopol-ppo-compiled", "robopol-ppo-envpool", "robopol-ppo-envpool-compiled"):
        if name in by_name and "sb3-ppo" in by_name:
            out[f"{name}_over_sb3_ppo"] = rate(name) / rate("sb3-ppo")
    for name, ppo in (("robopol-fpo", "robopol-ppo"), ("robopol-dppo", "robopol-ppo"),
                      ("robopol-fpo-compiled", "robopol-ppo-compiled"), ("robopol-dppo-compiled", "robopol-ppo-compiled")):
        if name in by_name and ppo in by_name:
            out[f"{name}_over_{ppo.replace('-', '_')}"] = rate(name) / rate(ppo)
    return out


def run_sb3(extra: tuple[str, ...] = ()) -> dict:
    """SB3 PPO with the env steps, envs, evaluation cadence, seed and hyper-parameters of SB3_TASK."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    task, policy = SB3_TASK
    cfg = load_run_config([f"task={task}", f"policy={policy}", *extra])
    algo, train_cfg, num_envs = cfg.policy.algo, cfg.train, cfg.sim.num_envs
    steps, episodes, seed = train_cfg.total_env_steps, train_cfg.eval_episodes, train_cfg.seed
    assert list(cfg.policy.actor.hidden) == [64, 64] and cfg.policy.actor.activation == "tanh", "SB3's MlpPolicy: 64x64 tanh"
    venv = VecNormalize(make_vec_env(cfg.task.env_id, n_envs=num_envs, seed=seed), gamma=algo.gamma)
    lr = algo.lr
    model = PPO("MlpPolicy", venv, n_steps=train_cfg.rollout_steps, batch_size=algo.minibatch_size,
                n_epochs=algo.update_epochs, learning_rate=(lambda f: lr * f) if algo.anneal_lr else lr,
                gamma=algo.gamma, gae_lambda=algo.gae_lambda, clip_range=algo.clip, ent_coef=algo.ent_coef,
                vf_coef=algo.vf_coef, max_grad_norm=algo.max_grad_norm, device="cpu", seed=seed, verbose=0)
    every = train_cfg.eval_every * num_envs * train_cfg.rollout_steps if train_cfg.eval_every else steps + 1
    curve: list[dict] = []
    clock = {"eval": 0.0, "start": time.perf_counter(), "next": every}

    class Evaluate(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps >= clock["next"]:
                t = time.perf_counter()
                ret, std = sb3_evaluate(model, venv, episodes)
                clock["eval"] += time.perf_counter() - t
                curve.append({"env_steps": self.num_timesteps, "wall_time": t - clock["start"], "return": ret,
                              "return_std": std})
                clock["next"] += every
            return True

    model.learn(total_timesteps=steps, callback=Evaluate())  # unpinned: SB3's own setup (sim.cpu is robopol's)
    wall = time.perf_counter() - clock["start"]
    if (not curve or curve[-1]["env_steps"] < model.num_timesteps):
        t = time.perf_counter()
        ret, std = sb3_evaluate(model, venv, episodes)
        curve.append({"env_steps": model.num_timesteps, "wall_time": t - clock["start"], "return": ret, "return_std": std})
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
        label = r["name"] + (f" seed {r['seed']}" if "seed" in r else "")
        axes[0].plot(xs, ys, marker="o", label=label)
        axes[1].plot(ws, ys, marker="o", label=label)
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
    parser.add_argument("--only", default=",".join(["robopol-ppo", "sb3-ppo", *list(ROBOPOL)[1:]]),
                        help="comma-separated entries: sb3-ppo, " + ", ".join(ROBOPOL))
    parser.add_argument("--throughput-rounds", type=int, default=0,
                        help="instead of learning curves, measure steps/s in this many interleaved rounds")
    parser.add_argument("--budget", default=None,
                        help="a task file whose env steps and evaluation settings replace every entry's (e.g. hopper_1m)")
    parser.add_argument("--seeds", default=None,
                        help="comma-separated training seeds (train.seed): every entry runs once per seed and the report "
                             "gives each entry's final return as mean ± std over them")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    machine = {"node": platform.node(), "processor": platform.processor(), "cores": os.cpu_count(),
               "load_average_at_start": os.getloadavg()}
    if args.throughput_rounds:
        report = interleaved_throughput(args.throughput_rounds, args.only.split(","))
        report["machine"] = machine
        (OUT / "hopper-throughput.json").write_text(json.dumps(report, indent=2))
        print(json.dumps({"median": report["median"], "ratios": report["ratios"]}, indent=2))
        return
    extra = budget_overrides(args.budget) if args.budget else ()
    seeds = [int(seed) for seed in args.seeds.split(",")] if args.seeds else [None]
    results = []
    for seed in seeds:
        for name in args.only.split(","):
            print(f"running {name}" + ("" if seed is None else f", training seed {seed}"), flush=True)
            settings = extra if seed is None else (*extra, f"train.seed={seed}")
            result = run_sb3(settings) if name == "sb3-ppo" else run_robopol(name, settings)
            results.append(result if seed is None else {**result, "seed": seed})
    machine["load_average_at_end"] = os.getloadavg()
    report = {"machine": machine, "entries": {name: ROBOPOL.get(name, SB3_TASK) for name in args.only.split(",")},
              "settings": list(extra), "results": results, "ratios": ratios({r["name"]: r for r in results})}
    stem = args.budget.replace("_", "-") if args.budget else "hopper-300k"
    if args.seeds:
        report["final_return_over_seeds"] = over_seeds(results)
        stem += "-seeds"
    (OUT / f"{stem}.json").write_text(json.dumps(report, indent=2))
    plot(results, OUT / f"{stem}.png")
    print("| run | env steps | env steps/s | after 3 iterations | time in simulator | final return |")
    print("|---|---|---|---|---|---|")
    for r in results:
        last = r["curve"][-1]
        sim = f"{r['sim_fraction']:.0%}" if "sim_fraction" in r else "–"
        steady = f"{r['steady_steps_per_second']:.0f}" if "steady_steps_per_second" in r else "–"
        print(f"| {r['name']} | {r['env_steps']} | {r['steps_per_second']:.0f} | {steady} | {sim} | "
              f"{last['return']:.0f} ± {last['return_std']:.0f} |")
    print(json.dumps(report.get("final_return_over_seeds", report["ratios"]), indent=1))


def over_seeds(results: list[dict]) -> dict[str, dict]:
    """Per entry: each training seed's final evaluation (the mean over the 10 fixed evaluation seeds), and
    their mean and std over training seeds."""
    finals: dict[str, list[float]] = {}
    for r in results:
        finals.setdefault(r["name"], []).append(r["curve"][-1]["return"])
    return {name: {"seeds": [r["seed"] for r in results if r["name"] == name], "final_returns": values,
                   "mean": float(np.mean(values)), "std": float(np.std(values))} for name, values in finals.items()}


if __name__ == "__main__":
    main()
