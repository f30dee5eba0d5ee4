"""Critics shared by every algorithm: V(s) for on-policy methods, a Q(s, a_chunk) ensemble with EMA
targets for off-policy ones. Targets differ per method, so the TD target is a function passed in."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from robopol.policies.networks import ACTIVATIONS, mlp

if TYPE_CHECKING:
    from robopol.config import CriticConfig
    from robopol.policies.base import ChunkSpec


class ValueCritic(nn.Module):
    def __init__(self, obs_dim: int, n_obs_steps: int, hidden: Sequence[int] = (64, 64), activation: str = "tanh") -> None:
        super().__init__()
        self.net = mlp(obs_dim * n_obs_steps, hidden, 1, activation)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.reshape(obs.shape[0], -1)).squeeze(-1)


class EnsembleLinear(nn.Module):
    """`heads` independent linear layers evaluated in one batched matmul: (heads, B, in) -> (heads, B, out)."""

    def __init__(self, heads: int, in_dim: int, out_dim: int, output: bool = False) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(heads, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(heads, 1, out_dim).uniform_(-bound, bound))
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.output and torch.is_autocast_enabled(x.device.type):
            # The Q values themselves stay float32 under train.autocast=bf16: bf16 keeps 8 significant bits,
            # so a Q near 600 (HalfCheetah) would move in steps of 4, as coarse as the TD errors it learns from.
            with torch.autocast(x.device.type, enabled=False):
                return torch.baddbmm(self.bias, x.float(), self.weight)
        return torch.baddbmm(self.bias, x, self.weight)


class QEnsemble(nn.Module):
    """`heads` Q(s, a_chunk) networks (LayerNorm optional, as OGPO uses) sharing one forward pass."""

    def __init__(self, obs_dim: int, n_obs_steps: int, act_dim: int, horizon: int, heads: int = 2,
                 hidden: Sequence[int] = (256, 256), activation: str = "relu", layer_norm: bool = False) -> None:
        super().__init__()
        self.heads = heads
        layers: list[nn.Module] = []
        last = obs_dim * n_obs_steps + act_dim * horizon
        for width in hidden:
            layers.append(EnsembleLinear(heads, last, width))
            if layer_norm:
                layers.append(nn.LayerNorm(width))
            layers.append(ACTIVATIONS[activation]())
            last = width
        layers.append(EnsembleLinear(heads, last, 1, output=True))
        self.net = nn.Sequential(*layers)

    @classmethod
    def for_chunks(cls, spec: ChunkSpec, critic: CriticConfig, heads: int, layer_norm: bool = False) -> QEnsemble:
        """Heads over `spec`'s observation windows and action chunks, with the network `policy.critic` names."""
        return cls(spec.obs_dim, spec.n_obs_steps, spec.act_dim, spec.horizon, heads, critic.hidden, critic.activation,
                   layer_norm)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q values of every head, (heads, B)."""
        x = torch.cat([obs.reshape(obs.shape[0], -1), actions.reshape(actions.shape[0], -1)], dim=-1)
        return self.net(x.unsqueeze(0).expand(self.heads, *x.shape)).squeeze(-1)


class EMATarget:
    """A frozen copy of a module that follows it by Polyak averaging: target <- target + tau (online - target)."""

    def __init__(self, online: nn.Module, tau: float) -> None:
        self.online, self.tau = online, tau
        self.target = copy.deepcopy(online).requires_grad_(False)

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(list(self.target.parameters()), list(self.online.parameters()), self.tau)
        for t, o in zip(self.target.buffers(), self.online.buffers()):
            t.copy_(o)


TDTarget = Callable[[dict[str, torch.Tensor]], torch.Tensor]


def bootstrapped_target(next_value: Callable[[torch.Tensor], torch.Tensor]) -> TDTarget:
    """reward + bootstrap * next_value(next_obs), with `reward` and `bootstrap` from ReplayBuffer.sample
    (n-step sums, discount^n, zero after termination). OGPO passes the mean target Q at target-actor
    actions as `next_value`; QGF passes its expectile V."""

    def target(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            return batch["reward"] + batch["bootstrap"] * next_value(batch["next_obs"])

    return target


def q_loss(q: QEnsemble, batch: dict[str, torch.Tensor], td_target: TDTarget) -> torch.Tensor:
    """Mean over heads of the squared TD error against one shared target."""
    return (q(batch["obs"], batch["actions"]) - td_target(batch).unsqueeze(0)).pow(2).mean()
