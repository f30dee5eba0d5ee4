"""Policy inference on a background thread, so the control loop keeps its rate while a chunk is
computed. One request at a time; each result carries the cycle of the observation it was computed
from (for latency compensation) and the episode it belongs to (results from a finished episode are
discarded by the loop)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from robopol.hardware.backend import InferenceBackend
from robopol.hardware.latency import LatencyTracker


@dataclass(frozen=True)
class ChunkResult:
    chunk: np.ndarray  # (horizon, act_dim)
    obs_cycle: int
    episode: int
    latency_s: float
    error: str = ""


class InferenceWorker:
    def __init__(self, backend: InferenceBackend, deterministic: bool = True, seed: int = 0) -> None:
        self.backend = backend
        self.latency = LatencyTracker()
        self._rng = np.random.default_rng(seed)
        self._zeros = np.zeros(backend.spec.noise_shape, dtype=np.float32)
        self._deterministic = deterministic
        self._cond = threading.Condition()
        self._request: tuple[np.ndarray, int, int] | None = None
        self._result: ChunkResult | None = None
        self._closed = False
        self._running = False
        self._thread = threading.Thread(target=self._run, name="robopol-inference", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """A request is queued or running, or its result has not been collected yet."""
        with self._cond:
            return self._request is not None or self._result is not None or self._running

    def submit(self, obs: np.ndarray, obs_cycle: int, episode: int) -> None:
        with self._cond:
            self._request = (obs, obs_cycle, episode)
            self._cond.notify_all()

    def poll(self) -> ChunkResult | None:
        with self._cond:
            result, self._result = self._result, None
            return result

    def wait(self, deadline: float) -> ChunkResult | None:
        """Block until a result is ready or time.perf_counter() reaches `deadline`."""
        with self._cond:
            while self._result is None and (self._request is not None or self._running):
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            result, self._result = self._result, None
            return result

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        torch.set_num_threads(1)  # a per-thread setting (OpenMP): the main thread's call does not reach here
        while True:
            with self._cond:
                while self._request is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                (obs, obs_cycle, episode), self._request = self._request, None
                self._running = True
            noise = self._zeros if self._deterministic else self._rng.standard_normal(self._zeros.shape, np.float32)
            start = time.perf_counter()
            try:
                chunk, error = self.backend(obs, noise)[0], ""
            except Exception as exc:  # reported to the loop, which holds and stops with this message
                chunk, error = np.zeros((0,)), f"{type(exc).__name__}: {exc}"
            latency = time.perf_counter() - start
            self.latency.record(latency)
            with self._cond:
                self._running = False
                self._result = ChunkResult(chunk, obs_cycle, episode, latency, error)
                self._cond.notify_all()
