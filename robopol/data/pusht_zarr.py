"""Read and write diffusion_policy's PushT replay buffer (zarr; diffusion_policy wrote format 2,
which zarr 3 reads, and so do we; a `.zip` of the store is read too):

    data/state (N, 5)       agent x, y, block x, y, block angle -- the env's "state" observation
    data/keypoint (N, K, 2) block keypoints (diffusion_policy: 9 pixel-sampled points; robopol: 8 corners)
    data/action (N, 2)      agent target position
    data/img (N, 96, 96, 3), data/n_contacts   optional, not read here
    data/reward (N,)        optional, written by robopol; else recomputed from the block pose
    meta/episode_ends (E,)  exclusive end index of each episode

Episode obs: "state" -> {"state"}; "keypoints" -> {"keypoint" (2K), "agent_pos" (2)}, the layout of
diffusion_policy's PushTLowdimDataset (20 dims with its 9 keypoints, 18 with robopol's 8)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import zarr

from robopol.data.atomic import atomic_output
from robopol.data.episodes import Demonstrations, Episode
from robopol.errors import DataError
from robopol.sim import pusht

OBS_CHOICES = ("state", "keypoints")


def write_pusht_zarr(out: Path, episodes: Sequence[Episode], zarr_format: int = 3) -> Path:
    """Write episodes whose obs hold "state" (T, 5) and "keypoint" (T, 16) atomically as a zarr store."""
    if not episodes:
        raise DataError("write_pusht_zarr: no episodes to write")
    cat = lambda f: np.concatenate([f(ep) for ep in episodes])  # noqa: E731
    arrays = {
        "data/state": cat(lambda ep: ep.obs["state"]).astype(np.float32),
        "data/keypoint": cat(lambda ep: ep.obs["keypoint"]).reshape(-1, 8, 2).astype(np.float32),
        "data/action": cat(lambda ep: ep.actions).astype(np.float32),
        "data/reward": cat(lambda ep: ep.rewards).astype(np.float32),
        "meta/episode_ends": np.cumsum([len(ep) for ep in episodes]).astype(np.int64),
    }
    with atomic_output(Path(out), directory=True) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=zarr_format)
        root.attrs["env_name"] = pusht.ENV_ID
        for name, value in arrays.items():
            root.create_array(name, data=value, chunks=value.shape if name.startswith("meta") else (1024, *value.shape[1:]))
    return Path(out)


def read_pusht_zarr(path: Path, obs: str = "state") -> Demonstrations:
    """Read a PushT replay buffer, validating keys, shapes and episode boundaries."""
    if obs not in OBS_CHOICES:
        raise DataError(f"obs: {obs!r} is not a PushT zarr observation; choose one of: {', '.join(OBS_CHOICES)}")
    root = _open(Path(path))
    env_name = root.attrs.get("env_name", pusht.ENV_ID)
    if env_name != pusht.ENV_ID:
        raise DataError(f"{path}: attrs['env_name'] is {env_name!r}, but PushT expects {pusht.ENV_ID!r}; "
                        "the store was made for another task")
    state = _array(root, "data/state", path, (5,)).astype(np.float32)
    n = len(state)
    action = _array(root, "data/action", path, (2,), n).astype(np.float32)
    ends = _episode_ends(root, path, n)
    reward = (_array(root, "data/reward", path, (), n).astype(np.float32) if "reward" in root["data"]
              else pusht.reward(state[:, 2:5]).astype(np.float32))
    if obs == "state":
        parts = {"state": state}
    else:
        kp = _array(root, "data/keypoint", path, None, n).astype(np.float32)
        if kp.ndim != 3 or kp.shape[2] != 2:
            raise DataError(f"{path}: data/keypoint has shape {kp.shape}; expected (N, K, 2)")
        parts = {"keypoint": kp.reshape(n, -1), "agent_pos": state[:, :2]}
    done = reward >= 1.0
    done[ends - 1] = True
    split = lambda a: np.split(a, ends[:-1])  # noqa: E731
    pieces = {k: split(v) for k, v in parts.items()}
    episodes = [Episode(obs={k: pieces[k][i] for k in parts}, actions=a, rewards=r, dones=d, name=f"episode {i}")
                for i, (a, r, d) in enumerate(zip(split(action), split(reward), split(done)))]
    return Demonstrations(task="pusht", obs_keys=tuple(parts), episodes=episodes,
                          env_args={"env_name": pusht.ENV_ID, "env_kwargs": {"obs_type": obs}})


def _open(path: Path) -> zarr.Group:
    if not path.exists():
        raise DataError(f"{path}: no such zarr store")
    try:
        store = zarr.storage.ZipStore(path, mode="r") if path.suffix == ".zip" else str(path)
        root = zarr.open_group(store, mode="r")
    except Exception as exc:  # zarr raises several error types for unreadable stores
        raise DataError(f"{path}: not a readable zarr store ({type(exc).__name__}: {exc})") from None
    for group in ("data", "meta"):
        if group not in root:
            raise DataError(f"{path}: missing group '{group}' in the PushT replay buffer layout")
    return root


def _array(root: zarr.Group, key: str, path: Path, tail: tuple[int, ...] | None, n: int | None = None) -> np.ndarray:
    group, name = key.split("/")
    if name not in root[group]:
        raise DataError(f"{path}: missing key '{key}' in the PushT replay buffer layout")
    value = np.asarray(root[key][:])
    if tail is not None and value.shape[1:] != tail:
        expected = "(N" + "".join(f", {d}" for d in tail) + ")"
        raise DataError(f"{path}: {key} has shape {value.shape}; expected {expected}")
    if n is not None and len(value) != n:
        raise DataError(f"{path}: {key} has {len(value)} rows but data/state has {n}; they must match")
    return value


def _episode_ends(root: zarr.Group, path: Path, n: int) -> np.ndarray:
    ends = _array(root, "meta/episode_ends", path, ()).astype(np.int64)
    if len(ends) == 0 or ends[-1] != n or np.any(np.diff(np.concatenate([[0], ends])) <= 0):
        raise DataError(f"{path}: meta/episode_ends must be strictly increasing positive indices ending at "
                        f"len(data/state) = {n}; got {ends[:5].tolist()}{' ...' if len(ends) > 5 else ''} (last {ends[-1:].tolist()})")
    return ends
