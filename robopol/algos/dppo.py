"""DPPO: the denoising chain as an inner MDP. Every (env sample, fine-tuned denoising step) pair is a
PPO sample scored by that step's Gaussian log-prob; its advantage is the env-level GAE advantage
discounted by gamma_denoising^(K' - k - 1), and its clip range grows from `clip_base` at the noisiest
step to `clip` at the last one."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from robopol.algos.on_policy import OnPolicyAlgorithm, OnPolicyConfig, approx_kl, clipped_surrogate
from robopol.errors import ConfigError
from robopol.policies.diffusion import DiffusionActor
from robopol.typed_config import field


@dataclass
class DPPOConfig(OnPolicyConfig):
    actor_types: ClassVar[tuple[str, ...]] = ("diffusion",)
    name: str = "dppo"
    lr: float = field(1e-4, gt=0)
    critic_lr: float = field(1e-3, gt=0)
    clip: float = field(0.01, gt=0, doc="clip at the last denoising step")
    clip_base: float = field(1e-3, gt=0, doc="clip at the first (noisiest) fine-tuned step")
    clip_rate: float = field(3.0, gt=0, doc="exponential growth rate of the clip across steps")
    gamma_denoising: float = field(0.99, gt=0, le=1)
    critic_warmup_iters: int = field(2, ge=0)
    target_kl: float = field(1.0, ge=0)
    logprob_min: float = field(-5.0, doc="each element's denoising log-density is clamped to [logprob_min, logprob_max]")
    logprob_max: float = field(2.0, doc="before the mean over executed actions (DPPO's normalisation)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.logprob_min < self.logprob_max:
            raise ConfigError(f"policy.algo.logprob_min: {self.logprob_min} must be below logprob_max={self.logprob_max}")


def denoising_clip_schedule(steps: int, base: float, last: float, rate: float) -> torch.Tensor:
    """Clip per fine-tuned step, exponential from `base` (first) to `last` (final step)."""
    if steps == 1:
        return torch.tensor([last])
    frac = torch.linspace(0, 1, steps)
    return base + (last - base) * (torch.exp(rate * frac) - 1) / (math.exp(rate) - 1)


class DPPO(OnPolicyAlgorithm):
    config_class = DPPOConfig
    cfg: DPPOConfig
    actor: DiffusionActor

    def extras_spec(self) -> dict[str, tuple[int, ...]]:
        steps, spec = self.actor.ft_denoising_steps, self.actor.spec
        return {"chain": (steps + 1, spec.horizon, spec.act_dim), "log_prob": (steps,)}

    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        chain = self.actor.sample_chain(obs, torch.randn(self.actor.noise_shape(obs.shape[0])))
        return chain[:, -1], {"chain": chain, "log_prob": self.log_prob(obs, chain)}

    def log_prob(self, obs: torch.Tensor, chain: torch.Tensor) -> torch.Tensor:
        """DPPO's log-prob (B, ft_steps) of each denoising step: per element, std floored at the actor's
        min_logprob_std, clamped to [logprob_min, logprob_max], averaged over the executed actions."""
        densities = self.actor.step_log_densities(obs, chain).clamp(self.cfg.logprob_min, self.cfg.logprob_max)
        return densities[:, :, : self.actor.spec.n_action_steps].mean(dim=(2, 3))

    def policy_loss(self, batch: dict[str, torch.Tensor], adv: torch.Tensor) -> dict[str, torch.Tensor]:
        steps = self.actor.ft_denoising_steps
        log_ratio = self.log_prob(batch["obs"], batch["chain"]) - batch["log_prob"]
        discount = self.cfg.gamma_denoising ** torch.arange(steps - 1, -1, -1, dtype=torch.float32)
        clip = denoising_clip_schedule(steps, self.cfg.clip_base, self.cfg.clip, self.cfg.clip_rate)
        loss, clip_fraction = clipped_surrogate(log_ratio.exp(), adv.unsqueeze(1) * discount, clip)
        return {"loss": loss, "approx_kl": approx_kl(log_ratio), "clip_fraction": clip_fraction}
