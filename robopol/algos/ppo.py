"""PPO with a Gaussian actor: the baseline every generative policy is measured against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from robopol.algos.on_policy import OnPolicyAlgorithm, OnPolicyConfig, approx_kl, clipped_surrogate
from robopol.policies.gaussian import GaussianActor


@dataclass
class PPOConfig(OnPolicyConfig):
    actor_types: ClassVar[tuple[str, ...]] = ("gaussian",)
    name: str = "ppo"


class PPO(OnPolicyAlgorithm):
    config_class = PPOConfig
    actor: GaussianActor

    def extras_spec(self) -> dict[str, tuple[int, ...]]:
        return {"log_prob": ()}

    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        noise = torch.randn(self.actor.noise_shape(obs.shape[0]))
        return self.actor.sample(obs, noise), {"log_prob": self.actor.noise_log_prob(noise)}

    def policy_loss(self, batch: dict[str, torch.Tensor], adv: torch.Tensor) -> dict[str, torch.Tensor]:
        log_ratio = self.actor.log_prob(batch["obs"], batch["actions"]) - batch["log_prob"]
        loss, clip_fraction = clipped_surrogate(log_ratio.exp(), adv, self.cfg.clip)
        entropy = self.actor.entropy()
        return {"loss": loss - self.cfg.ent_coef * entropy, "approx_kl": approx_kl(log_ratio),
                "clip_fraction": clip_fraction, "entropy": entropy}
