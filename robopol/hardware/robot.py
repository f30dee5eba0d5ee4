"""The Robot interface the control loop drives (after LeRobot's): connect, observe, command, disconnect.

Features are known before connecting, so a checkpoint can be checked against a robot without
touching the hardware. An observation carries the monotonic time it was received, which is what
the watchdog judges staleness by, and the robot's own send time (its header timestamp), which the
log keeps for end-to-end latency."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Observation:
    state: np.ndarray
    received_at: float
    reward: float = 0.0
    episode: int = 0
    robot_time: float = 0.0  # the robot's clock when it sent this frame; 0 if unknown


@dataclass(frozen=True)
class EpisodeResult:
    """A finished episode, reported by simulated robots for evaluation."""

    episode: int
    episode_return: float
    length: int
    terminated: bool


class Robot(abc.ABC):
    @property
    def name(self) -> str:
        """How messages name this robot (a UDP robot: its host:port)."""
        return type(self).__name__

    @property
    @abc.abstractmethod
    def observation_features(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of what `get_observation` returns; `state` is what the policy sees."""

    @property
    @abc.abstractmethod
    def action_features(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of what `send_action` accepts; `action` is the command vector."""

    @property
    @abc.abstractmethod
    def is_connected(self) -> bool: ...

    @abc.abstractmethod
    def connect(self) -> None:
        """Open the link; raise RobopolError naming the robot if it does not answer in time."""

    @abc.abstractmethod
    def disconnect(self) -> None:
        """Tell the robot to enter its own safe state and close the link; safe to call twice."""

    @abc.abstractmethod
    def get_observation(self) -> Observation:
        """The newest observation, without blocking (it may be stale: check `received_at`)."""

    @abc.abstractmethod
    def send_action(self, action: np.ndarray) -> None:
        """Send one command vector, already passed through the safety layer."""

    def episode_results(self) -> list[EpisodeResult]:
        """Episodes finished so far; real robots have none."""
        return []

    def link_stats(self) -> dict[str, Any]:
        """The link's counters: datagrams dropped by kind, lost (sequence gaps), sequence restarts of the
        robot and handshakes; zeros for robots without a lossy link."""
        return {"dropped_packets": {}, "lost_packets": 0, "seq_restarts": 0, "handshakes": 0}

    def __enter__(self) -> Robot:
        self.connect()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.disconnect()
