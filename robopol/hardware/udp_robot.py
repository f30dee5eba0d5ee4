"""A Robot that speaks the robopol UDP protocol (docs/protocol.md) to a robot-side server, real or simulated.

The session starts with HELLO, repeated until the robot's SPEC (sizes checked) and a first
OBSERVATION arrive. Whenever the robot's sequence count restarts mid-session (it rebooted), the
session is opened again the same way: observations are ignored until the new SPEC has been checked,
so the loop holds meanwhile instead of acting on a robot it has not identified. Once the socket is
open, every way out (a failed handshake included) sends STOP."""

from __future__ import annotations

import socket
import time
from typing import Any

import numpy as np

from robopol.errors import ConfigError, RobopolError
from robopol.hardware.protocol import (MsgType, ObservationMsg, Packet, PacketError, Spec, decode_observation,
                                       decode_spec, encode_vector)
from robopol.hardware.robot import EpisodeResult, Observation, Robot
from robopol.hardware.transport import UdpEndpoint

HELLO_INTERVAL_S = 0.05
STOP_REPEATS = 3  # STOP is not acknowledged; sending it thrice makes losing all of them unlikely


class UdpRobot(Robot):
    def __init__(self, host: str, port: int, obs_dim: int, act_dim: int, connect_timeout_s: float = 2.0) -> None:
        self.host, self.port = host, port
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.connect_timeout_s = connect_timeout_s
        self.spec: Spec | None = None  # the robot's SPEC from the newest handshake
        self._link: UdpEndpoint | None = None
        self._latest: Observation | None = None
        self._episodes: list[EpisodeResult] = []
        self._hello_at: float | None = None  # monotonic time of the last HELLO while a handshake is open
        self._handshakes = 0
        self._restarts_seen = 0

    @property
    def name(self) -> str:
        return f"robot at {self.host}:{self.port}"

    @property
    def observation_features(self) -> dict[str, tuple[int, ...]]:
        return {"state": (self.obs_dim,)}

    @property
    def action_features(self) -> dict[str, tuple[int, ...]]:
        return {"action": (self.act_dim,)}

    @property
    def is_connected(self) -> bool:
        return self._link is not None

    def connect(self) -> None:
        """HELLO until the robot answers with its SPEC and a first observation, or fail naming host:port."""
        if self._link is not None:
            return
        self._link = self._open()
        deadline = time.monotonic() + self.connect_timeout_s
        try:
            self._start_handshake()
            while self._hello_at is not None or self._latest is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RobopolError(self._silence_message())
                self._poll(min(HELLO_INTERVAL_S, remaining))
        except BaseException:
            self.disconnect()
            raise

    def disconnect(self) -> None:
        if self._link is None:
            return
        for _ in range(STOP_REPEATS):
            self._link.send(MsgType.STOP)
        self._link.close()
        self._link = None

    def get_observation(self) -> Observation:
        self._require_link()
        self._poll(0.0)
        assert self._latest is not None  # connect() waited for the first one
        return self._latest

    def send_action(self, action: np.ndarray) -> None:
        self._require_link().send(MsgType.ACTION, encode_vector(action))

    def episode_results(self) -> list[EpisodeResult]:
        return list(self._episodes)

    def link_stats(self) -> dict[str, Any]:
        link = self._link
        if link is None:
            return super().link_stats()
        return {"dropped_packets": dict(link.drops), "lost_packets": link.lost, "seq_restarts": link.restarts,
                "handshakes": self._handshakes}

    def _open(self) -> UdpEndpoint:
        try:
            return UdpEndpoint.client(self.host, self.port)
        except socket.gaierror as exc:
            raise RobopolError(f"robot.host={self.host!r} cannot be resolved ({exc.strerror}); give an IP address "
                               f"or a host name this machine can resolve") from None
        except OSError as exc:
            raise RobopolError(f"cannot open a UDP socket to {self.name}: {exc.strerror or exc}") from None

    def _require_link(self) -> UdpEndpoint:
        if self._link is None:
            raise RobopolError(f"{self.name} is not connected; call connect() first")
        return self._link

    def _start_handshake(self) -> None:
        self._handshakes += 1
        self._send_hello()

    def _send_hello(self) -> None:
        self._require_link().send(MsgType.HELLO)
        self._hello_at = time.monotonic()

    def _poll(self, timeout: float) -> None:
        """Handle what has arrived (waiting up to `timeout` for the first packet); repeat HELLO while a
        handshake is open."""
        link = self._require_link()
        got = link.receive(timeout)
        while got is not None:
            if link.restarts != self._restarts_seen:  # the robot rebooted: identify it again
                self._restarts_seen = link.restarts
                self._start_handshake()
            self._handle(got[0])
            got = link.receive(0.0)
        if self._hello_at is not None and time.monotonic() - self._hello_at >= HELLO_INTERVAL_S:
            self._send_hello()

    def _handle(self, packet: Packet) -> None:
        link = self._require_link()
        try:
            if packet.msg_type is MsgType.SPEC:
                self._accept_spec(decode_spec(packet.payload))
            elif packet.msg_type is MsgType.OBSERVATION and self._hello_at is None:
                self._accept_observation(decode_observation(packet.payload, self.obs_dim), packet.timestamp)
            else:  # a robot never sends HELLO / ACTION / STOP; observations before the SPEC are not trusted
                link.drops["unexpected"] += 1
        except PacketError as exc:
            link.drops[exc.kind] += 1

    def _accept_spec(self, spec: Spec) -> None:
        if (spec.obs_dim, spec.act_dim) != (self.obs_dim, self.act_dim):
            raise ConfigError(f"{self.name} reports obs_dim={spec.obs_dim}, act_dim={spec.act_dim}; the hardware "
                              f"config says obs_dim={self.obs_dim}, act_dim={self.act_dim}")
        self.spec = spec
        self._hello_at = None

    def _accept_observation(self, msg: ObservationMsg, robot_time: float) -> None:
        if msg.terminated or msg.truncated:
            self._episodes.append(EpisodeResult(msg.episode, msg.episode_return, msg.step, msg.terminated))
        self._latest = Observation(msg.state, time.monotonic(), msg.reward, msg.episode, robot_time)

    def _silence_message(self) -> str:
        if self.spec is not None:
            return (f"{self.name} answered HELLO but sent no observation within {self.connect_timeout_s:g}s")
        other = self._require_link().drops["wrong_version"]
        hint = (f"; it sent {other} datagram(s) of another protocol version" if other else
                " (is the robot server running and the host/port right?)")
        return f"{self.name} did not answer within {self.connect_timeout_s:g}s{hint}"
