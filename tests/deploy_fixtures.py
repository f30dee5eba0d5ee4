"""Shared helpers for the deploy tests: tiny policies and an in-process robot with a scripted stream."""

from __future__ import annotations

import time

import numpy as np
import torch

from robopol.data.normalizer import Normalizer
from robopol.hardware.config import HardwareConfig, load_hardware_config
from robopol.hardware.robot import Observation, Robot
from robopol.policies.base import ChunkSpec
from robopol.policies.diffusion import DiffusionActor
from robopol.policies.flow import FlowActor
from robopol.policies.bundle import PolicyBundle


def tiny_policy(kind: str = "flow", obs_dim: int = 4, act_dim: int = 1, horizon: int = 8, n_action_steps: int = 4,
                n_obs_steps: int = 2, bound: float = 3.0, seed: int = 0) -> PolicyBundle:
    """flow (K=10), ddim (5 of 20) or ddpm (20): small random networks, the real sampler code."""
    torch.manual_seed(seed)
    spec = ChunkSpec(obs_dim, act_dim, n_obs_steps, horizon, n_action_steps)
    actor = {"flow": lambda: FlowActor(spec, hidden=(32, 32), num_steps=10),
             "ddim": lambda: DiffusionActor(spec, hidden=(32, 32), denoising_steps=20, ddim_steps=5),
             "ddpm": lambda: DiffusionActor(spec, hidden=(32, 32), denoising_steps=20)}[kind]()
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


class ScriptedRobot(Robot):
    """In-process robot: fresh observations until `stop_after` calls, then the stream goes silent."""

    def __init__(self, obs_dim: int, act_dim: int, stop_after: int | None = None) -> None:
        self.obs_dim, self.act_dim, self.stop_after = obs_dim, act_dim, stop_after
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
            self._last = Observation(np.full(self.obs_dim, 0.01 * self.calls, np.float32), time.monotonic())
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
    for key, value in overrides.items():
        obj = cfg
        *path, last = key.split(".")
        for part in path:
            obj = getattr(obj, part)
        setattr(obj, last, value)
    return cfg
