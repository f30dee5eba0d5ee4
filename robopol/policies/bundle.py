"""The policy bundle: what evaluation, export and deploy load from a checkpoint alone.

Named actors (the served one is `actor`), one normaliser and the sampler settings; raw observations
in, env-unit actions out. Built from a running algorithm it holds eval-mode copies, so evaluating
never changes the training actors' mode."""

from __future__ import annotations

import copy

import torch
from torch import nn

from robopol.config import PolicyConfig
from robopol.data.normalizer import Normalizer
from robopol.policies.base import Actor


class PolicyBundle(nn.Module):
    def __init__(self, actors: dict[str, Actor], normalizer: Normalizer, eval_noise: str = "zero") -> None:
        super().__init__()
        if "actor" not in actors:
            raise ValueError(f"a policy bundle serves its 'actor'; got only {sorted(actors)}")
        self.actors = nn.ModuleDict(actors)
        self.actor, self.normalizer, self.eval_noise = actors["actor"], normalizer, eval_noise
        spec = self.actor.spec
        self.obs_dim, self.act_dim = spec.obs_dim, spec.act_dim
        self.n_obs_steps, self.horizon, self.n_action_steps = spec.n_obs_steps, spec.horizon, spec.n_action_steps
        self.action_low = normalizer.action_low.numpy().copy()
        self.action_high = normalizer.action_high.numpy().copy()

    @classmethod
    def of(cls, actors: dict[str, Actor], normalizer: Normalizer, policy: PolicyConfig) -> PolicyBundle:
        """An eval-mode bundle of copies of a training run's actors and normaliser."""
        return cls(copy.deepcopy(actors), copy.deepcopy(normalizer), policy.eval_noise).eval()

    def noise_shape(self, batch: int) -> tuple[int, ...]:
        return self.actor.noise_shape(batch)

    def forward(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """(B, n_obs_steps, obs_dim) raw observations -> (B, horizon, act_dim) actions in env units."""
        return self.normalizer.unnormalize_action(self.actor.sample(self.normalizer.normalize_obs(obs), noise))
