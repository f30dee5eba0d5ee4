"""Which demonstration reader serves which task: a task config + a path -> Demonstrations.

PushT reads diffusion_policy zarr stores (or robomimic-layout HDF5) with the observation type the
task's env produces; robomimic tasks read robomimic HDF5. The readers check that the file was made
for the task (env_name, keys, shapes); here we also check that it matches the env's dimensions."""

from __future__ import annotations

from pathlib import Path

from robopol.config import TaskConfig
from robopol.data.episodes import Demonstrations
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


def load_demonstrations(path: str | Path, task: TaskConfig) -> Demonstrations:
    """Read `path` for `task`; reading first means a wrong path fails before any env is built."""
    if not str(path):
        raise ConfigError("policy.algo.dataset: not set; give a robomimic HDF5 file or a PushT zarr store "
                          "(make one with `robopol demos`)")
    path, name = Path(path), demo_task(task)
    if not path.exists():
        raise DataError(f"policy.algo.dataset: {path} does not exist")
    is_zarr = path.is_dir() or path.suffix in (".zarr", ".zip")
    if name == "pusht":
        from robopol.sim.pusht import PushTKwargs

        obs_type = build(PushTKwargs, dict(task.env_kwargs), "task.env_kwargs").obs_type
        if obs_type not in PUSHT_HDF5_KEYS:
            raise ConfigError(f"task.env_kwargs.obs_type: {obs_type!r} has no low-dim demonstrations; "
                              f"choose one of: {', '.join(PUSHT_HDF5_KEYS)}")
        demos = read_pusht_zarr(path, obs_type) if is_zarr else read_robomimic_hdf5(path, name, PUSHT_HDF5_KEYS[obs_type])
    elif is_zarr:
        raise DataError(f"policy.algo.dataset: {path} is a zarr store (PushT's format), but task {task.name!r} "
                        "reads robomimic HDF5 files")
    else:
        demos = read_robomimic_hdf5(path, name)
    return demos


def check_dimensions(demos: Demonstrations, path: str | Path, task: TaskConfig, obs_dim: int, act_dim: int) -> None:
    """The file's observation / action sizes must be the env's."""
    if (demos.obs_dim, demos.act_dim) != (obs_dim, act_dim):
        raise DataError(f"policy.algo.dataset: {path} has {demos.obs_dim}-dim observations and {demos.act_dim}-dim "
                        f"actions; task {task.name!r} has {obs_dim} and {act_dim}")
