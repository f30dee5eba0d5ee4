"""The one policy contract every actor follows (after LeRobot's and diffusion_policy's).

All tensors live in normalised space: observations (B, n_obs_steps, obs_dim) already normalised,
actions (B, horizon, act_dim) in [-1, 1] units. Unnormalising happens once, in `Normalizer`.
Every actor is a deterministic function of (obs, noise): `sample(obs, noise)`; zero noise is its
deterministic mode. That single entry point is what rollouts, evaluation and export all call.

Log-probability convention, for every actor: a log-prob is a log-density in normalised units, summed
over the elements it covers: `GaussianActor.log_prob` (B,) over the executed actions (the part of the
chunk the env sees), a generative actor's `chain_log_prob` (B, steps) over all horizon x act_dim
elements of each chain transition (robopol.policies.generative). Any other normalisation is the
algorithm's, as its paper says: DPPO clamps each element's log-density (to [-5, 2] by default) and
averages over the executed actions; OGPO divides a chain's sum by steps x action dim. The
per-element densities behind the sums (`step_log_densities`) are there for such algorithms."""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass

import torch
from torch import nn

LOG_2PI = math.log(2 * math.pi)  # the one constant every Gaussian log-density here uses


@dataclass(frozen=True)
class ChunkSpec:
    """diffusion_policy's vocabulary: observe n_obs_steps frames, predict horizon actions, run n_action_steps."""

    obs_dim: int
    act_dim: int
    n_obs_steps: int = 1
    horizon: int = 1
    n_action_steps: int = 1


class Actor(nn.Module, abc.ABC):
    """Policy contract: `sample`, `predict_action`, `loss`, `reset`."""

    def __init__(self, spec: ChunkSpec) -> None:
        super().__init__()
        self.spec = spec

    @abc.abstractmethod
    def noise_shape(self, batch: int) -> tuple[int, ...]:
        """Shape of the noise tensor `sample` consumes for a batch of observations."""

    @abc.abstractmethod
    def sample(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Action chunk (B, horizon, act_dim) as a deterministic function of obs and noise."""

    @abc.abstractmethod
    def loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Scalar supervised (behaviour-cloning) loss for demonstrated action chunks."""

    def predict_action(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        shape = self.noise_shape(obs.shape[0])
        noise = torch.zeros(shape) if deterministic else torch.randn(shape)
        return self.sample(obs, noise)

    def reset(self) -> None:
        """Clear inference-time state; the actors here are stateless, action queues live in the callers."""

    def prepare_finetuning(self) -> None:
        """Called once after pretrained weights are loaded for RL fine-tuning, and before restoring a
        fine-tuned checkpoint; DPPO's diffusion actor makes its trainable copy of the last steps here."""
