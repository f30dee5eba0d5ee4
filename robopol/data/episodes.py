"""The one in-memory form of a demonstration file, whatever format it was read from.

Both readers (robomimic HDF5, diffusion_policy zarr) return `Demonstrations`, so training code
never needs to know which format the demonstrations came in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robopol.errors import ConfigError


@dataclass(frozen=True)
class Episode:
    """One demonstration. `obs` keeps the file's per-key arrays in the task's fixed key order
    (dict insertion order); `flat_obs` concatenates them in that order, as the envs observe."""

    obs: dict[str, np.ndarray]  # key -> (T, d_key) float32
    actions: np.ndarray  # (T, act_dim) float32
    rewards: np.ndarray  # (T,) float32
    dones: np.ndarray  # (T,) bool; robomimic's convention: 1 on success and on the last step
    states: np.ndarray | None = None  # (T, state_dim) simulator states, when the format has them
    next_obs: dict[str, np.ndarray] | None = None  # obs after each action, when the format has them
    name: str = ""  # where it sits in its file (data/demo_3, episode 3), for messages about it
    successes: np.ndarray | None = None  # (T,) bool: the task was solved at that step, when the file records it

    @property
    def flat_obs(self) -> np.ndarray:
        return np.concatenate([v.reshape(len(v), -1) for v in self.obs.values()], axis=1, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.actions)


@dataclass(frozen=True)
class TaskLayout:
    """What a task's demonstration files must contain: the env they were made in, the dimension of
    each observation key (in the task's fixed order) and of the actions."""

    env_name: str
    obs_dims: dict[str, int]
    act_dim: int
    default_obs_keys: tuple[str, ...]


def task_layout(task: str) -> TaskLayout:
    from robopol.sim import pusht, robomimic

    if task == "pusht":
        return TaskLayout(pusht.ENV_ID, {"state": 5, "keypoint": 16, "agent_pos": 2}, 2, ("state",))
    if task in robomimic.TASKS:
        spec = robomimic.TASKS[task]
        dims = dict(zip(robomimic.OBS_KEYS, (3, 4, 2, spec.object_dim)))
        return TaskLayout(spec.env_name, dims, 7, robomimic.OBS_KEYS)
    raise ConfigError(f"task: {task!r} has no demonstration format; choose one of: pusht, {', '.join(robomimic.TASKS)}")


@dataclass(frozen=True)
class Demonstrations:
    """A whole file: which task it was made for, how its observations are laid out, its episodes."""

    task: str
    obs_keys: tuple[str, ...]
    episodes: list[Episode]
    env_args: dict[str, Any] = field(default_factory=dict)
    train_names: tuple[str, ...] = ()  # mask/train demo names (robomimic); empty if the file has none
    valid_names: tuple[str, ...] = ()

    @property
    def obs_dim(self) -> int:
        return sum(int(np.prod(v.shape[1:])) for v in self.episodes[0].obs.values())

    @property
    def act_dim(self) -> int:
        return self.episodes[0].actions.shape[1]

    @property
    def num_samples(self) -> int:
        return sum(len(e) for e in self.episodes)
