"""Scripted experts that make demonstrations: `make_expert(task, noise)` for pusht, lift, can, square.

Every expert has `reset(env, seed)` (call after env.reset) and `act(obs, env) -> action`; they may
read privileged simulator state through `env.unwrapped` (each module documents what it reads)."""

from __future__ import annotations

from typing import Protocol

import gymnasium as gym
import numpy as np

from robopol.errors import ConfigError


class Expert(Protocol):
    def reset(self, env: gym.Env, seed: int | None = None) -> None: ...

    def act(self, obs: np.ndarray, env: gym.Env) -> np.ndarray: ...


def make_expert(task: str, noise: float = 0.0) -> Expert:
    """The scripted expert for `task`; `noise` is the std of Gaussian noise added to its actions
    (pixels for pusht, normalised OSC units for the robomimic tasks)."""
    from robopol.experts.pusht import PushTExpert
    from robopol.experts.robomimic import EXPERTS

    if noise < 0:
        raise ConfigError(f"noise: {noise} is negative; the action-noise std must be >= 0")
    if task == "pusht":
        return PushTExpert(noise=noise)
    if task in EXPERTS:
        return EXPERTS[task](noise=noise)
    raise ConfigError(f"task: no scripted expert for {task!r}; choose one of: pusht, {', '.join(EXPERTS)}")
