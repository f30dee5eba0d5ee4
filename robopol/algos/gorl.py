"""GoRL (Generative Online RL): PPO on a Gaussian latent policy pi(z|s) whose latents a flow decoder
g(s, z) turns into actions (robopol.policies.latent_flow), with the decoder retrained in stages.

PPO scores the stored latent z, never the env action, so its ratio is a plain Gaussian one and no
gradient runs through the decoder. The policy loss adds the latent regulariser
c * (mean mu^2 + mean sigma^2), which keeps pi(z|s) near the N(0, I) the decoder was trained from.
Stage 0 uses the identity decoder. When a stage's env steps are spent (`stage_env_steps`), the switch
(run between iterations, see OnPolicyAlgorithm.between_iterations) rolls the current policy out, keeps
the executed action chunks with their observations, trains a FRESH decoder from N(0, I) to them (flow
matching to their pre-tanh values, or a DDIM decoder's eps prediction), and starts a FRESH latent
policy and a fresh Adam state for it: at its
initialisation z ~ N(0, I), so the new decoder reproduces the behaviour the old stage ended with.
The critic and its optimiser state carry over; the behaviour, hence V, is unchanged by the switch."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from robopol.algos.on_policy import OnPolicyAlgorithm, OnPolicyConfig, approx_kl, clipped_surrogate
from robopol.config import PolicyConfig
from robopol.data.rollout import RolloutBuffer
from robopol.policies.latent_flow import LatentFlowActor
from robopol.typed_config import field


@dataclass
class GoRLConfig(OnPolicyConfig):
    actor_types: ClassVar[tuple[str, ...]] = ("latent_flow",)
    name: str = "gorl"
    lr: float = field(1e-3, gt=0, doc="latent policy learning rate (GoRL's encoder)")
    clip: float = field(0.3, gt=0, doc="PPO clip from stage 1 on")
    stage0_clip: float = field(0.15, gt=0, doc="PPO clip in stage 0 (identity decoder)")
    latent_reg: float = field(1e-3, ge=0, doc="c in c * (mean mu^2 + mean sigma^2) from stage 1 on")
    stage0_latent_reg: float = field(5e-4, ge=0, doc="c in stage 0")
    stage_env_steps: list[int] = field(gt=0, default_factory=lambda: [333_000, 333_000, 167_000],
                                       doc="env steps of each stage that ends in a decoder switch; the stage after "
                                           "the last switch runs to train.total_env_steps")
    decoder_rollouts: int = field(4, ge=1, doc="rollouts (train.rollout_steps x sim.num_envs chunks each) of the "
                                               "current policy stored for the decoder at a switch")
    decoder_steps: int = field(1500, ge=1, doc="gradient steps of each fresh decoder (official 50k)")
    decoder_batch: int = field(512, ge=1, doc="stored chunks per decoder step (official 8192)")
    decoder_lr: float = field(1e-3, gt=0, doc="official 3e-4, over 33x more steps")
    decoder_noise_samples: int = field(8, ge=1, doc="(t, eps) draws per stored chunk in each decoder batch")
    eval_at_switch: bool = field(True, doc="log an evaluation just before and just after each switch")
    stage_anneal: bool = field(False, doc="decay both learning rates linearly to 0 over each stage, as PPO's anneal_lr "
                                          "does once over a run; the stage after the last switch decays over the last "
                                          "listed stage's env steps (the official shares end in two equal stages), "
                                          "then holds at 0")


class GoRL(OnPolicyAlgorithm):
    config_class = GoRLConfig
    cfg: GoRLConfig
    actor: LatentFlowActor

    def __init__(self, policy: PolicyConfig, actor: LatentFlowActor) -> None:
        super().__init__(policy, actor)
        self.decoder_optimizer = self._fresh_decoder_optimizer()
        self.decoder_data: dict[str, torch.Tensor] = {}  # the last switch's stored (obs, u), for resume
        self.env_steps = 0  # the run's env steps when the last iteration ended (between_iterations), for stage_anneal

    @property
    def stage(self) -> int:
        return int(self.actor.stage)

    def policy_parameters(self) -> list[nn.Parameter]:
        """The latent policy's alone: the PPO loss scores latents, and the decoder learns only in `train_decoder`."""
        return list(self.actor.latent.parameters())

    def extras_spec(self) -> dict[str, tuple[int, ...]]:
        spec = self.actor.spec
        return {"latent": (spec.horizon, spec.act_dim), "log_prob": ()}

    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        actor = self.actor
        noise = torch.randn(actor.noise_shape(obs.shape[0]))
        z = actor.latent.sample(obs, noise)
        return actor.act_on_latent(obs, z), {"latent": z, "log_prob": actor.latent_noise_log_prob(noise)}

    def policy_loss(self, batch: dict[str, torch.Tensor], adv: torch.Tensor) -> dict[str, torch.Tensor]:
        # The stage is read as a tensor, not an int: a compiled update then follows a switch without a
        # graph break or a recompile.
        cfg, actor, first = self.cfg, self.actor, self.actor.stage == 0
        mean, sigma = actor.latent.mean(batch["obs"]), actor.latent.log_std.exp()
        log_ratio = actor.latent_log_prob(mean, batch["latent"]) - batch["log_prob"]
        loss, clip_fraction = clipped_surrogate(log_ratio.exp(), adv, torch.where(first, cfg.stage0_clip, cfg.clip))
        regulariser = torch.where(first, cfg.stage0_latent_reg, cfg.latent_reg) * (mean.pow(2).mean() + sigma.pow(2).mean())
        entropy = actor.latent_entropy()
        return {"loss": loss + regulariser - cfg.ent_coef * entropy, "approx_kl": approx_kl(log_ratio),
                "clip_fraction": clip_fraction, "entropy": entropy, "latent_reg": regulariser}

    def lr_scale(self, progress: float) -> float:
        if not self.cfg.stage_anneal:
            return super().lr_scale(progress)
        lengths = self.cfg.stage_env_steps
        start = sum(lengths[: self.stage])
        length = lengths[min(self.stage, len(lengths) - 1)]
        return min(1.0, max(0.0, 1.0 - (self.env_steps - start) / length))

    # --- the stage switch ---
    def switch_due(self, env_steps: int) -> bool:
        """Whether the current stage's env steps are spent and a decoder switch follows it."""
        ends = torch.tensor(self.cfg.stage_env_steps).cumsum(0)
        return self.stage < len(ends) and env_steps >= int(ends[self.stage])

    def between_iterations(self, env_steps: int, collect: Callable[[], RolloutBuffer],
                           evaluate: Callable[[], dict[str, float]]) -> dict[str, float]:
        self.env_steps = env_steps
        if not self.switch_due(env_steps):
            return {"stage": float(self.stage)}
        if self.cfg.eval_at_switch:
            evaluate()
        obs, actions = [], []
        for _ in range(self.cfg.decoder_rollouts):
            buffer = collect()
            obs.append(buffer.obs[: buffer.pos].flatten(0, 1).clone())
            actions.append(buffer.actions[: buffer.pos].flatten(0, 1).clone())
        self.decoder_data = {"obs": torch.cat(obs), "actions": torch.cat(actions)}
        started = time.perf_counter()
        decoder_loss = self.switch_stage()
        metrics = {"stage": float(self.stage), "decoder_loss": decoder_loss,
                   "decoder_seconds": time.perf_counter() - started}
        if self.cfg.eval_at_switch:
            evaluate()
        return metrics

    def switch_stage(self) -> float:
        """Train a fresh decoder on `decoder_data` (observations as the policy saw them, executed chunks),
        then start a fresh latent policy and its Adam state; returns the decoder's mean loss over its last
        tenth of steps."""
        actor = self.actor
        actor.decoder.load_state_dict(actor.fresh_decoder().state_dict())
        self.decoder_optimizer = self._fresh_decoder_optimizer()
        loss = self.train_decoder(self.decoder_data["obs"], actor.decoder_target(self.decoder_data["actions"]))
        actor.latent.load_state_dict(actor.fresh_latent().state_dict())
        for p in actor.latent.parameters():
            self.optimizer.state.pop(p, None)
        actor.stage += 1
        return loss

    def train_decoder(self, obs: torch.Tensor, targets: torch.Tensor) -> float:
        """The decoder's loss from N(0, I) to `targets` (LatentFlowActor.decoder_target chunks): decoder_steps
        Adam steps on random batches, decoder_noise_samples noise draws per chunk."""
        cfg, params = self.cfg, list(self.actor.decoder.parameters())
        tail = []
        for step in range(cfg.decoder_steps):
            idx = torch.randint(len(obs), (min(cfg.decoder_batch, len(obs)),))
            loss = self.actor.decoder_loss(obs[idx], targets[idx], cfg.decoder_noise_samples)
            for p in params:
                p.grad = None
            loss.backward()
            self.decoder_optimizer.step()
            if step >= cfg.decoder_steps * 9 // 10:
                tail.append(loss.detach())
        for p in params:
            p.grad = None
        return torch.stack(tail).mean().item()

    def _fresh_decoder_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.actor.decoder.parameters(), lr=self.cfg.decoder_lr)

    # --- checkpointing: the stage lives in the actor's weights (actor.stage) ---
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {**super().optimizers(), "decoder": self.decoder_optimizer}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "decoder_data": dict(self.decoder_data), "env_steps": self.env_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.decoder_data = dict(state["decoder_data"])
        self.env_steps = int(state.get("env_steps", 0))
