"""Sum a vector over the ranks of one host through shared memory: per-minibatch gradient averaging, and the
few other small collectives of a training iteration (statistics merges, env-step counts).

Why robopol carries its own: gloo's TCP collectives cost 0.5-2 ms each on a 2-vCPU VM (a scheduling round
trip per message), and data-parallel PPO pays one per minibatch, 320 per Hopper iteration; a sum through
shared memory and spinning on shared counters costs about 60 us there (`mean_` copies a list of gradients
straight into the slot and the mean straight back, saving a flat copy's ~50 us). No library with a CPU
shared-memory collective installs beside torch 2.13 (oneCCL's bindings pin other torch releases, and
torch's MPI backend needs a source build), and gloo stays the transport for everything else.

Protocol, per vector length and dtype (a channel; ranks call in the same order with the same lengths):
call k writes this rank's vector into slot [k % 2, rank], then publishes k in its counter; once every
rank's counter for that phase reaches k, each rank sums the slots in rank order, so the sum is
bit-identical everywhere. Two phases make reuse safe: a rank can only reach call k + 2 after every rank
has entered call k + 1, i.e. has finished reading call k. The data-before-counter visibility this needs
holds on x86-64 (total store order), the only architecture this is used on."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

Layout = tuple[torch.dtype, tuple[tuple[int, ...], ...]]  # a list of tensors' dtype and shapes
SPINS_BEFORE_YIELD = 200  # ~0.5 ms of busy waiting before giving the core to others (a shared machine)


def supported() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


class SharedMemorySum:
    """`sum(flat)`: the element-wise sum of every rank's `flat` (float32 or float64, on the CPU);
    `mean_(tensors)`: each tensor replaced in place by its mean over ranks."""

    def __init__(self, name: str, rank: int, world: int, barrier: Callable[[], None], timeout_s: float) -> None:
        self.name, self.rank, self.world, self.barrier, self.timeout_s = name, rank, world, barrier, timeout_s
        self.channels: dict[tuple[int, torch.dtype], tuple[torch.Tensor, torch.Tensor, list[int]]] = {}
        # per list of tensors (dtype, shapes), made once: for each phase every rank's rows, the counters and this
        # rank's slot split into those shapes; its channel's call count; and a private buffer with the same
        # split that receives the mean
        self.layouts: dict[Layout, tuple[list[tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]], list[int]]] = {}
        self.means: dict[Layout, tuple[torch.Tensor, list[torch.Tensor]]] = {}

    def __call__(self, flat: torch.Tensor) -> torch.Tensor:
        flat = flat.reshape(-1)
        return self._exchange([flat], _key([flat])).sum(0)

    def mean_(self, tensors: list[torch.Tensor]) -> None:
        """Gradient averaging without a flat copy: the tensors go straight into this rank's slot and the mean
        straight back into them (one foreach copy each way, under a third of a cat and split's cost)."""
        key = _key(tensors)
        rows = self._exchange(tensors, key)
        if key not in self.means:
            total = torch.empty(rows.shape[1], dtype=rows.dtype)
            self.means[key] = (total, _split(total, key[1]))
        total, views = self.means[key]
        torch.sum(rows, 0, out=total)
        total.div_(self.world)
        torch._foreach_copy_(tensors, views)

    def _exchange(self, tensors: list[torch.Tensor], key: Layout) -> torch.Tensor:
        """Write this rank's tensors (one dtype, `key` their layout), publish them, wait for every rank's:
        all ranks' rows."""
        if key not in self.layouts:
            data, counters, calls = self._channel(sum(t.numel() for t in tensors), key[0])
            phases = [(data[phase], counters[phase], _split(data[phase, self.rank], key[1])) for phase in (0, 1)]
            self.layouts[key] = (phases, calls)
        phases, calls = self.layouts[key]
        calls[0] += 1
        k = calls[0]
        rows, counters, slots = phases[k % 2]
        torch._foreach_copy_(slots, tensors)
        counters[self.rank] = k
        self._wait(counters, k)
        return rows

    def _wait(self, row: torch.Tensor, k: int) -> None:
        spins, deadline = 0, time.monotonic() + self.timeout_s
        while int(row.min()) < k:
            spins += 1
            if spins > SPINS_BEFORE_YIELD:
                os.sched_yield()
                if spins % 1000 == 0 and time.monotonic() > deadline:
                    late = [r for r in range(self.world) if int(row[r]) < k]
                    raise RuntimeError(f"shared-memory sum: rank(s) {late} gave no vector within {self.timeout_s:g} s")

    def _channel(self, numel: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """The mapped slots and counters for this length, made on first use (a collective: rank 0 creates
        the files, every rank maps them, then rank 0 unlinks them so nothing outlives the processes)."""
        key = (numel, dtype)
        if key not in self.channels:
            stem = Path("/dev/shm" if Path("/dev/shm").is_dir() else tempfile.gettempdir()) / f"{self.name}-{numel}-{dtype}"
            data_path, counter_path = Path(f"{stem}.data"), Path(f"{stem}.counters")
            if self.rank == 0:
                for path, size in ((data_path, 2 * self.world * numel * dtype.itemsize), (counter_path, 2 * self.world * 8)):
                    with open(path, "wb") as f:
                        f.truncate(size)
            self.barrier()
            data = torch.from_file(str(data_path), shared=True, size=2 * self.world * numel, dtype=dtype)
            counters = torch.from_file(str(counter_path), shared=True, size=2 * self.world, dtype=torch.int64)
            self.barrier()
            if self.rank == 0:
                data_path.unlink()
                counter_path.unlink()
            self.channels[key] = (data.view(2, self.world, numel), counters.view(2, self.world), [0])
        return self.channels[key]


def _key(tensors: list[torch.Tensor]) -> Layout:
    return tensors[0].dtype, tuple(tuple(t.shape) for t in tensors)


def _split(flat: torch.Tensor, shapes: tuple[tuple[int, ...], ...]) -> list[torch.Tensor]:
    """Views of consecutive pieces of `flat` with the given shapes."""
    views, offset = [], 0
    for shape in shapes:
        numel = int(torch.Size(shape).numel())
        views.append(flat[offset: offset + numel].view(shape))
        offset += numel
    return views
