"""Which network a diffusion or flow actor predicts with: the MLP or the temporal U-Net.

The MLP (robopol.policies.networks.TimeConditionedMLP) is small and fast, right for RL on short
chunks; the U-Net (robopol.policies.unet.TemporalUnet) is diffusion_policy's choice for imitation on
long chunks. Both are f(x_t, t, obs) -> (B, horizon, act_dim), so the samplers, DPPO's fine-tuned copy
of the last steps and export do not care which one an actor holds."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from robopol.config import ActorConfig
from robopol.errors import ConfigError
from robopol.policies.base import ChunkSpec
from robopol.policies.networks import TimeConditionedMLP
from robopol.policies.unet import TemporalUnet
from robopol.typed_config import field


@dataclass
class GenerativeActorConfig(ActorConfig):
    """Settings shared by the diffusion and flow actors' networks (`hidden` is the MLP's widths)."""

    backbone: str = field("mlp", choices=("mlp", "unet"), doc="mlp: TimeConditionedMLP; unet: TemporalUnet")
    time_dim: int = field(16, ge=2, doc="sinusoidal features of the step's time")
    down_dims: list[int] = field(gt=0, default_factory=lambda: [64, 128, 256],
                                 doc="unet: channels per level (diffusion_policy: 256, 512, 1024)")
    kernel_size: int = field(5, ge=1, doc="unet: convolution width over the horizon (odd)")
    n_groups: int = field(8, ge=1, doc="unet: GroupNorm groups; every down_dims entry must divide by it")

    def __post_init__(self) -> None:
        if self.time_dim % 2:
            raise ConfigError(f"policy.actor.time_dim: {self.time_dim}; must be even (sin/cos pairs)")
        if self.backbone != "unet":
            return
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"policy.actor.kernel_size: {self.kernel_size}; the unet needs an odd width")
        uneven = [width for width in self.down_dims if width % self.n_groups]
        if uneven:
            raise ConfigError(f"policy.actor.down_dims: {self.down_dims}; each width must be divisible by "
                              f"policy.actor.n_groups={self.n_groups} (not {uneven[0]})")

    def network(self, spec: ChunkSpec) -> nn.Module:
        """The prediction network f(x_t, t, obs) for this task's chunk spec."""
        if self.backbone == "unet":
            return TemporalUnet(spec.obs_dim, spec.n_obs_steps, spec.act_dim, spec.horizon, self.down_dims,
                                self.kernel_size, self.n_groups, self.time_dim)
        return TimeConditionedMLP(spec.obs_dim, spec.n_obs_steps, spec.act_dim, spec.horizon, self.hidden,
                                  self.time_dim, self.activation)
