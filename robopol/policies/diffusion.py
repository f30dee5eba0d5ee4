"""Diffusion actor: DDPM with a cosine schedule, or DDIM on a subset of its steps.

Each denoising step is a Gaussian N(mu_theta(x_k, k, s), std_k^2) with std floored at
`min_sampling_std`, so a chain has a tractable log-probability (DPPO's denoising MDP). The last
`ft_denoising_steps` steps may run on a trainable copy of a frozen pretrained network. The steps
follow robopol.policies.generative's contract: `predict` is the eps network, `step` the scheduler."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from robopol.errors import ConfigError
from robopol.policies.backbones import GenerativeActorConfig
from robopol.policies.base import ChunkSpec
from robopol.policies.generative import GenerativeActor, Hook, at_step, run_steps, velocity_from_eps, vp_flow_grid
from robopol.policies.networks import ACTIVATIONS, TimeConditionedMLP
from robopol.typed_config import field


def cosine_alphas_cumprod(steps: int, s: float = 0.008) -> torch.Tensor:
    """alpha-bar_k for k = 0..steps-1 (Nichol & Dhariwal 2021), betas clipped to 0.999."""
    x = torch.linspace(0, steps, steps + 1, dtype=torch.float64)
    f = torch.cos(((x / steps) + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, dim=0)


class DiffusionActor(GenerativeActor):
    prediction = "eps"

    def __init__(self, spec: ChunkSpec, hidden: Sequence[int] = (256, 256), denoising_steps: int = 20,
                 ddim_steps: int = 0, ft_denoising_steps: int = 0, ddim_eta: float = 1.0,
                 min_sampling_std: float = 0.1, min_logprob_std: float = 0.1, noise_clip: float = 3.0,
                 time_dim: int = 16, activation: str = "mish", net: nn.Module | None = None) -> None:
        """`net` replaces the default MLP eps network (hidden, time_dim, activation) when given."""
        super().__init__(spec)
        self.denoising_steps = denoising_steps
        self.model = net if net is not None else TimeConditionedMLP(
            spec.obs_dim, spec.n_obs_steps, spec.act_dim, spec.horizon, hidden, time_dim, activation)
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
        flow_t, flow_scale = vp_flow_grid(torch.cat([ab, torch.ones(1, dtype=ab.dtype)]))
        for name, value in dict(k_frac=ks.double() / K, abar=ab, coef_x0=coef_x0, coef_xt=coef_xt,
                                coef_eps=coef_eps, std=std, train_abar=abar, flow_t=flow_t,
                                flow_scale=flow_scale).items():
            self.register_buffer(name, value.float(), persistent=False)

    def finetune_last(self, steps: int) -> None:
        """Freeze the pretrained network and run the last `steps` sampling steps on a trainable copy."""
        self.ft_denoising_steps = steps
        self.ft_model = copy.deepcopy(self.model)
        self.model.requires_grad_(False)

    def prepare_finetuning(self) -> None:
        if self.ft_denoising_steps < self.num_sampling_steps:
            self.finetune_last(self.ft_denoising_steps)

    def net_for_step(self, i: int) -> nn.Module:
        return self.ft_model if self.ft_model is not None and i >= self.chain_start else self.model

    @property
    def chain_start(self) -> int:
        """DPPO's chain is the fine-tuned part: the last ft_denoising_steps steps."""
        return self.num_sampling_steps - self.ft_denoising_steps

    # --- the step-level contract (robopol.policies.generative) ---
    def predict(self, x: torch.Tensor, i: int | torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """eps at step i; (N,) indices come from the batched log-prob, which scores only chain steps."""
        net = self.net_for_step(i if isinstance(i, int) else self.chain_start)
        return net(x, self.k_frac[i], obs)

    def denoised(self, x: torch.Tensor, eps: torch.Tensor, i: int | torch.Tensor) -> torch.Tensor:
        """The estimate of the clean chunk that step i moves towards: x0 from eps, clipped to [-1, 1]."""
        ab = at_step(self.abar, i)
        return ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1.0, 1.0)

    def _eps_of(self, x: torch.Tensor, x0: torch.Tensor, i: int | torch.Tensor) -> torch.Tensor:
        """The eps that, with x0, makes up x at step i (x = sqrt(abar) x0 + sqrt(1 - abar) eps)."""
        ab = at_step(self.abar, i)
        return (x - ab.sqrt() * x0) / (1 - ab).sqrt()

    def step_mean(self, x: torch.Tensor, pred: torch.Tensor, i: int | torch.Tensor) -> torch.Tensor:
        """DDPM's posterior mean given the clipped x0, or DDIM's update with the eps consistent with it."""
        x0 = self.denoised(x, pred, i)
        eps = self._eps_of(x, x0, i) if self.ddim else pred
        return at_step(self.coef_x0, i) * x0 + at_step(self.coef_xt, i) * x + at_step(self.coef_eps, i) * eps

    def step(self, x: torch.Tensor, pred: torch.Tensor, i: int, noise: torch.Tensor | None) -> torch.Tensor:
        """DPPO's exploration: std floored at min_sampling_std, noise clipped at +-noise_clip."""
        mean = self.step_mean(x, pred, i)
        if noise is None:
            return mean
        return mean + at_step(self.std, i).clamp(min=self.min_sampling_std) * noise.clamp(-self.noise_clip, self.noise_clip)

    def log_prob_std(self, i: torch.Tensor) -> torch.Tensor:
        return at_step(self.std, i).clamp(min=self.min_logprob_std)

    def to_eps(self, x: torch.Tensor, pred: torch.Tensor, i: int | torch.Tensor) -> torch.Tensor:
        """The eps of the step this actor takes: consistent with the clipped x0 (pred where x0 is in range)."""
        return self._eps_of(x, self.denoised(x, pred, i), i)

    def to_velocity(self, x: torch.Tensor, pred: torch.Tensor, i: int | torch.Tensor) -> torch.Tensor:
        """v = eps - x0 of the step this actor takes, at the flow state x / flow_scale[i]."""
        return velocity_from_eps(x / at_step(self.flow_scale, i), self.to_eps(x, pred, i), at_step(self.flow_t, i))

    def noise_shape(self, batch: int) -> tuple[int, ...]:
        return self.chain_noise_shape(batch)

    def sample(self, obs: torch.Tensor, noise: torch.Tensor, hook: Hook | None = None) -> torch.Tensor:
        """The last state of the stochastic chain; zero step noise gives the deterministic mode."""
        return run_steps(self, obs, noise[:, 0], noise[:, 1:], hook, keep_from=self.num_sampling_steps)[-1]

    def loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """epsilon-prediction MSE at a uniformly drawn training timestep."""
        k = torch.randint(0, self.denoising_steps, (obs.shape[0],))
        ab = self.train_abar[k].view(-1, 1, 1)
        eps = torch.randn_like(actions)
        x_k = ab.sqrt() * actions + (1 - ab).sqrt() * eps
        return (self.model(x_k, k.float() / self.denoising_steps, obs) - eps).pow(2).mean()


@dataclass
class DiffusionActorConfig(GenerativeActorConfig):
    type: str = "diffusion"
    activation: str = field("mish", choices=tuple(ACTIVATIONS))
    denoising_steps: int = field(20, ge=1)
    ddim_steps: int = field(0, ge=0, doc="0 samples with DDPM over all denoising_steps")
    ft_denoising_steps: int = field(0, ge=0, doc="0 fine-tunes every sampling step")
    ddim_eta: float = field(1.0, ge=0)
    min_sampling_std: float = field(0.1, ge=0)
    min_logprob_std: float = field(0.1, gt=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ddim_steps > self.denoising_steps:
            raise ConfigError(f"policy.actor.ddim_steps: {self.ddim_steps} exceeds denoising_steps={self.denoising_steps}")
        sampling = self.ddim_steps or self.denoising_steps
        if self.ft_denoising_steps > sampling:
            raise ConfigError(f"policy.actor.ft_denoising_steps: {self.ft_denoising_steps} exceeds the {sampling} sampling steps")

    def build(self, spec: ChunkSpec) -> DiffusionActor:
        return DiffusionActor(spec, self.hidden, self.denoising_steps, self.ddim_steps, self.ft_denoising_steps,
                              self.ddim_eta, self.min_sampling_std, self.min_logprob_std, time_dim=self.time_dim,
                              activation=self.activation, net=self.network(spec))
