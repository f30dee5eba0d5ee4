"""Tanh-squashed Gaussian actor with state-dependent std: SAC's policy.

a = tanh(mu(s) + exp(log_std(s)) * noise), so actions lie in (-1, 1), the normalised action range;
zero noise gives the deterministic mode tanh(mu(s)). Log-probs are summed over the whole chunk's
elements with the change-of-variables term log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robopol.config import ActorConfig
from robopol.errors import ConfigError
from robopol.policies.base import LOG_2PI, Actor, ChunkSpec
from robopol.policies.networks import ACTIVATIONS, mlp
from robopol.typed_config import field

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # SB3's and the SAC paper's clamp


class TanhGaussianActor(Actor):
    def __init__(self, spec: ChunkSpec, hidden: Sequence[int] = (256, 256), activation: str = "relu") -> None:
        super().__init__(spec)
        self.chunk = spec.horizon * spec.act_dim
        self.trunk = mlp(spec.obs_dim * spec.n_obs_steps, hidden[:-1], hidden[-1], activation)
        self.trunk.append(ACTIVATIONS[activation]())
        self.head = nn.Linear(hidden[-1], 2 * self.chunk)

    def noise_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.spec.horizon, self.spec.act_dim)

    def distribution(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mu and log_std (B, chunk) of the pre-squash Gaussian."""
        mu, log_std = self.head(self.trunk(obs.reshape(obs.shape[0], -1))).chunk(2, dim=-1)
        return mu, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        mu, log_std = self.distribution(obs)
        return torch.tanh(mu + log_std.exp() * noise.reshape(mu.shape)).reshape(noise.shape)

    def sample_with_log_prob(self, obs: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised actions (B, H, A) and their log-density (B,) in the squashed space."""
        mu, log_std = self.distribution(obs)
        flat = noise.reshape(mu.shape)
        u = mu + log_std.exp() * flat
        gauss = (-0.5 * flat.pow(2) - log_std - 0.5 * LOG_2PI).sum(dim=-1)
        squash = (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(dim=-1)
        return torch.tanh(u).reshape(noise.shape), gauss - squash

    def loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of demonstrated chunks (behaviour cloning), actions clipped inside (-1, 1)."""
        mu, log_std = self.distribution(obs)
        a = actions.reshape(mu.shape).clamp(-1 + 1e-6, 1 - 1e-6)
        u = torch.atanh(a)
        z = (u - mu) * torch.exp(-log_std)
        gauss = (-0.5 * z.pow(2) - log_std - 0.5 * LOG_2PI).sum(dim=-1)
        squash = (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(dim=-1)
        return -(gauss - squash).mean()


@dataclass
class TanhGaussianActorConfig(ActorConfig):
    type: str = "tanh_gaussian"
    hidden: list[int] = field(gt=0, default_factory=lambda: [256, 256])
    activation: str = field("relu", choices=tuple(ACTIVATIONS))

    def __post_init__(self) -> None:
        if not self.hidden:
            raise ConfigError("policy.actor.hidden: [] is not allowed; the tanh-Gaussian actor needs at least one layer")

    def build(self, spec: ChunkSpec) -> TanhGaussianActor:
        return TanhGaussianActor(spec, self.hidden, self.activation)
