"""Build an actor from its config."""

from __future__ import annotations

from robopol.config import ActorConfig, DiffusionActorConfig, FlowActorConfig, GaussianActorConfig
from robopol.policies.base import Actor, ChunkSpec
from robopol.policies.diffusion import DiffusionActor
from robopol.policies.flow import FlowActor
from robopol.policies.gaussian import GaussianActor


def make_actor(spec: ChunkSpec, cfg: ActorConfig) -> Actor:
    if isinstance(cfg, GaussianActorConfig):
        return GaussianActor(spec, cfg.hidden, cfg.activation, cfg.init_log_std)
    if isinstance(cfg, FlowActorConfig):
        return FlowActor(spec, cfg.hidden, cfg.flow_steps, cfg.time_dim, cfg.activation)
    if isinstance(cfg, DiffusionActorConfig):
        return DiffusionActor(spec, cfg.hidden, cfg.denoising_steps, cfg.ddim_steps, cfg.ft_denoising_steps,
                              cfg.ddim_eta, cfg.min_sampling_std, cfg.min_logprob_std, time_dim=cfg.time_dim,
                              activation=cfg.activation)
    raise TypeError(f"no actor for config {type(cfg).__name__}")

