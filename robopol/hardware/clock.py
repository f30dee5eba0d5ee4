"""Fixed-rate ticks on the monotonic clock.

`time.sleep` alone wakes 50-150 us late, and on a virtual machine whose idle vCPU the host has
descheduled, now and then several ms late; so the clock sleeps until `spin_s` before the tick and
busy-waits the rest (yielding the GIL on every turn, so an inference thread is not starved). A loop that falls more than a whole period
behind skips the ticks it cannot catch up (counted) instead of bursting to make them up."""

from __future__ import annotations

import time
from dataclasses import dataclass

DEFAULT_SPIN_S = 0.002


@dataclass(frozen=True)
class Tick:
    index: int
    scheduled: float  # perf_counter seconds the tick was due
    woke: float       # perf_counter seconds the caller got control back

    @property
    def lateness(self) -> float:
        return self.woke - self.scheduled


class RateClock:
    def __init__(self, rate_hz: float, spin_s: float = DEFAULT_SPIN_S) -> None:
        self.dt = 1.0 / rate_hz
        self.spin_s = spin_s
        self.skipped = 0
        self._t0: float | None = None
        self._index = -1

    def wait(self) -> Tick:
        """Block until the next tick; the first call starts the clock and returns at once."""
        now = time.perf_counter()
        if self._t0 is None:
            self._t0, self._index = now, 0
            return Tick(0, now, now)
        self._index += 1
        target = self._t0 + self._index * self.dt
        if now - target > self.dt:
            behind = int((now - target) / self.dt)
            self._index += behind
            self.skipped += behind
            target += behind * self.dt
        if target - now > self.spin_s:
            time.sleep(target - now - self.spin_s)
        while time.perf_counter() < target:
            time.sleep(0)
        return Tick(self._index, target, time.perf_counter())
