"""Read and write robomimic's HDF5 demonstration layout (robomimic/utils/dataset.py reads it):

    data                      attrs: total (samples), env_args (JSON: env_name, type, env_kwargs)
      demo_<i>                attrs: num_samples
        obs/<key>, next_obs/<key>   (T, d_key)
        actions (T, act_dim), rewards (T,), dones (T,), states (T, state_dim) [optional]
        success (T,) [optional, robopol's]   the task was solved at that step (robomimic ignores it)
    mask/train, mask/valid    demo names as byte strings

The reader validates the file against the task it is read for and raises DataError naming the
offending key, the mismatch and what was expected."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from robopol.data.atomic import atomic_output
from robopol.data.episodes import Demonstrations, Episode, task_layout
from robopol.errors import DataError


def write_robomimic_hdf5(out: Path, episodes: Iterable[Episode], env_args: dict[str, Any],
                         valid_fraction: float = 0.1, seed: int = 0, attrs: dict[str, str] | None = None) -> Path:
    """Write episodes atomically. An episode without `next_obs` gets obs shifted by one step (its
    last row repeated). `valid_fraction` of the demos, drawn with `seed`, go to mask/valid; `attrs`
    are added to data.attrs (e.g. the behaviour mix of a mixed-quality file)."""
    with atomic_output(Path(out)) as tmp, h5py.File(tmp, "w") as f:
        data = f.create_group("data")
        total, names = 0, []
        for i, ep in enumerate(episodes):
            name = f"demo_{i}"
            _write_episode(data.create_group(name), ep)
            total += len(ep)
            names.append(name)
        data.attrs["total"] = total
        data.attrs["env_args"] = json.dumps(env_args)
        for key, value in (attrs or {}).items():
            data.attrs[key] = value
        valid = set(np.random.default_rng(seed).permutation(len(names))[:round(valid_fraction * len(names))])
        f.create_dataset("mask/train", data=np.array([n for i, n in enumerate(names) if i not in valid], dtype="S"))
        f.create_dataset("mask/valid", data=np.array([n for i, n in enumerate(names) if i in valid], dtype="S"))
    return Path(out)


def _write_episode(group: h5py.Group, ep: Episode) -> None:
    next_obs = ep.next_obs or {k: np.concatenate([v[1:], v[-1:]]) for k, v in ep.obs.items()}
    for key, value in ep.obs.items():
        group.create_dataset(f"obs/{key}", data=value)
        group.create_dataset(f"next_obs/{key}", data=next_obs[key])
    group.create_dataset("actions", data=ep.actions)
    group.create_dataset("rewards", data=ep.rewards)
    group.create_dataset("dones", data=ep.dones.astype(np.int64))
    if ep.states is not None:
        group.create_dataset("states", data=ep.states)
    if ep.successes is not None:
        group.create_dataset("success", data=ep.successes.astype(np.int64))
    group.attrs["num_samples"] = len(ep)


def read_robomimic_hdf5(path: Path, task: str, obs_keys: Sequence[str] | None = None) -> Demonstrations:
    """Read a file made for `task` (pusht, lift, can, square), keeping `obs_keys` (default: the
    task's fixed key order) as each episode's observation."""
    layout = task_layout(task)
    keys = tuple(obs_keys or layout.default_obs_keys)
    unknown = [k for k in keys if k not in layout.obs_dims]
    if unknown:
        raise DataError(f"obs key {unknown[0]!r} is not an observation of task {task!r}; allowed: {', '.join(layout.obs_dims)}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such demonstration file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file ({exc})") from None
    with f:
        data = _require(f, "data", path)
        env_args = _env_args(data, path)
        if env_args.get("env_name") != layout.env_name:
            raise DataError(f"{path}: data.attrs['env_args']['env_name'] is {env_args.get('env_name')!r}, but task "
                            f"{task!r} expects {layout.env_name!r}; the file was made for another task")
        names = sorted((n for n in data if n.startswith("demo_")), key=lambda n: int(n[5:]))
        if not names:
            raise DataError(f"{path}: group 'data' holds no demo_<i> groups")
        episodes = [_read_episode(data[n], f"data/{n}", keys, layout.obs_dims, layout.act_dim, path) for n in names]
        masks = {m: tuple(x.decode() for x in f[f"mask/{m}"][:]) if f"mask/{m}" in f else () for m in ("train", "valid")}
    return Demonstrations(task=task, obs_keys=keys, episodes=episodes, env_args=env_args,
                          train_names=masks["train"], valid_names=masks["valid"])


def _env_args(data: h5py.Group, path: Path) -> dict[str, Any]:
    if "env_args" not in data.attrs:
        raise DataError(f"{path}: missing attribute data.attrs['env_args'] (JSON with env_name, type, env_kwargs)")
    try:
        env_args = json.loads(data.attrs["env_args"])
    except (TypeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: data.attrs['env_args'] is not valid JSON ({exc})") from None
    if not isinstance(env_args, dict):
        raise DataError(f"{path}: data.attrs['env_args'] must be a JSON object, got {type(env_args).__name__}")
    return env_args


def _read_episode(group: h5py.Group, where: str, keys: Sequence[str], obs_dims: dict[str, int], act_dim: int,
                  path: Path) -> Episode:
    actions = np.asarray(_require(group, "actions", path, where)[:], dtype=np.float32)
    if actions.ndim != 2 or actions.shape[1] != act_dim:
        raise DataError(f"{path}: {where}/actions has shape {actions.shape}; expected (T, {act_dim})")
    steps = len(actions)
    obs = {k: _read_steps(group, f"obs/{k}", (steps, obs_dims[k]), where, path) for k in keys}
    rewards = _read_steps(group, "rewards", (steps,), where, path)
    dones = _read_steps(group, "dones", (steps,), where, path).astype(bool)
    if "num_samples" in group.attrs and int(group.attrs["num_samples"]) != steps:
        raise DataError(f"{path}: {where}.attrs['num_samples'] is {int(group.attrs['num_samples'])} but "
                        f"{where}/actions has {steps} steps")
    states = np.asarray(group["states"][:]) if "states" in group else None
    if states is not None and len(states) != steps:
        raise DataError(f"{path}: {where}/states has {len(states)} steps but {where}/actions has {steps}")
    next_obs = ({k: _read_steps(group, f"next_obs/{k}", (steps, obs_dims[k]), where, path) for k in keys}
                if all(f"next_obs/{k}" in group for k in keys) else None)
    successes = _read_steps(group, "success", (steps,), where, path).astype(bool) if "success" in group else None
    return Episode(obs=obs, actions=actions, rewards=rewards, dones=dones, states=states, next_obs=next_obs, name=where,
                   successes=successes)


def _read_steps(group: h5py.Group, key: str, shape: tuple[int, ...], where: str, path: Path) -> np.ndarray:
    value = np.asarray(_require(group, key, path, where)[:], dtype=np.float32)
    if value.shape != shape:
        what = "steps as actions" if value.shape[:1] != shape[:1] else "entries per step"
        raise DataError(f"{path}: {where}/{key} has shape {value.shape}; expected {shape} "
                        f"(the same number of {what})")
    return value


def _require(group: h5py.Group, key: str, path: Path, where: str = "") -> Any:
    if key not in group:
        name = f"{where}/{key}" if where else key
        raise DataError(f"{path}: missing key '{name}' in the robomimic HDF5 layout")
    return group[key]
