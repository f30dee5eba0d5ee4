"""Which demonstration reader serves which task: a task config + a path -> Demonstrations.

PushT reads diffusion_policy zarr stores (or robomimic-layout HDF5) with the observation type the
task's env produces; robomimic tasks read robomimic HDF5. The readers check that the file was made
for the task (env_name, keys, shapes); here we also check every episode's values (no empty
episodes, no NaN or inf, which would train to a NaN loss) and that the file matches the env's dimensions."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np

from robopol.config import TaskConfig
from robopol.data.episodes import Demonstrations, Episode
from robopol.data.pusht_zarr import read_pusht_zarr
from robopol.data.robomimic_hdf5 import read_robomimic_hdf5
from robopol.errors import ConfigError, DataError
from robopol.typed_config import build

PUSHT_HDF5_KEYS = {"state": ("state",), "keypoints": ("keypoint", "agent_pos")}


def demo_task(task: TaskConfig) -> str:
    """The demonstration-format name (pusht, lift, can, square) of a task config."""
    if task.backend == "pusht":
        return "pusht"
    if task.backend == "robomimic":
        from robopol.sim.robomimic import RobomimicKwargs

        return build(RobomimicKwargs, dict(task.env_kwargs), "task.env_kwargs").task
    raise ConfigError(f"task {task.name!r} (backend {task.backend}) has no demonstrations; "
                      "behaviour cloning needs a task with backend pusht or robomimic")


def load_demonstrations(path: str | Path, task: TaskConfig, drop_bad: bool = False,
                        setting: str = "policy.algo.dataset") -> Demonstrations:
    """Read and validate `path` for `task`; reading first means a wrong path fails before any env is
    built. `drop_bad` drops the episodes validation rejects (with a warning saying how many).
    `setting` is the config field that named the file, for error messages."""
    if not str(path):
        raise ConfigError(f"{setting}: not set; give a robomimic HDF5 file or a PushT zarr store "
                          "(make one with `robopol demos`)")
    path, name = Path(path), demo_task(task)
    if not path.exists():
        raise DataError(f"{setting}: {path} does not exist")
    is_zarr = path.is_dir() or path.suffix in (".zarr", ".zip")
    if name == "pusht":
        from robopol.sim.pusht import PushTKwargs

        obs_type = build(PushTKwargs, dict(task.env_kwargs), "task.env_kwargs").obs_type
        if obs_type not in PUSHT_HDF5_KEYS:
            raise ConfigError(f"task.env_kwargs.obs_type: {obs_type!r} has no low-dim demonstrations; "
                              f"choose one of: {', '.join(PUSHT_HDF5_KEYS)}")
        demos = read_pusht_zarr(path, obs_type) if is_zarr else read_robomimic_hdf5(path, name, PUSHT_HDF5_KEYS[obs_type])
    elif is_zarr:
        raise DataError(f"{setting}: {path} is a zarr store (PushT's format), but task {task.name!r} "
                        "reads robomimic HDF5 files")
    else:
        demos = read_robomimic_hdf5(path, name)
    return validate_episodes(demos, path, drop_bad, setting)


def episode_problem(ep: Episode) -> str | None:
    """What makes an episode unusable for training (no steps, a non-finite value), or None."""
    if len(ep) == 0:
        return "has no steps"
    arrays = {**{f"obs/{k}": v for k, v in ep.obs.items()}, "actions": ep.actions, "rewards": ep.rewards,
              **{f"next_obs/{k}": v for k, v in (ep.next_obs or {}).items()}}
    for key, value in arrays.items():
        bad = ~np.isfinite(value.reshape(len(value), -1)).all(axis=1)
        if bad.any():
            steps = f"{int(bad.sum())} step{'s' if bad.sum() > 1 else ''}"
            return f"{key} has non-finite values (NaN or inf) at {steps}, the first at step {int(bad.argmax())}"
    return None


def validate_episodes(demos: Demonstrations, path: str | Path, drop_bad: bool = False,
                      setting: str = "policy.algo.dataset") -> Demonstrations:
    """Refuse (or, with `drop_bad`, drop) the episodes that `episode_problem` rejects, naming the first."""
    problems = {i: p for i, ep in enumerate(demos.episodes) if (p := episode_problem(ep)) is not None}
    if not problems:
        return demos
    first = next(iter(problems))
    where = f"{demos.episodes[first].name or f'episode {first}'}: {problems[first]}"
    count = f"{len(problems)} of {len(demos.episodes)} episodes"
    if not drop_bad or len(problems) == len(demos.episodes):
        hint = "; set policy.algo.drop_bad_episodes=true to train on the others" if len(problems) < len(demos.episodes) else ""
        raise DataError(f"{setting}: {path}: {where} ({count} are unusable){hint}")
    warnings.warn(f"{setting}: {path}: dropped {count} (policy.algo.drop_bad_episodes=true); the first, {where}",
                  stacklevel=1)  # one location, so reading the file twice (preflight, then the run) warns once
    kept = [ep for i, ep in enumerate(demos.episodes) if i not in problems]
    dropped = {demos.episodes[i].name.removeprefix("data/") for i in problems}
    return dataclasses.replace(demos, episodes=kept, train_names=tuple(n for n in demos.train_names if n not in dropped),
                               valid_names=tuple(n for n in demos.valid_names if n not in dropped))


def check_dimensions(demos: Demonstrations, path: str | Path, task: TaskConfig, obs_dim: int, act_dim: int,
                     setting: str = "policy.algo.dataset") -> None:
    """The file's observation / action sizes must be the env's."""
    if (demos.obs_dim, demos.act_dim) != (obs_dim, act_dim):
        raise DataError(f"{setting}: {path} has {demos.obs_dim}-dim observations and {demos.act_dim}-dim "
                        f"actions; task {task.name!r} has {obs_dim} and {act_dim}")
