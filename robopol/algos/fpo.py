"""FPO: PPO for flow policies, with the likelihood ratio replaced by exp(mean l_old - mean l_new),
l the conditional flow-matching loss at Monte-Carlo (t, eps) pairs drawn at rollout time and reused
in the update. FPO++'s per-sample ratio (each l_old_i - l_new_i clipped before exp) and its asymmetric
trust region (PPO clip for positive advantages, SPO for negative ones) are options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from robopol.algos.on_policy import OnPolicyAlgorithm, OnPolicyConfig, approx_kl, clip_fraction, clipped_losses
from robopol.policies.flow import FlowActor
from robopol.typed_config import field


@dataclass
class FPOConfig(OnPolicyConfig):
    actor_types: ClassVar[tuple[str, ...]] = ("flow",)
    name: str = "fpo"
    clip: float = field(0.05, gt=0)
    vf_coef: float = field(0.25, ge=0)
    max_grad_norm: float = field(1.0, gt=0)
    n_mc_samples: int = field(8, ge=1, doc="(t, eps) pairs per action")
    per_sample_ratio: bool = field(False, doc="FPO++: one clipped ratio per (t, eps) pair")
    log_ratio_clip: float = field(3.0, gt=0, doc="FPO++: clip on l_old - l_new before exp")
    trust_region: str = field("ppo", choices=("ppo", "aspo"),
                              doc="aspo (FPO++): SPO's pull-back penalty instead of the clip for negative advantages")


def spo_losses(ratio: torch.Tensor, adv: torch.Tensor, clip: float) -> torch.Tensor:
    """Simple Policy Optimization's objective as a per-sample loss: -(r A - |A| (r - 1)^2 / (2 clip)).
    Its optimum is r = 1 + clip * sign(A), and past it the gradient pulls the ratio back, where a clip
    goes silent and lets the rest of the batch keep pushing a bad action's flow-matching loss up."""
    return -(ratio * adv - adv.abs() * (ratio - 1).pow(2) / (2 * clip))


class FPO(OnPolicyAlgorithm):
    config_class = FPOConfig
    cfg: FPOConfig
    actor: FlowActor

    def extras_spec(self) -> dict[str, tuple[int, ...]]:
        n, spec = self.cfg.n_mc_samples, self.actor.spec
        return {"fpo_t": (n,), "fpo_eps": (n, spec.horizon, spec.act_dim), "fpo_loss": (n,)}

    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch, n = obs.shape[0], self.cfg.n_mc_samples
        actions = self.actor.sample(obs, torch.randn(self.actor.noise_shape(batch)))
        t = torch.rand(batch, n)
        eps = torch.randn(batch, n, *actions.shape[1:])
        losses = self.actor.cfm_losses(obs, actions, t, eps, steps=self.actor.spec.n_action_steps)
        return actions, {"fpo_t": t, "fpo_eps": eps, "fpo_loss": losses}

    def log_ratio(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B,) plain FPO, or (B, N) per-sample clipped FPO++ log-ratios."""
        new = self.actor.cfm_losses(batch["obs"], batch["actions"], batch["fpo_t"], batch["fpo_eps"],
                                    steps=self.actor.spec.n_action_steps)
        diff = batch["fpo_loss"] - new
        if self.cfg.per_sample_ratio:
            return diff.clamp(-self.cfg.log_ratio_clip, self.cfg.log_ratio_clip)
        return diff.mean(dim=1)

    def policy_loss(self, batch: dict[str, torch.Tensor], adv: torch.Tensor) -> dict[str, torch.Tensor]:
        log_ratio = self.log_ratio(batch)
        if log_ratio.dim() == 2:
            adv = adv.unsqueeze(1)
        ratio, clip = log_ratio.exp(), self.cfg.clip
        losses = clipped_losses(ratio, adv, clip)
        if self.cfg.trust_region == "aspo":
            losses = torch.where(adv >= 0, losses, spo_losses(ratio, adv, clip))
        return {"loss": losses.mean(), "approx_kl": approx_kl(log_ratio),
                "clip_fraction": clip_fraction(ratio, clip)}
