"""An unusable or stale observation, or repeated deadline misses -> HOLD; a HOLD that lasts too long -> STOP.

HOLD is recoverable (the trouble clears -> RUN); STOP latches, because a robot that has been
without fresh data for that long must be looked at by a person before it moves again."""

from __future__ import annotations

import enum

from robopol.hardware.config import WatchdogConfig


class State(enum.Enum):
    RUN = "run"
    HOLD = "hold"
    STOP = "stop"


class Watchdog:
    def __init__(self, cfg: WatchdogConfig) -> None:
        self.cfg = cfg
        self.state = State.RUN
        self.reason = ""
        self.misses_in_row = 0
        self.holds = 0
        self.recoveries = 0
        self._hold_since = 0.0

    def update(self, now: float, obs_received_at: float, missed_deadline: bool, obs_problem: str = "") -> State:
        """Judge one cycle; `now` and `obs_received_at` on the same monotonic clock; `obs_problem` says
        why the newest observation may not be used ('' if it may)."""
        if self.state is State.STOP:
            return self.state
        self.misses_in_row = self.misses_in_row + 1 if missed_deadline else 0
        age = now - obs_received_at
        trouble = ""
        if obs_problem:
            trouble = f"unusable observation: {obs_problem}"
        elif age > self.cfg.obs_timeout_s:
            trouble = f"observation is {age * 1e3:.1f} ms old (> obs_timeout_s={self.cfg.obs_timeout_s:g})"
        elif self.misses_in_row >= self.cfg.max_deadline_misses:
            trouble = f"{self.misses_in_row} deadline misses in a row (max_deadline_misses={self.cfg.max_deadline_misses})"
        if not trouble:
            if self.state is State.HOLD:
                self.state, self.reason = State.RUN, ""
                self.recoveries += 1
            return self.state
        if self.state is State.RUN:
            self.state, self.reason, self._hold_since = State.HOLD, trouble, now
            self.holds += 1
        elif now - self._hold_since > self.cfg.hold_timeout_s:
            self.state = State.STOP
            self.reason = f"held for more than hold_timeout_s={self.cfg.hold_timeout_s:g}: {trouble}"
        return self.state
