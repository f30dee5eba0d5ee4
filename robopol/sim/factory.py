"""Env factory: a task config -> one wrapped env, or a seeded vector of them.

Vector envs reset in SAME_STEP mode, so a finished episode's last observation arrives in
info["final_obs"] and truncated episodes can be bootstrapped from it."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv

import robopol.sim.toy  # noqa: F401  (registers robopol/Reach-v0)
from robopol.config import PolicyConfig, TaskConfig
from robopol.errors import ConfigError
from robopol.sim.point_mass import PointMass
from robopol.sim.tensor_env import TensorEnvAsGym, TensorVecEnv
from robopol.sim.wrappers import ActionChunk, ObservationHistory

# Evaluation episodes use seeds from here on; training envs use seed * 1000 + index, far below it.
EVAL_SEED_BASE = 1_000_000_000


def _make_gym(task: TaskConfig, render_mode: str | None) -> gym.Env:
    try:
        kwargs = dict(task.env_kwargs)
        if task.max_episode_steps:
            kwargs["max_episode_steps"] = task.max_episode_steps
        return gym.make(task.env_id, render_mode=render_mode, **kwargs)
    except gym.error.Error as exc:
        raise ConfigError(f"task.env_id: cannot make {task.env_id!r}: {exc}") from None
    except TypeError as exc:  # an env_kwargs key the env's constructor does not take
        raise ConfigError(f"task.env_kwargs: {task.env_id} does not accept {dict(task.env_kwargs)} "
                          f"({str(exc).split(' was raised')[0]})") from None


def envpool_config(task: TaskConfig) -> dict[str, Any]:
    """EnvPool's options for a task: env_kwargs, with task.max_episode_steps as EnvPool's own limit."""
    config = dict(task.env_kwargs)
    if task.max_episode_steps:
        config["max_episode_steps"] = task.max_episode_steps
    return config


def _make_envpool(task: TaskConfig, render_mode: str | None) -> gym.Env:
    import robopol.sim.envpool_env  # noqa: F401  (registers robopol/EnvPool-v0)

    return gym.make("robopol/EnvPool-v0", env_id=task.env_id, config=envpool_config(task), render_mode=render_mode)


def _make_pusht(task: TaskConfig, render_mode: str | None) -> gym.Env:
    from robopol.sim.pusht import make_pusht_env

    return make_pusht_env(task.env_kwargs, render_mode)


def _make_robomimic(task: TaskConfig, render_mode: str | None) -> gym.Env:
    from robopol.sim.robomimic import make_robomimic_env

    return make_robomimic_env(task.env_kwargs, render_mode)


# Tensor envs by task.env_id: (num_envs, max_episode_steps, device) -> env. A simulator's adapter (an
# Isaac Gym task through robopol.sim.isaacgym_adapter, say) is one more entry.
TENSOR_ENVS: dict[str, Callable[[int, int, str], TensorVecEnv]] = {"PointMass": PointMass}


def make_tensor_env(task: TaskConfig, num_envs: int, device: str = "cpu") -> TensorVecEnv:
    """A batched torch env (robopol.sim.tensor_env's contract) for a `tensor` task."""
    if task.env_id not in TENSOR_ENVS:
        raise ConfigError(f"task.env_id: {task.env_id!r} is not a tensor env; allowed: {', '.join(TENSOR_ENVS)}")
    if task.env_kwargs:
        raise ConfigError(f"task.env_kwargs: tensor envs take none; got {', '.join(map(str, task.env_kwargs))}")
    return TENSOR_ENVS[task.env_id](num_envs, task.max_episode_steps or 100, device)


def _make_tensor(task: TaskConfig, render_mode: str | None) -> gym.Env:
    return TensorEnvAsGym(make_tensor_env(task, 1), render_mode)


BACKENDS: dict[str, Callable[[TaskConfig, str | None], gym.Env]] = {
    "gym": _make_gym, "envpool": _make_envpool, "pusht": _make_pusht, "robomimic": _make_robomimic,
    "tensor": _make_tensor,
}


def make_base_env(task: TaskConfig, render_mode: str | None = None) -> gym.Env:
    """The task's own env, checked for what robopol needs: flat Box observations and Box actions."""
    env = BACKENDS[task.backend](task, render_mode)
    if not isinstance(env.action_space, gym.spaces.Box) or not isinstance(env.observation_space, gym.spaces.Box):
        raise ConfigError(f"task {task.name!r}: robopol needs Box observation and action spaces; "
                          f"got {type(env.observation_space).__name__} / {type(env.action_space).__name__}")
    if len(env.observation_space.shape) != 1:
        raise ConfigError(f"task {task.name!r}: observations must be flat vectors; got shape {env.observation_space.shape}")
    return env


def make_env(task: TaskConfig, policy: PolicyConfig, render_mode: str | None = None) -> gym.Env:
    env = make_base_env(task, render_mode)
    env = ObservationHistory(env, policy.n_obs_steps)
    return ActionChunk(env, policy.n_action_steps)


def make_vec_env(task: TaskConfig, policy: PolicyConfig, num_envs: int, vectorization: str = "sync",
                 envpool_threads: int = 0, core: int | None = None) -> VectorEnv:
    """Gymnasium's sync or async vector over make_env; an EnvPool task is one batched pool instead, its
    workers pinned to `core` onwards when given."""
    if task.backend == "envpool":
        from robopol.sim.envpool_env import EnvPoolVectorEnv

        return EnvPoolVectorEnv(task.env_id, envpool_config(task), num_envs, policy.n_obs_steps,
                                policy.n_action_steps, envpool_threads, core)
    fns = [partial(make_env, task, policy) for _ in range(num_envs)]
    if vectorization == "async":
        return AsyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP, context="fork")
    return SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)


def env_spec(task: TaskConfig) -> tuple[int, int, np.ndarray, np.ndarray]:
    """obs_dim, act_dim and the action bounds of a task, read off one env; unbounded action
    dimensions are given [-1, 1] so the actor's [-1, 1] range still maps somewhere sensible."""
    env = make_base_env(task)
    try:
        space = env.action_space
        low, high = space.low.astype(np.float32), space.high.astype(np.float32)
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            low, high = np.full_like(low, -1.0), np.full_like(high, 1.0)
        return int(np.prod(env.observation_space.shape)), int(space.shape[0]), low, high
    finally:
        env.close()
