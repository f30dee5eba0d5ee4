"""The real-time control loop: fixed rate, chunked actions, safety on every command, watchdog.

Each cycle: wait for the tick -> newest observation, checked (NaN / inf / outside obs_bounds: never
given to the policy) -> watchdog -> merge a finished chunk (skipping
the actions whose cycle has passed) -> request the next chunk when few planned actions are left
(the lead grows with the p95 inference latency) -> pop this cycle's action (or HOLD) -> safety ->
send -> log. Inference runs on a background thread; only when nothing at all is planned (start of
an episode) does the loop wait for it, and never past most of the cycle. A policy that returns
NaN/inf, a watchdog STOP or a robot error ends the run: that cycle sends the safe command and is
logged as `stop`, and `DeployAborted` carries the summary."""

from __future__ import annotations

import csv
import math
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import numpy as np

from robopol.errors import RobopolError
from robopol.hardware.backend import InferenceBackend
from robopol.hardware.clock import RateClock
from robopol.hardware.config import HardwareConfig
from robopol.hardware.obs_check import ObservationCheck
from robopol.hardware.robot import Observation, Robot
from robopol.hardware.safety import SafetyLayer
from robopol.hardware.schedule import ActionQueue, TemporalEnsemble
from robopol.hardware.watchdog import State, Watchdog
from robopol.hardware.worker import ChunkResult, InferenceWorker

SYNC_WAIT_FRACTION = 0.7  # an empty queue may wait for inference this far into the cycle
LOG_BUFFER_BYTES = 1 << 20


class DeployAborted(RobopolError):
    """The loop stopped the robot on its own (policy output not finite, watchdog STOP, robot error)."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary


class ControlLoop:
    def __init__(self, robot: Robot, backend: InferenceBackend, cfg: HardwareConfig, log_path: str | Path) -> None:
        spec = backend.spec
        self.robot, self.backend, self.cfg = robot, backend, cfg
        self.log_path = Path(log_path)
        self.clock = RateClock(cfg.control_rate_hz, cfg.clock_spin_s)
        self.dt = self.clock.dt
        hold = np.asarray(cfg.hold_action, dtype=np.float32) if cfg.hold_action is not None else None
        self.safety = SafetyLayer(cfg.limits, self.dt, initial=hold)
        self.hold_action = hold
        self.watchdog = Watchdog(cfg.watchdog)
        self.obs_check = ObservationCheck(cfg.obs_dim, cfg.obs_bounds)
        ch = cfg.chunking
        self.schedule = (TemporalEnsemble(spec.horizon, spec.n_action_steps, spec.act_dim, ch.ensemble_decay)
                         if ch.temporal_ensemble else ActionQueue(spec.horizon, spec.n_action_steps, spec.act_dim))
        self.history: deque[np.ndarray] = deque(maxlen=spec.n_obs_steps)
        self.stop_requested = threading.Event()
        self.counts: Counter[str] = Counter(chunks=0, stale_chunks=0, starved_cycles=0, hold_cycles=0,
                                            deadline_misses=0)

    def run(self, cycles: int | None = None, duration_s: float | None = None) -> dict[str, Any]:
        """Run until `cycles` / `duration_s` / stop_requested; returns the summary (see `summarize`)."""
        if cycles is None and duration_s is None:
            raise RobopolError("run the loop for a number of cycles or a duration; got neither")
        worker = InferenceWorker(self.backend, self.cfg.inference.deterministic, self.cfg.inference.seed)
        self._warm_up(worker)
        lateness, work = [], []
        stop_reason, aborted = "finished", False
        episode, missed = None, False
        checked_at, problem = None, ""
        start = time.perf_counter()
        with self.log_path.open("w", newline="", buffering=LOG_BUFFER_BYTES) as log:
            writer = csv.writer(log)
            writer.writerow(["cycle", "t_s", "lateness_ms", "obs_age_ms", "obs_robot_time", "work_ms", "state",
                             "planned_left", "merged_skip", "missed"] + [f"cmd_{i}" for i in range(self.cfg.act_dim)])
            k = 0
            try:
                while not aborted and not self._done(k, start, cycles, duration_s):
                    skipped_before = self.clock.skipped
                    tick = self.clock.wait()
                    missed = missed or self.clock.skipped > skipped_before
                    obs, failure = self._observe()
                    if obs is not None and obs.received_at != checked_at:  # a new frame: judged (and counted) once
                        checked_at, problem = obs.received_at, self.obs_check.problem(obs.state)
                        if problem:
                            problem = f"{problem} (from {self.cfg.name}, {self.robot.name})"
                    if obs is not None and not problem:
                        if obs.episode != episode:  # a new episode (or the first): old plans no longer apply
                            episode = obs.episode
                            self.history.clear()
                            self.schedule.clear()
                        self.history.append(obs.state)
                    state = State.STOP if obs is None else self.watchdog.update(time.monotonic(), obs.received_at,
                                                                                 missed, problem)
                    action, merged, error = None, -1, ""
                    if state is State.RUN:
                        assert episode is not None  # RUN needs a usable frame, which set it
                        action, merged, error = self._plan(worker, tick.index, tick.scheduled, episode)
                        self.counts["starved_cycles"] += action is None and not error
                    elif state is State.HOLD:  # plans made before the trouble are stale by the time it clears
                        self.schedule.clear()
                        self.counts["hold_cycles"] += 1
                    if state is State.STOP or error:
                        aborted = True
                        stop_reason = (f"robot error at cycle {tick.index}: {failure}" if failure else
                                       f"policy error at cycle {tick.index}: {error}" if error else
                                       f"watchdog STOP at cycle {tick.index}: {self.watchdog.reason}")
                    command = self.safety(self._hold() if action is None else action)
                    self.robot.send_action(command)
                    end = time.perf_counter()
                    missed = end > tick.scheduled + self.dt
                    self.counts["deadline_misses"] += missed
                    lateness.append(tick.lateness)
                    work.append(end - tick.woke)
                    age = "" if obs is None else f"{(time.monotonic() - obs.received_at) * 1e3:.3f}"
                    writer.writerow([tick.index, f"{tick.scheduled - start:.6f}", f"{tick.lateness * 1e3:.4f}", age,
                                     "" if obs is None else f"{obs.robot_time:.6f}", f"{(end - tick.woke) * 1e3:.4f}",
                                     "stop" if aborted else state.value, self.schedule.planned_left(), merged,
                                     int(missed)] + [f"{c:.6g}" for c in command])
                    k += 1
            finally:
                self.robot.send_action(self.safety(self._hold()))  # the final safe command, whatever ended the run
                worker.close()
            elapsed = time.perf_counter() - start
        if self.stop_requested.is_set() and stop_reason == "finished":
            stop_reason = "interrupted"
        summary = self.summarize(k, elapsed, lateness, work, worker, stop_reason)
        if aborted:
            raise DeployAborted(f"deploy stopped the robot: {stop_reason}", summary)
        return summary

    def _observe(self) -> tuple[Observation | None, str]:
        """The newest observation, or None and why the robot could not give one (e.g. a re-handshake
        met a SPEC of other sizes): that ends the run like a watchdog STOP."""
        try:
            return self.robot.get_observation(), ""
        except RobopolError as exc:
            return None, str(exc)

    def _done(self, k: int, start: float, cycles: int | None, duration_s: float | None) -> bool:
        return (self.stop_requested.is_set() or (cycles is not None and k >= cycles)
                or (duration_s is not None and time.perf_counter() - start >= duration_s))

    def _warm_up(self, worker: InferenceWorker, calls: int = 5) -> None:
        """A few calls before the clock starts: first-call allocations and a latency estimate."""
        spec = self.backend.spec
        obs = np.zeros((1, spec.n_obs_steps, spec.obs_dim), dtype=np.float32)
        for i in range(calls + 1):
            worker.submit(obs, 0, -1)
            worker.wait(time.perf_counter() + 10.0)
            if i == 0:  # the first call pays one-off allocations; it would inflate the p95 for a long time
                worker.latency.clear()

    def _plan(self, worker: InferenceWorker, cycle: int, scheduled: float, episode: int) -> tuple[np.ndarray | None, int, str]:
        """This cycle's action (None if nothing is planned), the skip of a merged chunk (-1 if none), an error."""
        merged = -1
        result = worker.poll()
        if result is not None:
            merged, error = self._merge(result, cycle, episode)
            if error:
                return None, merged, error
        lead = max(self.cfg.chunking.queue_threshold, math.ceil(worker.latency.p95 / self.dt))
        if self.schedule.planned_left() <= lead and not worker.busy:
            worker.submit(self._obs_window(), cycle, episode)
        if not len(self.schedule):
            result = worker.wait(scheduled + SYNC_WAIT_FRACTION * self.dt)
            if result is not None:
                merged, error = self._merge(result, cycle, episode)
                if error:
                    return None, merged, error
        return self.schedule.pop(), merged, ""

    def _merge(self, result: ChunkResult, cycle: int, episode: int) -> tuple[int, str]:
        if result.error:
            return -1, result.error
        if not np.all(np.isfinite(result.chunk)):
            return -1, f"the policy returned NaN/inf for the observation of cycle {result.obs_cycle}"
        skip = cycle - result.obs_cycle
        if result.episode != episode or skip >= len(result.chunk):
            self.counts["stale_chunks"] += 1
            return -1, ""
        self.schedule.add(result.chunk, skip)
        self.counts["chunks"] += 1
        return skip, ""

    def _obs_window(self) -> np.ndarray:
        """(1, n_obs_steps, obs_dim); at an episode start the first frame is repeated (as env wrappers do)."""
        frames = list(self.history)
        frames = [frames[0]] * (self.history.maxlen - len(frames)) + frames
        return np.stack(frames)[None].astype(np.float32)

    def _hold(self) -> np.ndarray:
        return self.hold_action if self.hold_action is not None else self.safety.last

    def summarize(self, cycles: int, elapsed: float, lateness: list[float], work: list[float],
                  worker: InferenceWorker, stop_reason: str) -> dict[str, Any]:
        def ms(values: list[float] | np.ndarray, qs: tuple[int, ...] = (50, 99)) -> dict[str, float]:
            arr = np.asarray(values) * 1e3
            out = {f"p{q}": float(np.percentile(arr, q)) if len(arr) else 0.0 for q in qs}
            out["max"] = float(arr.max()) if len(arr) else 0.0
            return out

        episodes = self.robot.episode_results()
        returns = [e.episode_return for e in episodes]
        return {
            "cycles": cycles, "duration_s": elapsed, "rate_hz_target": self.cfg.control_rate_hz,
            "rate_hz_achieved": cycles / elapsed if elapsed > 0 else 0.0,
            "jitter_ms": ms(lateness), "work_ms": ms(work),
            "inference_latency_ms": {"p50": worker.latency.p50 * 1e3, "p95": worker.latency.p95 * 1e3,
                                     "p99": worker.latency.p99 * 1e3},
            **self.counts, "skipped_ticks": self.clock.skipped,
            "watchdog": {"holds": self.watchdog.holds, "recoveries": self.watchdog.recoveries},
            "clamps": dict(self.safety.clamps), "invalid_observations": dict(self.obs_check.rejected),
            **self.robot.link_stats(),
            "episodes": {"count": len(episodes), "returns": returns,
                         "mean_return": float(np.mean(returns)) if returns else None,
                         "mean_length": float(np.mean([e.length for e in episodes])) if episodes else None},
            "backend": self.backend.name, "stop_reason": stop_reason, "log_path": str(self.log_path),
        }
