"""Pinning a training process's learner thread, and the EnvPool workers it waits on, to one CPU core
(sim.cpu).

Why: an online loop alternates between its own work and waiting for EnvPool's worker to step the envs.
Left to the scheduler, the worker runs on another core and the learner's core idles while it waits; on
a VM, waking an idle vCPU and running on its cold caches costs more than the work itself. With both on
one core the wait is a same-core thread switch: a compiled 64x64 PPO iteration on 8 EnvPool Hopper-v5 envs
took 1.2-1.6x less time on a 2-vCPU VM (README, "Hopper-v5"). Pinning the learner and the worker to
*different* cores was slower than not pinning at all."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from robopol import distributed
from robopol.errors import ConfigError


def learner_core(cpu: int) -> int | None:
    """The core a run with sim.cpu=`cpu` pins to (cpu + LOCAL_RANK under torchrun, one core per
    process), or None for cpu=-1 (no pinning)."""
    if cpu < 0:
        return None
    core = cpu + distributed.local_rank()
    allowed = sorted(os.sched_getaffinity(0))
    if core not in allowed:
        rank = f" + LOCAL_RANK {distributed.local_rank()}" if distributed.local_rank() else ""
        raise ConfigError(f"sim.cpu: {cpu}{rank} is not one of this process's cores; allowed: "
                          f"{', '.join(map(str, allowed))}, or -1 for no pinning")
    return core


@contextmanager
def pinned_learner(cpu: int) -> Iterator[int | None]:
    """Within: the calling (learner) thread pinned to learner_core(cpu), as are threads it starts (None and
    no pinning for cpu=-1); afterwards the thread's previous cores, for a caller that goes on."""
    core, before = learner_core(cpu), os.sched_getaffinity(0)
    if core is None:
        yield None
        return
    os.sched_setaffinity(0, {core})
    try:
        yield core
    finally:
        os.sched_setaffinity(0, before)
