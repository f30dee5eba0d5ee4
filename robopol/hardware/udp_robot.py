"""A Robot that speaks the robopol UDP protocol to a robot-side server (real or simulated)."""

from __future__ import annotations

import time

import numpy as np

from robopol.errors import ConfigError, RobopolError
from robopol.hardware.protocol import (MalformedPacket, MsgType, ObservationMsg, decode_observation, decode_spec,
                                       encode_vector)
from robopol.hardware.robot import EpisodeResult, Observation, Robot
from robopol.hardware.transport import UdpEndpoint

HELLO_INTERVAL_S = 0.05


class UdpRobot(Robot):
    def __init__(self, host: str, port: int, obs_dim: int, act_dim: int, connect_timeout_s: float = 2.0) -> None:
        self.host, self.port = host, port
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.connect_timeout_s = connect_timeout_s
        self._link: UdpEndpoint | None = None
        self._latest: Observation | None = None
        self._episodes: list[EpisodeResult] = []

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
        link = UdpEndpoint.client(self.host, self.port)
        deadline = time.monotonic() + self.connect_timeout_s
        try:
            self._handshake(link, deadline)
            self._link = link
            while self._latest is None:
                if time.monotonic() > deadline:
                    raise RobopolError(f"robot at {self.host}:{self.port} answered HELLO but sent no observation "
                                       f"within {self.connect_timeout_s:g}s")
                if (got := link.receive(HELLO_INTERVAL_S)) is not None:
                    self._handle(got[0].msg_type, got[0].payload)
        except BaseException:
            self._link = None
            link.close()
            raise

    def _handshake(self, link: UdpEndpoint, deadline: float) -> None:
        while time.monotonic() < deadline:
            link.send(MsgType.HELLO)
            got = link.receive(min(HELLO_INTERVAL_S, max(deadline - time.monotonic(), 0.0)))
            if got is None or got[0].msg_type != MsgType.SPEC:
                continue
            try:
                spec = decode_spec(got[0].payload)
            except MalformedPacket:
                link.drops["malformed"] += 1
                continue
            if (spec.obs_dim, spec.act_dim) != (self.obs_dim, self.act_dim):
                raise ConfigError(f"robot at {self.host}:{self.port} reports obs_dim={spec.obs_dim}, "
                                  f"act_dim={spec.act_dim}; the hardware config says obs_dim={self.obs_dim}, "
                                  f"act_dim={self.act_dim}")
            return
        raise RobopolError(f"robot at {self.host}:{self.port} did not answer within {self.connect_timeout_s:g}s "
                           f"(is the robot server running and the host/port right?)")

    def disconnect(self) -> None:
        if self._link is None:
            return
        self._link.send(MsgType.STOP)
        self._link.close()
        self._link = None

    def get_observation(self) -> Observation:
        link = self._require_link()
        for packet, _ in link.drain():
            self._handle(packet.msg_type, packet.payload)
        assert self._latest is not None  # connect() waited for the first one
        return self._latest

    def send_action(self, action: np.ndarray) -> None:
        self._require_link().send(MsgType.ACTION, encode_vector(action))

    def episode_results(self) -> list[EpisodeResult]:
        return list(self._episodes)

    def drop_counts(self) -> dict[str, int]:
        return dict(self._link.drops) if self._link is not None else {}

    def _require_link(self) -> UdpEndpoint:
        if self._link is None:
            raise RobopolError(f"robot at {self.host}:{self.port} is not connected; call connect() first")
        return self._link

    def _handle(self, msg_type: MsgType, payload: bytes) -> None:
        if msg_type != MsgType.OBSERVATION:
            return
        try:
            msg: ObservationMsg = decode_observation(payload, self.obs_dim)
        except MalformedPacket:
            if self._link is not None:
                self._link.drops["malformed"] += 1
            return
        if msg.terminated or msg.truncated:
            self._episodes.append(EpisodeResult(msg.episode, msg.episode_return, msg.step, msg.terminated))
        self._latest = Observation(msg.state, time.monotonic(), msg.reward, msg.episode)
