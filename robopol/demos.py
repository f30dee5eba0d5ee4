"""Make demonstration files with the scripted experts (`robopol demos`).

Episode i is seeded with `seed + i` (env reset and expert noise), so a file is reproducible; keep
demo seeds below robopol.protocols' evaluation seeds. Every episode is written, successful or not,
so `noise` > 0 gives deliberately imperfect demonstrations; the returned stats say how many succeeded.

A mixed-quality file (`mix`, for offline RL such as QGF) concatenates parts, each the expert at one
noise level or a uniformly random policy (deliberately failing behaviour), seeded one after another;
per-step rewards and success flags are written with every episode and the mix, with each part's
seeds and successes, goes into data.attrs["mix"] (JSON)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from robopol.data.episodes import Episode
from robopol.data.pusht_zarr import write_pusht_zarr
from robopol.data.robomimic_hdf5 import write_robomimic_hdf5
from robopol.errors import ConfigError
from robopol.experts import Expert, make_expert
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


@dataclass(frozen=True)
class MixPart:
    """`episodes` episodes of one behaviour: the expert with action-noise std `noise`, or (random) uniform actions."""

    behaviour: str  # "expert" or "random"
    noise: float
    episodes: int


def parse_mix(text: str) -> list[MixPart]:
    """'0.15:20,1.0:10,random:10' -> parts: NOISE:COUNT is the expert at that noise, random:COUNT uniform actions."""
    parts = []
    for item in text.split(","):
        what, sep, count = item.strip().partition(":")
        try:
            episodes = int(count)
            noise = 0.0 if what == "random" else float(what)
        except ValueError:
            episodes, noise = 0, -1.0
        if not sep or episodes < 1 or noise < 0:
            raise ConfigError(f"--mix: {item!r} is not NOISE:COUNT or random:COUNT (noise >= 0, count >= 1), "
                              "e.g. --mix 0.15:20,1.0:10,random:10")
        parts.append(MixPart("random" if what == "random" else "expert", noise, episodes))
    return parts


class RandomBehaviour:
    """Uniformly random actions within the env's bounds, seeded per episode: behaviour that fails."""

    def reset(self, env: gym.Env, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray, env: gym.Env) -> np.ndarray:
        space = env.action_space
        return self._rng.uniform(space.low, space.high).astype(space.dtype)


def write_demonstrations(task: str, n: int, out: Path, noise: float = 0.0, seed: int = 0,
                         fmt: str | None = None, mix: list[MixPart] | None = None) -> dict[str, Any]:
    """Run the task's expert for n seeded episodes and write them to `out` as robomimic HDF5 or
    (PushT only) diffusion_policy zarr, the format `out`'s extension names; or, given `mix`, its
    parts one after another (HDF5 only; n and noise are then the mix's). Returns successes and
    episode lengths (and the mix with each part's successes)."""
    fmt = demo_format(out, fmt)
    if task not in FORMATS:
        raise ConfigError(f"task: {task!r} has no scripted expert; choose one of: {', '.join(FORMATS)}")
    if fmt not in FORMATS[task]:
        raise ConfigError(f"format: {fmt!r} is not available for task {task!r}; choose one of: {', '.join(FORMATS[task])}")
    if mix is not None and fmt != "hdf5":
        raise ConfigError(f"--mix: mixed-quality files are robomimic HDF5 (.hdf5), which records the mix; got --out {out}")
    parts = mix or [MixPart("expert", noise, n)]
    if sum(p.episodes for p in parts) < 1:
        raise ConfigError(f"n: {n} demonstrations requested; need at least 1")
    check_writable(out, "--out", directory=fmt == "zarr")
    env = pusht.make_pusht_env({}, None) if task == "pusht" else make_robomimic_env({"task": task}, None)
    records, described, first = [], [], seed
    try:
        for part in parts:
            behaviour: Expert = RandomBehaviour() if part.behaviour == "random" else make_expert(task, part.noise)
            recorder = None if task == "pusht" else _robomimic_recorder
            seeds = range(first, first + part.episodes)
            got = run_episodes(env, lambda obs, b=behaviour: b.act(obs, env), seeds, reset=behaviour.reset,
                               recorder=recorder, keep_obs=True, progress=f"demos {task} {part.behaviour} {part.noise:g}")
            described.append({**part.__dict__, "seeds": [first, first + part.episodes - 1],
                              "successes": int(sum(r.success for r in got))})
            records += got
            first += part.episodes
        env_args = (env.unwrapped.env_args() if task != "pusht"
                    else {"env_name": pusht.ENV_ID, "type": GYM_ENV_TYPE, "env_kwargs": {"obs_type": "state"}})
    finally:
        env.close()
    episodes = [_pusht_episode(r) if task == "pusht" else _robomimic_episode(r) for r in records]
    if fmt == "zarr":
        write_pusht_zarr(out, episodes)
    else:
        write_robomimic_hdf5(out, episodes, env_args, seed=seed,
                             attrs={"mix": json.dumps(described)} if mix is not None else None)
    lengths = [r.length for r in records]
    stats = {"task": task, "path": str(out), "format": fmt, "episodes": len(records),
             "successes": sum(r.success for r in records), "success_rate": float(np.mean([r.success for r in records])),
             "episode_lengths": lengths, "mean_length": float(np.mean(lengths))}
    return {**stats, "mix": described} if mix is not None else stats


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
                   states=r.extras["states"][:-1], successes=r.successes.astype(bool))


def _pusht_episode(r: EpisodeRecord) -> Episode:
    def obs(states: np.ndarray) -> dict[str, np.ndarray]:
        kp = pusht.keypoints(states[:, 2:5]).reshape(len(states), -1).astype(np.float32)
        return {"state": states, "keypoint": kp, "agent_pos": states[:, :2]}

    return Episode(obs=obs(r.obs[:-1]), next_obs=obs(r.obs[1:]), actions=r.actions.astype(np.float32),
                   rewards=r.rewards.astype(np.float32), dones=_dones(r), successes=r.successes.astype(bool))
