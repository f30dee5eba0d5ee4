"""The last line before the wire: every command is clamped to the configured limits, counted per kind.

Order: non-finite entries -> previous command; position limits; workspace box; velocity limit
(velocity_max * dt from the previous command); per-step delta limit. Each clamp moves the command
towards a point that already satisfies every earlier constraint, so the result satisfies all of
them. The float32 rounding of the wire format is corrected inwards, so the command sent never sits
one rounding step outside a limit written as a decimal in the config."""

from __future__ import annotations

from collections import Counter

import numpy as np

from robopol.hardware.config import LimitsConfig

CLAMP_KINDS = ("nonfinite", "position", "workspace", "velocity", "delta")


class SafetyLayer:
    def __init__(self, limits: LimitsConfig, dt: float, initial: np.ndarray | None = None) -> None:
        self.pos_low, self.pos_high = np.asarray(limits.position_low, float), np.asarray(limits.position_high, float)
        self.box_low, self.box_high = self.pos_low.copy(), self.pos_high.copy()
        if limits.workspace is not None:
            dims = list(limits.workspace.dims)
            self.box_low[dims] = np.maximum(self.box_low[dims], limits.workspace.low)
            self.box_high[dims] = np.minimum(self.box_high[dims], limits.workspace.high)
        self.velocity_step = np.asarray(limits.velocity_max, float) * dt
        self.delta_step = np.asarray(limits.delta_max, float)
        self.clamps: Counter[str] = Counter({kind: 0 for kind in CLAMP_KINDS})
        self.reset(np.zeros_like(self.pos_low) if initial is None else initial)

    def reset(self, command: np.ndarray) -> None:
        """Set the previous command (the robot's current target) the rate limits start from."""
        inside = np.minimum(np.maximum(np.asarray(command, float), self.box_low), self.box_high)
        self.last = self._to_float32(inside, self.box_low, self.box_high, fallback=inside.astype(np.float32))

    def __call__(self, command: np.ndarray) -> np.ndarray:
        """The safe float32 command closest (constraint by constraint, in order) to `command`."""
        last = self.last.astype(float)
        a = np.array(command, dtype=float).reshape(last.shape)
        bad = ~np.isfinite(a)
        if bad.any():
            a[bad] = last[bad]
            self.clamps["nonfinite"] += 1
        a = self._clamp("position", a, self.pos_low, self.pos_high)
        a = self._clamp("workspace", a, self.box_low, self.box_high)
        a = self._clamp("velocity", a, last - self.velocity_step, last + self.velocity_step)
        a = self._clamp("delta", a, last - self.delta_step, last + self.delta_step)
        low = np.maximum(self.box_low, last - np.minimum(self.velocity_step, self.delta_step))
        high = np.minimum(self.box_high, last + np.minimum(self.velocity_step, self.delta_step))
        self.last = self._to_float32(a, low, high, fallback=self.last)
        return self.last.copy()

    def _clamp(self, kind: str, a: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        clamped = np.minimum(np.maximum(a, low), high)
        if (clamped != a).any():
            self.clamps[kind] += 1
        return clamped

    @staticmethod
    def _to_float32(a: np.ndarray, low: np.ndarray, high: np.ndarray, fallback: np.ndarray) -> np.ndarray:
        """Round to float32 without leaving [low, high]: one step inwards where rounding stepped out;
        `fallback` (already inside) where the interval is narrower than a float32 step."""
        out = a.astype(np.float32)
        over, under = out > high, out < low
        if over.any() or under.any():
            out = np.where(over, np.nextafter(out, np.float32(-np.inf)), out)
            out = np.where(under, np.nextafter(out, np.float32(np.inf)), out)
            out = np.where((out > high) | (out < low), fallback, out).astype(np.float32)
        return out
