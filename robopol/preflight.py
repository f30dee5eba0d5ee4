"""Checks that run before any long work, so a run does not fail at its end (or take the machine
down) for a reason that was knowable at its start: every output path writable and outside any
checkpoint, and the memory the resource-hungry settings ask for available.

The memory estimate is coarse on purpose: per-env figures measured on this project's machine
(Hopper-v5 1.1 MB, PushT 0.01 MB, robosuite Lift 111 MB, an async worker process 8 MB of its own),
rounded up, plus the buffers' exact tensor sizes. A run that needs more than the memory available
now is refused; one that needs more than half of it gets a warning."""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from robopol.config import RunConfig, TaskConfig
from robopol.errors import ConfigError

ENV_MB = {"gym": 2.0, "pusht": 0.05, "robomimic": 120.0}  # per env instance; other backends: DEFAULT_ENV_MB
DEFAULT_ENV_MB = 2.0
ASYNC_WORKER_MB = 20.0
WARN_FRACTION = 0.5
log = logging.getLogger(__name__)


def checkpoint_folder_of(path: str | Path) -> Path | None:
    """The checkpoint folder (model.safetensors + config.json) or checkpoints/ folder (LATEST) that
    `path` is, or lies inside; None if it is in neither."""
    for folder in (p := Path(path).absolute(), *p.parents):
        if (folder / "model.safetensors").is_file() and (folder / "config.json").is_file():
            return folder
        if (folder / "LATEST").is_file() and folder.name == "checkpoints":
            return folder
    return None


def check_run_folder(path: str | Path) -> None:
    """`resume` extends a run from its run folder only: refuse a checkpoint (or checkpoints/) folder,
    which it would otherwise turn into a run of its own, and a path that is no folder at all."""
    path = Path(path)
    inside = checkpoint_folder_of(path)
    if inside is not None:
        run = inside.parent if inside.name == "checkpoints" else inside.parent.parent
        hint = f"robopol resume {run}" if (run / "checkpoints" / "LATEST").is_file() else "the run folder"
        raise ConfigError(f"resume: {path} is a checkpoint folder, not a run folder; a run is extended only from "
                          f"its run folder ({hint})")
    if not path.is_dir():
        what = "is a file" if path.exists() else "does not exist"
        raise ConfigError(f"resume: {path} {what}; give a run folder written by `robopol train` or `robopol pretrain`")


def check_writable(path: str | Path, what: str, directory: bool = True) -> None:
    """Refuse an output `path` (a folder, or a file if not `directory`) that cannot be written: one
    inside a checkpoint, a file where a folder is wanted or the reverse, a parent that is a file, or a
    place without write permission (probed by creating and removing a temporary file)."""
    path = Path(path)
    inside = checkpoint_folder_of(path)
    if inside is not None:
        raise ConfigError(f"{what}: {path} is inside the checkpoint folder {inside}; checkpoints are never written "
                          "into, choose another place")
    if path.exists() and path.is_dir() != directory:
        kind, want = ("folder", "a file name") if path.is_dir() else ("file", "a folder")
        raise ConfigError(f"{what}: {path} is an existing {kind}; give {want}")
    probe = path if directory and path.is_dir() else path.parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{what}: cannot create {path}: {probe} is a file, not a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=".robopol-probe-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise ConfigError(f"{what}: cannot write {path}: {probe} is not writable ({exc.strerror})") from None


@dataclass(frozen=True)
class MemoryUse:
    key: str  # the setting that drives it
    value: int
    mb: float


def env_memory(task: TaskConfig, count: int, key: str, vectorization: str = "sync") -> MemoryUse:
    per_env = ENV_MB.get(task.backend, DEFAULT_ENV_MB) + (ASYNC_WORKER_MB if vectorization == "async" else 0.0)
    return MemoryUse(key, count, count * per_env)


def estimate_memory(cfg: RunConfig, obs_dim: int, act_dim: int) -> list[MemoryUse]:
    """What a run's envs (training and the side-by-side evaluation episodes) and buffers take."""
    pol, sim = cfg.policy, cfg.sim
    obs, chunk = pol.n_obs_steps * obs_dim, pol.horizon * act_dim
    uses = [env_memory(cfg.task, sim.num_envs, "sim.num_envs", sim.vectorization),
            env_memory(cfg.task, cfg.train.eval_episodes, "train.eval_episodes")]
    buffer_size = getattr(pol.algo, "buffer_size", None)
    if buffer_size is not None:  # the replay: 2 observations + a chunk in float32, 25 bytes of flags per transition,
        rows = math.ceil(buffer_size / sim.num_envs) * sim.num_envs  # and its copy while a checkpoint is written
        uses.append(MemoryUse("policy.algo.buffer_size", buffer_size, 2 * rows * (4 * (2 * obs + chunk) + 25) / 1e6))
    else:  # on-policy rollout: observation, chunk and a few scalars per sample (algorithm extras not counted)
        samples = cfg.train.rollout_steps * sim.num_envs
        uses.append(MemoryUse("train.rollout_steps", cfg.train.rollout_steps, samples * 4 * (obs + chunk + 8) / 1e6))
    return uses


def check_memory(uses: list[MemoryUse], available_mb: float | None = None) -> None:
    """Refuse when the estimate exceeds the memory available now; warn above WARN_FRACTION of it."""
    available_mb = available_memory_mb() if available_mb is None else available_mb
    total = sum(u.mb for u in uses)
    if available_mb is None or total <= WARN_FRACTION * available_mb:
        return
    top = max(uses, key=lambda u: u.mb)
    parts = ", ".join(f"{u.key}={u.value}: {_size(u.mb)}" for u in sorted(uses, key=lambda u: -u.mb) if u.mb >= 1)
    message = f"this needs about {_size(total)} of memory ({parts}) and {_size(available_mb)} is available"
    if total > available_mb:
        raise ConfigError(f"{top.key}: {top.value} is too large: {message}; lower {top.key}")
    log.warning(f"warning: {message}")


def available_memory_mb() -> float | None:
    """MemAvailable from /proc/meminfo (Linux); None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _size(mb: float) -> str:
    for unit, scale in (("TB", 1024**2), ("GB", 1024)):
        if mb >= scale:
            return f"{mb / scale:.1f} {unit}"
    return f"{mb:.0f} MB"


def preflight_run(cfg: RunConfig, run_dir: Path) -> None:
    """Everything `train` / `pretrain` / `resume` can check before writing into `run_dir`: the folder,
    the task, a pretrained checkpoint, an offline algorithm's dataset, and the memory the run needs."""
    from robopol.checkpoint import load_checkpoint
    from robopol.data.datasets import check_dimensions, load_demonstrations
    from robopol.sim.factory import env_spec

    check_writable(run_dir, "train.run_dir")
    obs_dim, act_dim, _, _ = env_spec(cfg.task)
    if cfg.train.pretrained:
        load_checkpoint(cfg.train.pretrained)
    dataset = getattr(cfg.policy.algo, "dataset", None)
    if dataset is not None:
        demos = load_demonstrations(dataset, cfg.task, drop_bad=getattr(cfg.policy.algo, "drop_bad_episodes", False))
        check_dimensions(demos, dataset, cfg.task, obs_dim, act_dim)
    check_memory(estimate_memory(cfg, obs_dim, act_dim))
