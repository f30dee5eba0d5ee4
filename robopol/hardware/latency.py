"""Inference latency over a sliding window: the loop sizes its request lead and skips stale
actions of a new chunk by these percentiles, and the summary reports them."""

from __future__ import annotations

import numpy as np


class LatencyTracker:
    def __init__(self, window: int = 512) -> None:
        self._samples = np.zeros(window)
        self._count = 0
        self._sorted: np.ndarray | None = None

    def record(self, seconds: float) -> None:
        self._samples[self._count % len(self._samples)] = seconds
        self._count += 1
        self._sorted = None

    def clear(self) -> None:
        self._count = 0
        self._sorted = None

    def __len__(self) -> int:
        return min(self._count, len(self._samples))

    def percentile(self, q: float) -> float:
        """q-th percentile (0-100, nearest rank) of the window in seconds; 0.0 before the first sample.
        Read every cycle but written once per chunk, so the sorted window is cached."""
        if not len(self):
            return 0.0
        if self._sorted is None:
            self._sorted = np.sort(self._samples[: len(self)])
        return float(self._sorted[min(int(q / 100 * len(self._sorted)), len(self._sorted) - 1)])

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p95(self) -> float:
        return self.percentile(95)

    @property
    def p99(self) -> float:
        return self.percentile(99)
