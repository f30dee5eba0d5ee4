"""The observation gate: a frame holding NaN or inf, or a value outside the hardware file's optional
`obs_bounds`, is never given to the policy. The loop holds on such a frame (the watchdog counts the
hold and stops the robot if it lasts), so a sensor fault cannot drive the robot through the policy."""

from __future__ import annotations

from collections import Counter

import numpy as np

from robopol.hardware.config import ObsBoundsConfig

REJECT_KINDS = ("nonfinite", "out_of_bounds")


class ObservationCheck:
    def __init__(self, obs_dim: int, bounds: ObsBoundsConfig | None = None) -> None:
        self.low = np.full(obs_dim, -np.inf) if bounds is None else np.asarray(bounds.low, float)
        self.high = np.full(obs_dim, np.inf) if bounds is None else np.asarray(bounds.high, float)
        self.rejected: Counter[str] = Counter({kind: 0 for kind in REJECT_KINDS})

    def problem(self, state: np.ndarray) -> str:
        """'' for a usable frame; else what is wrong with its first bad dimension (the frame is counted)."""
        x = np.asarray(state, dtype=float)
        bad = ~np.isfinite(x)
        if bad.any():
            i = int(np.argmax(bad))
            self.rejected["nonfinite"] += 1
            return f"state[{i}]={x[i]} is not finite"
        out = (x < self.low) | (x > self.high)
        if out.any():
            i = int(np.argmax(out))
            self.rejected["out_of_bounds"] += 1
            return f"state[{i}]={x[i]:g} is outside obs_bounds [{self.low[i]:g}, {self.high[i]:g}]"
        return ""
