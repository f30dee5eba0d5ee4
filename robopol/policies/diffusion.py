"""Diffusion actor: DDPM with a cosine schedule, or DDIM on a subset of its steps.

Each denoising step is a Gaussian N(mu_theta(x_k, k, s), std_k^2) with std floored at
`min_sampling_std`, so a chain has a tractable log-probability (DPPO's denoising MDP). The last
`ft_denoising_steps` steps may run on a trainable copy of a frozen pretrained network."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from dataclasses import dataclass

from robopol.config import ActorConfig
from robopol.errors import ConfigError
from robopol.policies.base import Actor, ChunkSpec
from robopol.policies.networks import ACTIVATIONS, TimeConditionedMLP
from robopol.typed_config import field

LOG_2PI = math.log(2 * math.pi)


def cosine_alphas_cumprod(steps: int, s: float = 0.008) -> torch.Tensor:
    """alpha-bar_k for k = 0..steps-1 (Nichol & Dhariwal 2021), betas clipped to 0.999."""
    x = torch.linspace(0, steps, steps + 1, dtype=torch.float64)
    f = torch.cos(((x / steps) + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, dim=0)


class DiffusionActor(Actor):
    def __init__(self, spec: ChunkSpec, hidden: Sequence[int] = (256, 256), denoising_steps: int = 20,
                 ddim_steps: int = 0, ft_denoising_steps: int = 0, ddim_eta: float = 1.0,
                 min_sampling_std: float = 0.1, min_logprob_std: float = 0.1, noise_clip: float = 3.0,
                 time_dim: int = 16, activation: str = "mish") -> None:
        super().__init__(spec)
        self.denoising_steps = denoising_steps
        self.model = TimeConditionedMLP(spec.obs_dim, spec.n_obs_steps, spec.act_dim, spec.horizon,
                                        hidden, time_dim, activation)
        self.ft_model: nn.Module | None = None
        self.min_sampling_std, self.min_logprob_std, self.noise_clip = min_sampling_std, min_logprob_std, noise_clip
        self._build_schedule(ddim_steps, ddim_eta)
        self.ft_denoising_steps = ft_denoising_steps or self.num_sampling_steps

    def _build_schedule(self, ddim_steps: int, eta: float) -> None:
        """Per sampling step i: timestep k_i, alpha-bar at k_i and at the next step, and the mean/std coefficients."""
        K = self.denoising_steps
        abar = cosine_alphas_cumprod(K)
        if ddim_steps:
            stride = K // ddim_steps
            ks = torch.arange(K - 1, -1, -stride)[:ddim_steps]
        else:
            ks = torch.arange(K - 1, -1, -1)
        ab = abar[ks]
        ab_prev = torch.cat([abar[ks[1:]], torch.ones(1, dtype=abar.dtype)])
        if ddim_steps:
            std = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()
            coef_x0, coef_eps = ab_prev.sqrt(), (1 - ab_prev - std**2).clamp(min=0).sqrt()
            coef_xt = torch.zeros_like(ab)
        else:  # DDPM posterior q(x_{k-1} | x_k, x0)
            alpha = ab / ab_prev
            coef_x0 = ab_prev.sqrt() * (1 - alpha) / (1 - ab)
            coef_xt = alpha.sqrt() * (1 - ab_prev) / (1 - ab)
            coef_eps = torch.zeros_like(ab)
            std = ((1 - alpha) * (1 - ab_prev) / (1 - ab)).clamp(min=1e-20).sqrt()
        self.ddim = bool(ddim_steps)
        self.num_sampling_steps = len(ks)
        for name, value in dict(k_frac=ks.double() / K, abar=ab, coef_x0=coef_x0, coef_xt=coef_xt,
                                coef_eps=coef_eps, std=std, train_abar=abar).items():
            self.register_buffer(name, value.float(), persistent=False)

    # --- the per-step function DPPO, GPC and QGF work on ---
    def finetune_last(self, steps: int) -> None:
        """Freeze the pretrained network and run the last `steps` sampling steps on a trainable copy."""
        self.ft_denoising_steps = steps
        self.ft_model = copy.deepcopy(self.model)
        self.model.requires_grad_(False)

    def prepare_finetuning(self) -> None:
        if self.ft_denoising_steps < self.num_sampling_steps:
            self.finetune_last(self.ft_denoising_steps)

    def net_for_step(self, i: int) -> nn.Module:
        first_ft = self.num_sampling_steps - self.ft_denoising_steps
        return self.ft_model if self.ft_model is not None and i >= first_ft else self.model

    def denoise_step(self, x: torch.Tensor, i: torch.Tensor, obs: torch.Tensor, net: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and (unfloored) std of p(x_next | x, obs) at sampling steps i (B,), using `net`."""
        def at(coef: torch.Tensor) -> torch.Tensor:
            return coef[i].view(-1, 1, 1)

        eps = net(x, self.k_frac[i], obs)
        ab = at(self.abar)
        x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1.0, 1.0)
        if self.ddim:
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
        return at(self.coef_x0) * x0 + at(self.coef_xt) * x + at(self.coef_eps) * eps, at(self.std)

    def noise_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.num_sampling_steps + 1, self.spec.horizon, self.spec.act_dim)

    def sample_chain(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The fine-tuned part of the chain, (B, ft_denoising_steps + 1, H, A); its last entry is the action."""
        x = noise[:, 0]
        first_ft = self.num_sampling_steps - self.ft_denoising_steps
        chain = [x] if first_ft == 0 else []
        for i in range(self.num_sampling_steps):
            mean, std = self.denoise_step(x, torch.full((x.shape[0],), i), obs, self.net_for_step(i))
            x = mean + std.clamp(min=self.min_sampling_std) * noise[:, i + 1].clamp(-self.noise_clip, self.noise_clip)
            if i + 1 >= first_ft:
                chain.append(x)
        return torch.stack(chain, dim=1)

    def sample(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.sample_chain(obs, noise)[:, -1]

    def chain_log_prob(self, obs: torch.Tensor, chain: torch.Tensor) -> torch.Tensor:
        """Log-prob (B, ft_steps) of each fine-tuned transition: per element, std floored at
        min_logprob_std, clamped to [-5, 2] and averaged over the executed actions (DPPO).
        All steps go through the network in one batch."""
        batch, steps = chain.shape[0], self.ft_denoising_steps
        first_ft = self.num_sampling_steps - steps
        x = chain[:, :-1].reshape(batch * steps, *chain.shape[2:])
        i = torch.arange(first_ft, first_ft + steps).repeat(batch)
        mean, std = self.denoise_step(x, i, obs.repeat_interleave(steps, dim=0), self.net_for_step(first_ft))
        std = std.clamp(min=self.min_logprob_std)
        z = (chain[:, 1:].reshape(x.shape) - mean) / std
        logp = (-0.5 * z.pow(2) - std.log() - 0.5 * LOG_2PI).clamp(-5.0, 2.0)
        return logp[:, : self.spec.n_action_steps].mean(dim=(1, 2)).reshape(batch, steps)

    def loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """epsilon-prediction MSE at a uniformly drawn training timestep."""
        k = torch.randint(0, self.denoising_steps, (obs.shape[0],))
        ab = self.train_abar[k].view(-1, 1, 1)
        eps = torch.randn_like(actions)
        x_k = ab.sqrt() * actions + (1 - ab).sqrt() * eps
        return (self.model(x_k, k.float() / self.denoising_steps, obs) - eps).pow(2).mean()


@dataclass
class DiffusionActorConfig(ActorConfig):
    type: str = "diffusion"
    activation: str = field("mish", choices=tuple(ACTIVATIONS))
    denoising_steps: int = field(20, ge=1)
    ddim_steps: int = field(0, ge=0, doc="0 samples with DDPM over all denoising_steps")
    ft_denoising_steps: int = field(0, ge=0, doc="0 fine-tunes every sampling step")
    ddim_eta: float = field(1.0, ge=0)
    min_sampling_std: float = field(0.1, ge=0)
    min_logprob_std: float = field(0.1, gt=0)
    time_dim: int = field(16, ge=2)

    def __post_init__(self) -> None:
        if self.ddim_steps > self.denoising_steps:
            raise ConfigError(f"policy.actor.ddim_steps: {self.ddim_steps} exceeds denoising_steps={self.denoising_steps}")
        sampling = self.ddim_steps or self.denoising_steps
        if self.ft_denoising_steps > sampling:
            raise ConfigError(f"policy.actor.ft_denoising_steps: {self.ft_denoising_steps} exceeds the {sampling} sampling steps")

    def build(self, spec: ChunkSpec) -> DiffusionActor:
        return DiffusionActor(spec, self.hidden, self.denoising_steps, self.ddim_steps, self.ft_denoising_steps,
                              self.ddim_eta, self.min_sampling_std, self.min_logprob_std, time_dim=self.time_dim,
                              activation=self.activation)
