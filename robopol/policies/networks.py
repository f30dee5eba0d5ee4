"""Small, fast MLP backbones. Every actor and critic in robopol is built from these."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "mish": nn.Mish, "silu": nn.SiLU}


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "mish",
        layer_norm: bool = False, out_gain: float = 1.0) -> nn.Sequential:
    """Linear(-LayerNorm)-activation stack; the last layer's weights are scaled by `out_gain`
    (a small gain keeps initial policies near zero mean, as CleanRL's 0.01 init does)."""
    layers: list[nn.Module] = []
    last = in_dim
    for width in hidden:
        layers.append(nn.Linear(last, width))
        if layer_norm:
            layers.append(nn.LayerNorm(width))
        layers.append(ACTIVATIONS[activation]())
        last = width
    head = nn.Linear(last, out_dim)
    with torch.no_grad():
        head.weight.mul_(out_gain)
        head.bias.zero_()
    layers.append(head)
    return nn.Sequential(*layers)


class SinusoidalEmbedding(nn.Module):
    """Maps a scalar time in [0, 1] to `dim` sin/cos features of geometrically spaced frequencies."""

    def __init__(self, dim: int, max_period: float = 1000.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"time embedding dim must be even, got {dim}")
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / max(half - 1, 1))
        self.register_buffer("freqs", freqs * max_period, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t.reshape(-1, 1) * self.freqs
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class TimeConditionedMLP(nn.Module):
    """eps / velocity network: f(x_t, t, obs) for an action chunk x_t of shape (B, horizon, act_dim).

    Observation history (B, n_obs_steps, obs_dim) is flattened into the conditioning vector, as in
    diffusion_policy's low-dim MLP variants; t is a float in [0, 1] (flow time or k / K)."""

    def __init__(self, obs_dim: int, n_obs_steps: int, act_dim: int, horizon: int,
                 hidden: Sequence[int], time_dim: int = 16, activation: str = "mish") -> None:
        super().__init__()
        self.horizon, self.act_dim = horizon, act_dim
        self.time_embedding = SinusoidalEmbedding(time_dim)
        self.net = mlp(obs_dim * n_obs_steps + act_dim * horizon + time_dim, hidden, act_dim * horizon, activation)

    def forward(self, x: torch.Tensor, t: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        t = t.expand(batch) if t.dim() == 0 or t.shape[0] != batch else t
        features = torch.cat([x.reshape(batch, -1), obs.reshape(batch, -1), self.time_embedding(t)], dim=-1)
        return self.net(features).reshape(batch, self.horizon, self.act_dim)
