"""Normaliser + actor as one module: raw observations in, env-unit actions out.

This is what evaluation, export and the hardware loop run, so a checkpoint alone is enough."""

from __future__ import annotations

import torch
from torch import nn

from robopol.data.normalizer import Normalizer
from robopol.policies.base import Actor


class InferencePolicy(nn.Module):
    def __init__(self, actor: Actor, normalizer: Normalizer) -> None:
        super().__init__()
        self.actor, self.normalizer = actor, normalizer
        spec = actor.spec
        self.obs_dim, self.act_dim = spec.obs_dim, spec.act_dim
        self.n_obs_steps, self.horizon, self.n_action_steps = spec.n_obs_steps, spec.horizon, spec.n_action_steps
        self.action_low = normalizer.action_low.numpy().copy()
        self.action_high = normalizer.action_high.numpy().copy()

    def noise_shape(self, batch: int) -> tuple[int, ...]:
        return self.actor.noise_shape(batch)

    def forward(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """(B, n_obs_steps, obs_dim) raw observations -> (B, horizon, act_dim) actions in env units."""
        return self.normalizer.unnormalize_action(self.actor.sample(self.normalizer.normalize_obs(obs), noise))
