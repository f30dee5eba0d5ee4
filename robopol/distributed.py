"""Multi-process training on torch.distributed, one process per rank as torchrun starts them.

`torchrun --nproc_per_node N -m robopol train ...` sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous;
`session` joins the process group (gloo for CPU learners, NCCL for GPUs) with a collective timeout, so
a rank that dies or stalls makes the others fail within `timeout_s` instead of waiting forever (and
torchrun itself stops the remaining ranks once one exits with an error). Without torchrun nothing here
does anything: a single process runs exactly as it always has.

What crosses ranks: every optimiser step's gradients (summed over ranks and averaged, registered as a global
optimiser step pre-hook so each algorithm's step passes through it and its own pre-hooks, such as
gradient clipping, see the averaged gradient), running-statistics moments (an exact parallel mean /
variance merge, once per collection), the env steps each iteration made (all of these through shared
memory when every rank shares one CPU host, as gloo's per-message latency would dominate small networks'
minibatch steps), the early-stop KL, and per-rank checkpoint state (gathered to rank 0, the only rank
that logs, evaluates and writes the run folder)."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.optim.optimizer import register_optimizer_step_pre_hook

from robopol import shared_memory_sum
from robopol.errors import RobopolError


_local_sum: shared_memory_sum.SharedMemorySum | None = None  # while a gloo session's ranks share one x86-64 host


class RankLostError(RobopolError):
    """Another rank died or stopped answering: this one stops too, with one line."""


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank: the process group's, or torchrun's RANK before the group is joined."""
    return dist.get_rank() if active() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """Whether torchrun (or another launcher setting WORLD_SIZE) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


@contextlib.contextmanager
def session(device: torch.device, timeout_s: float) -> Iterator[None]:
    """Join the process group torchrun set up for the run's duration; a collective that waits longer
    than `timeout_s` on a lost rank raises RankLostError."""
    if not launched() or active():
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    global _local_sum
    if backend == "gloo" and shared_memory_sum.supported() and _one_host():
        _local_sum = shared_memory_sum.SharedMemorySum(from_main(f"robopol-{uuid.uuid4().hex}"), rank(), world_size(),
                                                       dist.barrier, timeout_s)
    hook = register_optimizer_step_pre_hook(_average_gradients)
    try:
        yield
        if backend == "gloo":
            # Leave together: the main rank may still be evaluating, and a gloo rank that tore the group down
            # meanwhile sometimes aborted at exit ("terminate called without an active exception"). No time
            # limit past the run's own: the wait is on the main rank's final evaluation, not on a collective.
            dist.monitored_barrier(timeout=timedelta(days=7))
    except (RuntimeError, dist.DistBackendError) as exc:
        if isinstance(exc, RobopolError):
            raise
        raise RankLostError(f"rank {rank()} of {world_size()}: a collective failed, so another rank died or stopped "
                            f"answering within train.dist_timeout_s={timeout_s:g} ({_gist(exc)}); see that rank's "
                            "output for its error") from None
    finally:
        hook.remove()
        _local_sum = None
        dist.destroy_process_group()


def _one_host() -> bool:
    """Whether every rank runs on this machine (same host name and boot)."""
    boot = Path("/proc/sys/kernel/random/boot_id")
    me = (socket.gethostname(), boot.read_text().strip() if boot.exists() else "")
    everyone: list[Any] = [None] * world_size()
    dist.all_gather_object(everyone, me)
    return all(other == me for other in everyone)


def _gist(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def average_gradients(params: list[torch.Tensor]) -> None:
    """Replace each parameter's gradient by its mean over ranks, in one collective. Parameters without
    a gradient (a frozen actor during critic warm-up) are the same on every rank and are left out."""
    average_([p.grad for p in params if p.grad is not None])


def average_(tensors: list[torch.Tensor]) -> None:
    """Replace each tensor by its element-wise mean over ranks, in one collective."""
    if not tensors or not active():
        return
    if _local_sum is not None and all(t.dtype == tensors[0].dtype for t in tensors):
        _local_sum.mean_(tensors)  # in place, no flat copy: PPO pays this once per minibatch
        return
    flat = _sum_over_ranks(torch.cat([t.reshape(-1) for t in tensors])) / world_size()
    offset = 0
    for t in tensors:
        t.copy_(flat[offset: offset + t.numel()].view_as(t))
        offset += t.numel()


def _sum_over_ranks(flat: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of every rank's `flat`, the same on every rank: through shared memory when the
    ranks share a host and the CPU (robopol.shared_memory_sum), else one all-reduce (NCCL, several hosts)."""
    if _local_sum is not None:
        return _local_sum(flat)
    dist.all_reduce(flat)
    return flat


def _gather_rows(mine: torch.Tensor) -> torch.Tensor:
    """Every rank's 1-D `mine` stacked in rank order, on the CPU: a sum of rows that are zero except each
    rank's own (exact, x + 0 = x) through shared memory where the ranks share a host, else all_gather."""
    if _local_sum is not None:
        rows = torch.zeros(world_size(), mine.numel(), dtype=mine.dtype)
        rows[rank()] = mine
        return _local_sum(rows).view(world_size(), mine.numel())
    parts = [torch.empty_like(mine) for _ in range(world_size())]
    dist.all_gather(parts, mine)
    return torch.stack(parts).cpu()


def _average_gradients(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    average_gradients([p for group in optimizer.param_groups for p in group["params"]])


def merge_moments(mean: torch.Tensor, var: torch.Tensor, count: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Population mean, variance and count of the union of every rank's samples, from each rank's own
    (Chan et al.'s parallel merge, exact up to rounding); the inputs unchanged in a single process."""
    if not active():
        return mean, var, count
    device, dtype = mean.device, mean.dtype
    mine = torch.cat([torch.tensor([float(count)], dtype=torch.float64), mean.double().cpu().reshape(-1),
                      var.double().cpu().reshape(-1)]).to(_comm_device())
    table = _gather_rows(mine)
    n, means, variances = table[:, :1], table[:, 1: 1 + mean.numel()], table[:, 1 + mean.numel():]
    total = n.sum()
    merged_mean = (n * means).sum(0) / total
    merged_var = (n * (variances + (means - merged_mean).pow(2))).sum(0) / total
    return (merged_mean.reshape(mean.shape).to(device, dtype), merged_var.reshape(var.shape).to(device, dtype),
            float(total))


def sum_over_ranks(value: int) -> int:
    """An integer summed over ranks (env steps each made in an iteration)."""
    if not active():
        return value
    total = _sum_over_ranks(torch.tensor([value], dtype=torch.float64, device=_comm_device()))
    return int(total.item())  # exact below 2**53


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """A scalar averaged over ranks, for a decision every rank must take alike (PPO's KL early stop:
    ranks that stopped after different epochs would wait on each other's collectives)."""
    if not active():
        return value
    total = _sum_over_ranks(value.detach().reshape(1).to(_comm_device(), torch.float64))
    return (total / world_size()).to(value.device, value.dtype).reshape(value.shape)


def broadcast_modules(modules: dict[str, torch.nn.Module]) -> None:
    """Rank 0's weights and buffers on every rank, so all ranks start from one network."""
    if not active():
        return
    for module in modules.values():
        for tensor in [*module.parameters(), *module.buffers()]:
            data = tensor.data.to(_comm_device())
            dist.broadcast(data, 0)
            tensor.data.copy_(data)


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's `obj` on rank 0 (in rank order), None elsewhere; [obj] in a single process."""
    if not active():
        return [obj]
    out: list[Any] | None = [None] * world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out


def from_main(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (a run folder named from the clock, say)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
