"""Flow-matching actor: rectified path x_t = t * eps + (1 - t) * a, Euler integration from t=1 to t=0.

The velocity target along that path is eps - a. FPO scores actions by the conditional flow-matching
loss at stored (t, eps) pairs; OGPO needs a stochastic sampler whose steps have Gaussian likelihoods."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from dataclasses import dataclass

from robopol.config import ActorConfig
from robopol.policies.base import Actor, ChunkSpec
from robopol.policies.networks import ACTIVATIONS, TimeConditionedMLP
from robopol.typed_config import field

LOG_2PI = math.log(2 * math.pi)


class FlowActor(Actor):
    def __init__(self, spec: ChunkSpec, hidden: Sequence[int] = (256, 256), num_steps: int = 10,
                 time_dim: int = 16, activation: str = "mish") -> None:
        super().__init__(spec)
        self.num_steps = num_steps
        self.velocity_net = TimeConditionedMLP(spec.obs_dim, spec.n_obs_steps, spec.act_dim, spec.horizon,
                                               hidden, time_dim, activation)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        return self.velocity_net(x, t, obs)

    def noise_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.spec.horizon, self.spec.act_dim)

    def sample(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Deterministic Euler ODE from x_1 = noise; zero noise gives FPO++'s deterministic evaluation."""
        x, dt = noise, 1.0 / self.num_steps
        for i in range(self.num_steps):
            x = x - dt * self.velocity(x, torch.tensor(1.0 - i * dt), obs)
        return x

    def cfm_losses(self, obs: torch.Tensor, actions: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                   steps: int | None = None) -> torch.Tensor:
        """Per-sample conditional flow-matching losses (B, N) at given t (B, N) and eps (B, N, H, A),
        averaged over the first `steps` actions of the chunk (all by default)."""
        batch, n = t.shape
        steps = steps or self.spec.horizon
        a = actions.unsqueeze(1)
        tt = t[..., None, None]
        x_t = tt * eps + (1.0 - tt) * a
        obs_rep = obs.unsqueeze(1).expand(batch, n, *obs.shape[1:]).reshape(batch * n, *obs.shape[1:])
        v = self.velocity(x_t.reshape(batch * n, *x_t.shape[2:]), t.reshape(-1), obs_rep)
        err = (v.reshape(x_t.shape) - (eps - a))[:, :, :steps]
        return err.pow(2).mean(dim=(2, 3))

    def loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        t = torch.rand(obs.shape[0], 1)
        eps = torch.randn(obs.shape[0], 1, *actions.shape[1:])
        return self.cfm_losses(obs, actions, t, eps).mean()

    # --- stochastic sampler (Euler-Maruyama-like), each step a Gaussian with a tractable likelihood ---
    def step_std(self, i: int, sigma_scale: float) -> float:
        """Std of step i: sigma_scale * sqrt(t_i), tapering to 0; the last step is deterministic."""
        return 0.0 if i == self.num_steps - 1 else sigma_scale * math.sqrt(1.0 - i / self.num_steps)

    def sample_chain(self, obs: torch.Tensor, noise: torch.Tensor, sigma_scale: float) -> torch.Tensor:
        """Chain (B, K+1, H, A) from x_1 = noise[:, 0], step i adding step_std(i) * noise[:, i + 1]."""
        x, dt = noise[:, 0], 1.0 / self.num_steps
        chain = [x]
        for i in range(self.num_steps):
            x = x - dt * self.velocity(x, torch.tensor(1.0 - i * dt), obs) + self.step_std(i, sigma_scale) * noise[:, i + 1]
            chain.append(x)
        return torch.stack(chain, dim=1)

    def chain_log_prob(self, obs: torch.Tensor, chain: torch.Tensor, sigma_scale: float) -> torch.Tensor:
        """Log-probability (B, K-1) of each stochastic transition of a chain, summed over its elements."""
        batch, dt = chain.shape[0], 1.0 / self.num_steps
        steps = self.num_steps - 1
        x = chain[:, :steps].reshape(batch * steps, *chain.shape[2:])
        t = torch.tensor([1.0 - i * dt for i in range(steps)]).repeat(batch)
        obs_rep = obs.repeat_interleave(steps, dim=0)
        mean = (x - dt * self.velocity(x, t, obs_rep)).reshape(batch, steps, *chain.shape[2:])
        std = torch.tensor([self.step_std(i, sigma_scale) for i in range(steps)]).view(1, steps, 1, 1)
        z = (chain[:, 1:steps + 1] - mean) / std
        return (-0.5 * z.pow(2) - std.log() - 0.5 * LOG_2PI).sum(dim=(2, 3))


@dataclass
class FlowActorConfig(ActorConfig):
    type: str = "flow"
    activation: str = field("mish", choices=tuple(ACTIVATIONS))
    flow_steps: int = field(10, ge=1)
    time_dim: int = field(16, ge=2)

    def build(self, spec: ChunkSpec) -> FlowActor:
        return FlowActor(spec, self.hidden, self.flow_steps, self.time_dim, self.activation)
