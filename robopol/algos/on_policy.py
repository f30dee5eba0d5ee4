"""The on-policy update shared by PPO, FPO and DPPO: minibatch epochs over a rollout buffer with a
clipped surrogate, a value loss and early stopping on KL. Each algorithm supplies only how it acts
(and what it stores per sample) and how it scores a stored sample under the current policy. The
on-policy loop (robopol.loops.on_policy) fills the buffer and computes GAE with `value`."""

from __future__ import annotations

import abc
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robopol import distributed
from robopol.algos.base import Algorithm
from robopol.algos.compiled_step import CompiledStep, stack_steps, unstack_group
from robopol.errors import ConfigError
from robopol.config import AlgoConfig, PolicyConfig
from robopol.critics import ValueCritic
from robopol.data.rollout import RolloutBuffer
from robopol.policies.base import Actor
from robopol.typed_config import field


@dataclass
class OnPolicyConfig(AlgoConfig):
    lr: float = field(3e-4, gt=0, doc="actor learning rate")
    critic_lr: float = field(3e-4, gt=0)
    gamma: float = field(0.99, ge=0, le=1, doc="discount per executed chunk")
    gae_lambda: float = field(0.95, ge=0, le=1)
    update_epochs: int = field(10, ge=1)
    minibatch_size: int = field(64, ge=1)
    clip: float = field(0.2, gt=0)
    vf_coef: float = field(0.5, ge=0)
    ent_coef: float = field(0.0, ge=0)
    max_grad_norm: float = field(0.5, gt=0)
    target_kl: float = field(0.0, ge=0, doc="0 disables early stopping")
    norm_adv: bool = True
    anneal_lr: bool = True
    critic_warmup_iters: int = field(0, ge=0, doc="updates in which only the critic learns")
    compile: bool = field(False, doc="run each minibatch step (loss, gradient, clip, Adam) as one torch.compile'd "
                                     "function (robopol.algos.compiled_step): ~4x faster 64x64 PPO steps on a CPU after "
                                     "a compile of 10-30 s; and each rollout step as one call, an AOTInductor package on "
                                     "a CPU learner (robopol.loops.ahead_of_time; a first build ~20 s, then cached); "
                                     "fused kernels round differently, so runs differ from eager ones")
    compile_unroll: int = field(1, ge=1, doc="with compile: minibatch steps per compiled call, unrolled in one graph, so "
                                             "a call's fixed cost (guards, wrapper) is paid once per that many steps; "
                                             "the same steps in the same order, a longer first compile")

    def __post_init__(self) -> None:
        if self.compile_unroll > 1 and not self.compile:
            raise ConfigError(f"policy.algo.compile_unroll: {self.compile_unroll} unrolls compiled steps; "
                              "set policy.algo.compile=true, or compile_unroll=1")


def clipped_losses(ratio: torch.Tensor, adv: torch.Tensor, clip: torch.Tensor | float) -> torch.Tensor:
    """PPO's pessimistic objective as a per-sample loss."""
    return torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip))


def clip_fraction(ratio: torch.Tensor, clip: torch.Tensor | float) -> torch.Tensor:
    """The fraction of samples whose ratio lies outside 1 +- clip."""
    return ((ratio - 1).abs() > clip).float().mean()


def clipped_surrogate(ratio: torch.Tensor, adv: torch.Tensor, clip: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's pessimistic objective as a loss, and the fraction of samples the clip was active on."""
    return clipped_losses(ratio, adv, clip).mean(), clip_fraction(ratio, clip)


def approx_kl(log_ratio: torch.Tensor) -> torch.Tensor:
    """Schulman's low-variance KL(old || new) estimator."""
    return (log_ratio.exp() - 1 - log_ratio).mean()


class OnPolicyAlgorithm(Algorithm):
    loop = "on_policy"
    cfg: OnPolicyConfig

    def __init__(self, policy: PolicyConfig, actor: Actor) -> None:
        super().__init__(policy, actor)
        cfg, spec = self.cfg, actor.spec
        self.critic = critic = ValueCritic(spec.obs_dim, spec.n_obs_steps, policy.critic.hidden, policy.critic.activation)
        # One fused Adam (a kernel per step, not a Python loop over tensors) with a group per network.
        self.optimizer = torch.optim.Adam([{"params": self.policy_parameters(), "lr": cfg.lr},
                                           {"params": list(critic.parameters()), "lr": cfg.critic_lr}], eps=1e-5, fused=True)
        self.parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        # Clipped as the step's own pre-hook, so a multi-process run clips the gradient averaged over
        # ranks (robopol.distributed's global pre-hook runs first).
        self.optimizer.register_step_pre_hook(self._clip_gradients)
        self.iteration = 0
        self.compiled = (CompiledStep({"actor": actor, "critic": critic}, self._minibatch_loss, self.optimizer,
                                      cfg.max_grad_norm) if cfg.compile else None)

    def policy_parameters(self) -> list[nn.Parameter]:
        """The actor's parameters the policy loss trains (the optimiser's first group)."""
        return [p for p in self.actor.parameters() if p.requires_grad]

    @abc.abstractmethod
    def extras_spec(self) -> dict[str, tuple[int, ...]]:
        """Per-sample tensors (name -> shape) this algorithm stores in the rollout buffer."""

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s) of normalised observations, for GAE."""
        return self.critic(obs)

    @abc.abstractmethod
    def policy_loss(self, batch: dict[str, torch.Tensor], adv: torch.Tensor) -> dict[str, torch.Tensor]:
        """{'loss', 'approx_kl', 'clip_fraction'} of a minibatch under the current actor."""

    def between_iterations(self, env_steps: int, collect: Callable[[], RolloutBuffer],
                           evaluate: Callable[[], dict[str, float]]) -> dict[str, float]:
        """Work between one iteration's update and the next rollout (GoRL's stage switch), with the run's
        `env_steps` so far; `collect()` rolls the current policy out into the loop's buffer (its env steps
        count), `evaluate()` logs an evaluation row now. Returns metrics for the iteration's train.csv row;
        nothing by default."""
        return {}

    def modules(self) -> dict[str, nn.Module]:
        return {"actor": self.actor, "critic": self.critic}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor_critic": self.optimizer}

    def update(self, buffer: RolloutBuffer, progress: float) -> dict[str, float]:
        """One iteration of minibatch epochs; `progress` in [0, 1) drives learning-rate annealing."""
        cfg = self.cfg
        scale = self.lr_scale(progress)
        actor_group, critic_group = self.optimizer.param_groups
        actor_group["lr"], critic_group["lr"] = cfg.lr * scale, cfg.critic_lr * scale
        train_actor = self.iteration >= cfg.critic_warmup_iters
        stats: dict[str, list[torch.Tensor]] = defaultdict(list)
        if self.compiled:
            self.compiled.begin()
        try:
            for _ in range(cfg.update_epochs):
                epoch_kl = []
                for batches in buffer.minibatch_groups(cfg.minibatch_size, cfg.compile_unroll):
                    value_losses, policy = self._minibatch_steps(batches, train_actor)
                    for key, values in policy.items():
                        stats[f"policy_{key}" if key == "loss" else key].append(values.detach())
                    if policy:
                        epoch_kl.append(policy["approx_kl"].detach())
                    stats["value_loss"].append(value_losses.detach())
                if cfg.target_kl and epoch_kl and distributed.mean_over_ranks(torch.cat(epoch_kl).mean()) > cfg.target_kl:
                    break  # every rank stops after the same epoch
        finally:
            if self.compiled:
                self.compiled.end()
        self.iteration += 1
        out = {key: torch.cat(values).mean().item() for key, values in stats.items()}
        returns, values = buffer.returns[: buffer.pos].flatten(), buffer.values[: buffer.pos].flatten()
        out["explained_variance"] = (1 - (returns - values).var() / returns.var().clamp(min=1e-8)).item()
        return out

    def lr_scale(self, progress: float) -> float:
        """The factor on both learning rates for an update at run `progress`: linear decay to 0 with anneal_lr."""
        return 1.0 - progress if self.cfg.anneal_lr else 1.0

    def _minibatch_steps(self, batches: dict[str, torch.Tensor], train_actor: bool
                         ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One gradient step per minibatch of a group (leading dimension); value losses and policy terms, one
        per minibatch."""
        if self.compiled:
            return self.compiled.steps(batches, train_actor)
        return stack_steps([self._minibatch_step(batch, train_actor) for batch in unstack_group(batches)])

    def _minibatch_step(self, batch: dict[str, torch.Tensor], train_actor: bool
                        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One eager gradient step on a minibatch; its value loss and policy terms."""
        loss, value_loss, policy = self._minibatch_loss(batch, train_actor)
        for p in self.parameters:  # optimizer.zero_grad(set_to_none=True) without its profiling wrapper
            p.grad = None
        loss.backward()
        self.optimizer.step()  # clips first (_clip_gradients); a frozen actor (critic warm-up) has no grads
        return value_loss, policy

    def _clip_gradients(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        nn.utils.clip_grad_norm_(self.parameters, self.cfg.max_grad_norm, foreach=True)

    def _minibatch_loss(self, batch: dict[str, torch.Tensor], train_actor: bool
                        ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The minibatch's loss, its value loss and the policy's terms (none during critic warm-up)."""
        cfg = self.cfg
        adv = batch["advantages"]
        if cfg.norm_adv and adv.numel() > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        value_loss = 0.5 * (self.critic(batch["obs"]) - batch["returns"]).pow(2).mean()
        loss = cfg.vf_coef * value_loss
        policy = self.policy_loss(batch, adv) if train_actor else {}
        if policy:
            loss = loss + policy["loss"]
        return loss, value_loss, policy

    def state_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])
