"""Make demonstration files with the scripted experts (`robopol demos`).

Episode i is seeded with `seed + i` (env reset and expert noise), so a file is reproducible; keep
demo seeds below robopol.protocols' evaluation seeds. Every episode is written, successful or not,
so `noise` > 0 gives deliberately imperfect demonstrations; the returned stats say how many succeeded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from robopol.data.episodes import Episode
from robopol.data.pusht_zarr import write_pusht_zarr
from robopol.data.robomimic_hdf5 import write_robomimic_hdf5
from robopol.errors import ConfigError
from robopol.experts import make_expert
from robopol.preflight import check_writable
from robopol.protocols import EpisodeRecord, run_episodes
from robopol.sim import pusht
from robopol.sim.robomimic import TASKS, make_robomimic_env

FORMATS = {"pusht": ("hdf5", "zarr"), **{task: ("hdf5",) for task in TASKS}}
EXTENSIONS = {".hdf5": "hdf5", ".h5": "hdf5", ".zarr": "zarr"}
GYM_ENV_TYPE = 2  # robomimic's EnvType.GYM_TYPE, for PushT's env_args


def demo_format(out: Path, fmt: str | None = None) -> str:
    """The format `out`'s extension names; a given `fmt` must agree with it, so a file's name never
    lies about its content."""
    by_extension = EXTENSIONS.get(Path(out).suffix.lower())
    if by_extension is None:
        raise ConfigError(f"--out: {out} has no demonstration extension; use .hdf5 or .h5 (robomimic HDF5) "
                          "or .zarr (PushT zarr)")
    if fmt is not None and fmt != by_extension:
        raise ConfigError(f"--format: {fmt} conflicts with --out {out}, whose extension means {by_extension}; "
                          "drop --format or change the extension")
    return by_extension


def write_demonstrations(task: str, n: int, out: Path, noise: float = 0.0, seed: int = 0,
                         fmt: str | None = None) -> dict[str, Any]:
    """Run the task's expert for n seeded episodes and write them to `out` as robomimic HDF5 or
    (PushT only) diffusion_policy zarr, the format `out`'s extension names. Returns successes and
    episode lengths."""
    fmt = demo_format(out, fmt)
    if task not in FORMATS:
        raise ConfigError(f"task: {task!r} has no scripted expert; choose one of: {', '.join(FORMATS)}")
    if fmt not in FORMATS[task]:
        raise ConfigError(f"format: {fmt!r} is not available for task {task!r}; choose one of: {', '.join(FORMATS[task])}")
    if n < 1:
        raise ConfigError(f"n: {n} demonstrations requested; need at least 1")
    check_writable(out, "--out", directory=fmt == "zarr")
    expert = make_expert(task, noise)
    env = pusht.make_pusht_env({}, None) if task == "pusht" else make_robomimic_env({"task": task}, None)
    try:
        recorder = None if task == "pusht" else _robomimic_recorder
        records = run_episodes(env, lambda obs: expert.act(obs, env), range(seed, seed + n), reset=expert.reset,
                               recorder=recorder, keep_obs=True, progress=f"demos {task}")
        env_args = (env.unwrapped.env_args() if task != "pusht"
                    else {"env_name": pusht.ENV_ID, "type": GYM_ENV_TYPE, "env_kwargs": {"obs_type": "state"}})
    finally:
        env.close()
    episodes = [_pusht_episode(r) if task == "pusht" else _robomimic_episode(r) for r in records]
    if fmt == "zarr":
        write_pusht_zarr(out, episodes)
    else:
        write_robomimic_hdf5(out, episodes, env_args, seed=seed)
    lengths = [r.length for r in records]
    return {"task": task, "path": str(out), "format": fmt, "episodes": n,
            "successes": sum(r.success for r in records), "success_rate": float(np.mean([r.success for r in records])),
            "episode_lengths": lengths, "mean_length": float(np.mean(lengths))}


def _robomimic_recorder(env: gym.Env) -> dict[str, np.ndarray]:
    return {**env.unwrapped.obs_dict(), "states": env.unwrapped.sim_state()}


def _dones(r: EpisodeRecord) -> np.ndarray:
    """robomimic's convention (dataset_states_to_obs, done_mode 2): 1 on success and on the last step."""
    dones = r.successes.copy()
    dones[-1] = True
    return dones


def _robomimic_episode(r: EpisodeRecord) -> Episode:
    keys = [k for k in r.extras if k != "states"]
    return Episode(obs={k: r.extras[k][:-1] for k in keys}, next_obs={k: r.extras[k][1:] for k in keys},
                   actions=r.actions.astype(np.float32), rewards=r.rewards.astype(np.float32), dones=_dones(r),
                   states=r.extras["states"][:-1])


def _pusht_episode(r: EpisodeRecord) -> Episode:
    def obs(states: np.ndarray) -> dict[str, np.ndarray]:
        kp = pusht.keypoints(states[:, 2:5]).reshape(len(states), -1).astype(np.float32)
        return {"state": states, "keypoint": kp, "agent_pos": states[:, :2]}

    return Episode(obs=obs(r.obs[:-1]), next_obs=obs(r.obs[1:]), actions=r.actions.astype(np.float32),
                   rewards=r.rewards.astype(np.float32), dones=_dones(r))
