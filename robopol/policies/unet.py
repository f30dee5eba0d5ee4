"""A 1-D temporal U-Net eps / velocity network, after diffusion_policy's conditional U-Net.

The action chunk (B, horizon, act_dim) is a sequence of `horizon` steps with `act_dim` channels.
Convolutions over the horizon share weights across time, so neighbouring actions in a chunk are
predicted together (smooth chunks, and a receptive field that covers the whole horizon after a few
levels), where an MLP treats the flattened chunk as one unordered vector. The observation history
and the step's time embedding form one conditioning vector that modulates every residual block by
FiLM (a per-channel scale and bias), as diffusion_policy does with `cond_predict_scale`.

Levels halve the sequence length, so the horizon is padded with zeros to a multiple of
2 ** (levels - 1) and the prediction cropped back: any horizon works, a chunk of one included."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from robopol.policies.networks import SinusoidalEmbedding


class ConvBlock(nn.Sequential):
    """Conv1d over the horizon, GroupNorm, Mish: diffusion_policy's Conv1dBlock."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, groups: int) -> None:
        super().__init__(nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
                         nn.GroupNorm(groups, out_channels), nn.Mish())


class FiLMResidualBlock(nn.Module):
    """Two conv blocks; the conditioning scales and shifts the first one's channels; a residual path."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.first = ConvBlock(in_channels, out_channels, kernel_size, groups)
        self.second = ConvBlock(out_channels, out_channels, kernel_size, groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * out_channels))
        self.residual = nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, bias = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
        return self.second(scale * self.first(x) + bias) + self.residual(x)


class Level(nn.Module):
    """Two FiLM residual blocks at one resolution (diffusion_policy uses two per level)."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([FiLMResidualBlock(in_channels, out_channels, cond_dim, kernel_size, groups),
                                     FiLMResidualBlock(out_channels, out_channels, cond_dim, kernel_size, groups)])

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, cond)
        return x


class TemporalUnet(nn.Module):
    """f(x_t, t, obs) -> (B, horizon, act_dim), the same call as TimeConditionedMLP.

    `down_dims` are the channels of each level (diffusion_policy: 256, 512, 1024; smaller defaults
    here suit a CPU); every width must be divisible by `groups` (GroupNorm)."""

    def __init__(self, obs_dim: int, n_obs_steps: int, act_dim: int, horizon: int,
                 down_dims: Sequence[int] = (64, 128, 256), kernel_size: int = 5, groups: int = 8,
                 time_dim: int = 64) -> None:
        super().__init__()
        self.horizon, self.act_dim = horizon, act_dim
        stride = 2 ** (len(down_dims) - 1)
        self.padded_horizon = -(-horizon // stride) * stride
        self.time_embedding = nn.Sequential(SinusoidalEmbedding(time_dim), nn.Linear(time_dim, 4 * time_dim), nn.Mish(),
                                            nn.Linear(4 * time_dim, time_dim))
        cond_dim = time_dim + obs_dim * n_obs_steps
        widths = [act_dim, *down_dims]
        self.down = nn.ModuleList(Level(widths[i], widths[i + 1], cond_dim, kernel_size, groups)
                                  for i in range(len(down_dims)))
        self.downsample = nn.ModuleList(nn.Conv1d(w, w, 3, stride=2, padding=1) for w in down_dims[:-1])
        self.mid = Level(down_dims[-1], down_dims[-1], cond_dim, kernel_size, groups)
        self.upsample = nn.ModuleList(nn.ConvTranspose1d(w, w, 4, stride=2, padding=1) for w in down_dims[1:])
        self.up = nn.ModuleList(Level(down_dims[i + 1] + down_dims[i], down_dims[i], cond_dim, kernel_size, groups)
                                for i in range(len(down_dims) - 1))
        self.head = nn.Sequential(ConvBlock(down_dims[0], down_dims[0], kernel_size, groups),
                                  nn.Conv1d(down_dims[0], act_dim, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        t = t.expand(batch) if t.dim() == 0 or t.shape[0] != batch else t
        cond = torch.cat([self.time_embedding(t), obs.reshape(batch, -1)], dim=-1)
        h = nn.functional.pad(x.transpose(1, 2), (0, self.padded_horizon - self.horizon))
        skips = []
        for level, block in enumerate(self.down):
            h = block(h, cond)
            if level < len(self.downsample):
                skips.append(h)
                h = self.downsample[level](h)
        h = self.mid(h, cond)
        for level in reversed(range(len(self.up))):
            h = self.up[level](torch.cat([self.upsample[level](h), skips[level]], dim=1), cond)
        return self.head(h)[:, :, :self.horizon].transpose(1, 2)
