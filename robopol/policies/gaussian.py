"""Diagonal Gaussian actor, tanh-free: the PPO baseline (and GoRL's latent policy)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from robopol.config import ActorConfig
from robopol.policies.base import LOG_2PI, Actor, ChunkSpec
from robopol.policies.networks import mlp


class GaussianActor(Actor):
    """a = mu(s) + exp(log_std) * noise, with a state-independent log_std per action element."""

    def __init__(self, spec: ChunkSpec, hidden: Sequence[int] = (64, 64), activation: str = "tanh",
                 init_log_std: float = 0.0) -> None:
        super().__init__(spec)
        chunk = spec.horizon * spec.act_dim
        self.mean_net = mlp(spec.obs_dim * spec.n_obs_steps, hidden, chunk, activation, out_gain=0.01)
        self.log_std = nn.Parameter(torch.full((spec.horizon, spec.act_dim), float(init_log_std)))

    def noise_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.spec.horizon, self.spec.act_dim)

    def mean(self, obs: torch.Tensor) -> torch.Tensor:
        return self.mean_net(obs.reshape(obs.shape[0], -1)).reshape(-1, self.spec.horizon, self.spec.act_dim)

    def sample(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.mean(obs) + self.log_std.exp() * noise

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Log-density of the executed part of each chunk, summed over its elements: (B,)."""
        steps = self.spec.n_action_steps
        mean = self.mean(obs)[:, :steps]
        log_std = self.log_std[:steps]
        z = (actions[:, :steps] - mean) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std - 0.5 * LOG_2PI).sum(dim=(1, 2))

    def noise_log_prob(self, noise: torch.Tensor) -> torch.Tensor:
        """log_prob(obs, sample(obs, noise)) without a second forward pass: (a - mu) / std is the noise."""
        steps = self.spec.n_action_steps
        return (-0.5 * noise[:, :steps].pow(2) - self.log_std[:steps] - 0.5 * LOG_2PI).sum(dim=(1, 2))

    def entropy(self) -> torch.Tensor:
        return (self.log_std[: self.spec.n_action_steps] + 0.5 * (1.0 + LOG_2PI)).sum()

    def loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return -self.log_prob(obs, actions).mean()


@dataclass
class GaussianActorConfig(ActorConfig):
    type: str = "gaussian"
    init_log_std: float = 0.0

    def build(self, spec: ChunkSpec) -> GaussianActor:
        return GaussianActor(spec, self.hidden, self.activation, self.init_log_std)
