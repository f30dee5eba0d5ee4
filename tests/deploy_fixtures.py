"""Shared helpers for the deploy tests: tiny policies, a backend that records what the policy was
given, an in-process robot with a scripted stream and a robot side written against the wire format
alone (FakeRobot), whose misbehaviour a test picks."""

from __future__ import annotations

import select
import socket
import threading
import time

import numpy as np
import torch

from robopol.data.normalizer import Normalizer
from robopol.hardware.backend import InferenceBackend
from robopol.hardware.config import HardwareConfig, load_hardware_config
from robopol.hardware.protocol import (MsgType, ObservationMsg, PacketError, Spec, decode, encode, encode_observation,
                                       encode_spec)
from robopol.hardware.robot import Observation, Robot
from robopol.policies.base import ChunkSpec
from robopol.policies.diffusion import DiffusionActor
from robopol.policies.flow import FlowActor
from robopol.policies.bundle import PolicyBundle
from robopol.policies.unet import TemporalUnet


def tiny_policy(kind: str = "flow", obs_dim: int = 4, act_dim: int = 1, horizon: int = 8, n_action_steps: int = 4,
                n_obs_steps: int = 2, bound: float = 3.0, seed: int = 0, backbone: str = "mlp") -> PolicyBundle:
    """flow (K=10), ddim (5 of 20) or ddpm (20): small random networks (an MLP, or a two-level U-Net
    with backbone="unet"), the real sampler code."""
    torch.manual_seed(seed)
    spec = ChunkSpec(obs_dim, act_dim, n_obs_steps, horizon, n_action_steps)
    net = TemporalUnet(obs_dim, n_obs_steps, act_dim, horizon, (8, 16), 3, 4, 8) if backbone == "unet" else None
    actor = {"flow": lambda: FlowActor(spec, hidden=(32, 32), num_steps=10, net=net),
             "ddim": lambda: DiffusionActor(spec, hidden=(32, 32), denoising_steps=20, ddim_steps=5, net=net),
             "ddpm": lambda: DiffusionActor(spec, hidden=(32, 32), denoising_steps=20, net=net)}[kind]()
    return PolicyBundle({"actor": actor}, Normalizer(obs_dim, -bound * np.ones(act_dim), bound * np.ones(act_dim))).eval()


class NanPolicy(torch.nn.Module):
    """Returns NaN actions: what a diverged checkpoint looks like to the loop."""

    def __init__(self, policy: PolicyBundle) -> None:
        super().__init__()
        self.inner = policy
        for name in ("obs_dim", "act_dim", "n_obs_steps", "horizon", "n_action_steps", "action_low", "action_high"):
            setattr(self, name, getattr(policy, name))

    def noise_shape(self, batch: int) -> tuple[int, ...]:
        return self.inner.noise_shape(batch)

    def forward(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.inner(obs, noise) * float("nan")


class RecordingBackend(InferenceBackend):
    """Passes calls to `inner` and keeps every observation window the policy was given."""

    def __init__(self, inner: InferenceBackend) -> None:
        super().__init__(inner.spec)
        self.inner, self.name = inner, inner.name
        self.seen: list[np.ndarray] = []

    def __call__(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        self.seen.append(obs.copy())
        return self.inner(obs, noise)


class ScriptedRobot(Robot):
    """In-process robot: fresh observations until `stop_after` calls, then the stream goes silent.
    `frames` maps a call index to the state returned at that call (e.g. a faulty sensor reading)."""

    def __init__(self, obs_dim: int, act_dim: int, stop_after: int | None = None,
                 frames: dict[int, np.ndarray] | None = None) -> None:
        self.obs_dim, self.act_dim, self.stop_after = obs_dim, act_dim, stop_after
        self.frames = frames or {}
        self.sent: list[np.ndarray] = []
        self.calls = 0
        self._connected = False
        self._last: Observation | None = None

    @property
    def observation_features(self) -> dict[str, tuple[int, ...]]:
        return {"state": (self.obs_dim,)}

    @property
    def action_features(self) -> dict[str, tuple[int, ...]]:
        return {"action": (self.act_dim,)}

    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        self._connected = True

    def disconnect(self) -> None:
        self._connected = False

    def get_observation(self) -> Observation:
        if self._last is None or self.stop_after is None or self.calls < self.stop_after:
            state = self.frames.get(self.calls, np.full(self.obs_dim, 0.01 * self.calls, np.float32))
            self._last = Observation(np.asarray(state, np.float32), time.monotonic())
        self.calls += 1
        return self._last

    def send_action(self, action: np.ndarray) -> None:
        self.sent.append(np.asarray(action).copy())


def pendulum_config(**overrides: object) -> HardwareConfig:
    """The shipped InvertedPendulum hardware config, faster (100 Hz) for tests, with overrides."""
    cfg = load_hardware_config("sim_inverted_pendulum")
    cfg.control_rate_hz = 100.0
    assert cfg.sim is not None
    cfg.sim.rate_hz = 100.0
    cfg.watchdog.obs_timeout_s = 0.05
    for key, value in overrides.items():
        obj = cfg
        *path, last = key.split(".")
        for part in path:
            obj = getattr(obj, part)
        setattr(obj, last, value)
    return cfg


class FakeRobot:
    """A robot side on a thread, written against the wire format alone: answers HELLO with a SPEC
    (`spec_payload` replaces a well-formed one), streams observations at `rate_hz` (unless `stream` is
    False) and restarts its sequence count once after `restart_after` observations, as a rebooted robot
    would. `received` lists the message types it got, in order."""

    def __init__(self, obs_dim: int = 4, act_dim: int = 1, rate_hz: float = 100.0, answer: bool = True,
                 stream: bool = True, restart_after: int | None = None, spec_payload: bytes | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.spec_payload = spec_payload if spec_payload is not None else encode_spec(Spec(obs_dim, act_dim, rate_hz))
        self.obs_dim, self.period, self.answer, self.stream = obs_dim, 1.0 / rate_hz, answer, stream
        self.restart_after = restart_after
        self.received: list[MsgType] = []
        self.sent_obs = 0
        self._seq, self._client = 0, None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5.0)
        self.sock.close()

    def __enter__(self) -> FakeRobot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, msg_type: MsgType, payload: bytes) -> None:
        self.sock.sendto(encode(msg_type, self._seq, time.monotonic(), payload), self._client)
        self._seq += 1

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._closed.is_set():
            if select.select([self.sock], [], [], max(next_tick - time.monotonic(), 0.0))[0]:
                data, addr = self.sock.recvfrom(4096)
                try:
                    packet = decode(data)
                except PacketError:
                    continue
                self.received.append(packet.msg_type)
                if packet.msg_type is MsgType.HELLO and self.answer:
                    self._client = addr
                    self._send(MsgType.SPEC, self.spec_payload)
                continue
            next_tick += self.period
            if self._client is not None and self.stream:
                if self.sent_obs == self.restart_after:
                    self._seq = 0
                state = np.full(self.obs_dim, 0.001 * self.sent_obs, np.float32)
                self._send(MsgType.OBSERVATION, encode_observation(ObservationMsg(state)))
                self.sent_obs += 1
