"""Named segments of a task's flat observation, and one environment for policies that observe different ones.

A composed (GPC) policy steps one environment for all its parents; when they were trained on different
observation keys (PushT "state" and "keypoints") that environment must produce every parent's keys, and
each parent reads its own, in its own order, out of the shared vector. Only PushT offers observation
settings to choose from; any other task's observation is one opaque segment (robomimic's keys are fixed),
so its parents must match."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from robopol.config import TaskConfig
from robopol.errors import ConfigError

Keys = tuple[tuple[str, int], ...]  # (name, size) per segment, in the flat observation's order


def obs_keys(task: TaskConfig, obs_dim: int) -> Keys:
    """The named segments of the task's flat observation of `obs_dim` values."""
    if task.backend == "pusht":
        from robopol.sim.pusht import PushTKwargs, obs_keys as pusht_keys
        from robopol.typed_config import build

        kw = build(PushTKwargs, dict(task.env_kwargs), "task.env_kwargs")
        return pusht_keys(kw.obs_type, kw.observation_width, kw.observation_height)
    return (("obs", obs_dim),)


def _variants(task: TaskConfig) -> list[TaskConfig]:
    """The task itself, then the settings of it that produce other keys (PushT's obs types)."""
    if task.backend != "pusht":
        return [task]
    return [task, *(dataclasses.replace(task, env_kwargs={**task.env_kwargs, "obs_type": obs_type})
                    for obs_type in ("state", "keypoints", "state_keypoints"))]


def index_of(shared: Keys, wanted: Keys) -> list[int]:
    """Positions in the shared flat observation of the `wanted` segments, in wanted's order."""
    starts, at = {}, 0
    for name, size in shared:
        starts[name] = at
        at += size
    return [i for name, size in wanted for i in range(starts[name], starts[name] + size)]


def shared_observation(tasks: Sequence[TaskConfig], obs_dims: Sequence[int], names: Sequence[str]
                       ) -> tuple[TaskConfig, int, list[list[int]] | None]:
    """The task setting whose observation holds every parent's keys (the first parent's when they all
    match), its observation size, and per parent the positions of its own observation in it (None when
    every parent observes the same keys). Parents whose keys no setting of the task produces together
    are refused with one line naming them."""
    keys = [obs_keys(t, d) for t, d in zip(tasks, obs_dims)]
    if all(k == keys[0] for k in keys):
        return tasks[0], obs_dims[0], None
    needed = {seg for k in keys for seg in k}
    for variant in _variants(tasks[0]):
        have = obs_keys(variant, obs_dims[0])
        if needed <= set(have):
            return variant, sum(size for _, size in have), [index_of(have, k) for k in keys]
    listed = "; ".join(f"{', '.join(f'{n} ({s})' for n, s in k)} in {name}" for k, name in zip(keys, names))
    raise ConfigError(f"cannot compose: observation keys differ and no setting of task {tasks[0].name!r} "
                      f"observes them together: {listed}")
