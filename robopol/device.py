"""Where a run's learner lives (train.device): networks, optimisers, buffers and updates; envs stay on
the CPU and their observations and actions cross once per vector step (robopol.loops.env_batch).

Code that makes tensors (torch.zeros, torch.randn, ...) follows the learner by running inside
`on_device`, which makes the device torch's default; a CPU learner enters no context at all, so CPU
runs execute the very same operations as before the setting existed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from robopol import distributed
from robopol.errors import ConfigError


def resolve_device(setting: str) -> torch.device:
    """auto -> cuda when a GPU is visible, else cpu; under torchrun, `cuda` and `auto` pick the GPU of
    the rank's LOCAL_RANK, one GPU per process."""
    if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"train.device: {setting!r}, but torch {torch.__version__} sees no CUDA GPU; "
                          "allowed here: auto or cpu")
    if setting in ("auto", "cuda"):
        return torch.device("cuda", distributed.local_rank() % torch.cuda.device_count())
    index = int(setting.split(":")[1])
    if index >= torch.cuda.device_count():
        raise ConfigError(f"train.device: {setting!r}, but only {torch.cuda.device_count()} GPU(s) are visible; "
                          f"allowed: cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    return torch.device("cuda", index)


@contextlib.contextmanager
def on_device(device: torch.device) -> Iterator[None]:
    """New tensors on `device` inside the block (torch's default-device mode); nothing at all for the CPU."""
    if device.type == "cpu":
        yield
        return
    with torch.device(device):
        yield


@contextlib.contextmanager
def cpu_side(learner: torch.device) -> Iterator[None]:
    """New tensors on the CPU inside the block, for what stays there (envs, evaluation, deployment) while
    a GPU learner's `on_device` block is open."""
    if learner.type == "cpu":
        yield
        return
    with torch.device("cpu"):
        yield


def to_learner(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor from the envs onto the learner: through pinned memory, without blocking, for a GPU;
    the tensor itself for a CPU learner."""
    if device.type == "cpu":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)
