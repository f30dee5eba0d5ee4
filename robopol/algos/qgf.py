"""QGF (Q-Guided Flow): behaviour cloning of a flow actor, left untouched, plus an offline IQL critic
whose action-gradient steers the actor's sampler at test time (robopol.policies.guidance).

The critic learns from chunk transitions of a (mixed-quality) dataset, robopol.data.chunk_returns:
    Q_i(s, a) <- r_H + gamma^k V(s')                 (mean squared error, both heads, k executed actions)
    V(s)      <- expectile_tau of min_i Qtarget_i(s, a) over the dataset's chunks a at s
with Qtarget the EMA of Q (tau 0.005). In one run the BC actor (robopol.algos.bc) and the critic train
side by side; with train_actor=false the actor is loaded from a BC checkpoint (train.pretrained) and only
the critic trains. The guidance weight and best-of-N are evaluation-time settings (`eval_settings`):
`robopol eval RUN policy.algo.guidance_weight=0.02` changes them on a checkpoint without retraining."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from robopol.algos.base import StoredRun
from robopol.algos.bc import BC, BCConfig
from robopol.config import PolicyConfig
from robopol.critics import EMATarget, QEnsemble, ValueCritic, bootstrapped_target, q_loss
from robopol.data.episodes import Episode
from robopol.errors import ConfigError, DataError
from robopol.policies.base import Actor, ChunkSpec
from robopol.policies.flow import FlowActor
from robopol.policies.guidance import QGuidedFlow
from robopol.typed_config import field


@dataclass
class QGFConfig(BCConfig):
    actor_types: ClassVar[tuple[str, ...]] = ("flow",)
    name: str = "qgf"
    train_actor: bool = field(True, doc="false: train only the critic, beside an actor loaded from a BC checkpoint "
                                        "(train.pretrained)")
    reward: str = field("file", choices=("file", "success", "ogbench"),
                        doc="what chunk returns sum: the file's per-step rewards; success: 1 on each step the file "
                            "records as solved, else 0; ogbench: 0 on a solved step, else -1 (the paper's "
                            "benchmarks, whose Q scale of up to 1 / (1 - gamma) its guidance weights are tuned to)")
    gamma: float = field(0.99, gt=0, le=1, doc="discount per env step; a chunk of k executed actions bootstraps gamma^k")
    expectile: float = field(0.9, gt=0, lt=1, doc="IQL's tau: V fits this expectile of min target Q")
    target_tau: float = field(0.005, gt=0, le=1, doc="EMA rate of the target Q")
    critic_lr: float = field(3e-4, gt=0)
    critic_heads: int = field(2, ge=1)
    critic_layer_norm: bool = True
    guidance_weight: float = field(0.0, ge=0, doc="evaluation: w in a_t <- a_t + dt (v + w grad min Q); 0 is plain BC")
    best_of_n: int = field(1, ge=1, doc="evaluation: sample N chunks and keep the one min Q rates highest "
                                        "(needs policy.eval_noise=random)")


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """IQL's asymmetric square: mean of |tau - 1(diff < 0)| diff^2, with diff = target - prediction."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.pow(2)).mean()


def check_best_of_n(policy: PolicyConfig) -> None:
    n = policy.algo.best_of_n  # type: ignore[attr-defined]
    if n > 1 and policy.eval_noise != "random":
        raise ConfigError(f"policy.algo.best_of_n: {n} candidates drawn from zero noise are all the same chunk; "
                          "set policy.eval_noise=random or policy.algo.best_of_n=1")


def build_critic(policy: PolicyConfig, spec: ChunkSpec) -> QEnsemble:
    cfg: QGFConfig = policy.algo  # type: ignore[assignment]
    return QEnsemble.for_chunks(spec, policy.critic, cfg.critic_heads, cfg.critic_layer_norm)


class QGF(BC):
    config_class = QGFConfig
    cfg: QGFConfig
    eval_settings = ("guidance_weight", "best_of_n")

    def __init__(self, policy: PolicyConfig, actor: Actor) -> None:
        super().__init__(policy, actor)
        cfg = self.cfg
        check_best_of_n(policy)
        self.q = build_critic(policy, actor.spec)
        self.q_target = EMATarget(self.q, cfg.target_tau)
        self.value = ValueCritic(actor.spec.obs_dim, actor.spec.n_obs_steps, policy.critic.hidden, policy.critic.activation)
        self.critic_optimizer = torch.optim.Adam([*self.q.parameters(), *self.value.parameters()], lr=cfg.critic_lr)

    @property
    def return_discount(self) -> float:
        return self.cfg.gamma

    def step_rewards(self, episode: Episode) -> np.ndarray:
        if self.cfg.reward == "file":
            return episode.rewards
        if episode.successes is None:
            raise DataError(f"policy.algo.reward={self.cfg.reward}: {episode.name or 'an episode'} records no per-step "
                            "success; write the file with `robopol demos` or use policy.algo.reward=file")
        solved = episode.successes.astype(np.float32)
        return solved if self.cfg.reward == "success" else solved - 1.0

    def update(self, data: dict[str, torch.Tensor], progress: float = 0.0) -> dict[str, float]:
        """A BC step on the actor (unless train_actor is off) and one IQL step on V and Q."""
        metrics = super().update(data, progress) if self.cfg.train_actor else {"loss": 0.0}
        with torch.no_grad():
            target_q = self.q_target.target(data["obs"], data["actions"]).min(dim=0).values
        v_loss = expectile_loss(target_q - self.value(data["obs"]), self.cfg.expectile)
        td_loss = q_loss(self.q, data, bootstrapped_target(self.value))
        self.critic_optimizer.zero_grad(set_to_none=True)
        (v_loss + td_loss).backward()
        self.critic_optimizer.step()
        self.q_target.update()
        return {**metrics, "q_loss": td_loss.item(), "v_loss": v_loss.item(), "q_mean": target_q.mean().item()}

    def modules(self) -> dict[str, nn.Module]:
        return {**super().modules(), "q": self.q, "q_target": self.q_target.target, "value": self.value}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {**super().optimizers(), "critic_adam": self.critic_optimizer}

    def policy_actors(self) -> dict[str, Actor]:
        return {"actor": self.guided(self.ema.average, self.q_target.target, self.cfg)}  # type: ignore[arg-type]

    @staticmethod
    def guided(actor: Actor, critic: QEnsemble, cfg: QGFConfig) -> QGuidedFlow:
        assert isinstance(actor, FlowActor), "QGF guides flow actors (QGFConfig.actor_types)"
        return QGuidedFlow(actor, critic, cfg.guidance_weight, cfg.best_of_n)

    @classmethod
    def served_actor(cls, actor: Actor, ckpt: StoredRun) -> Actor:
        """The checkpoint's BC actor guided by its target Q, with the config's evaluation settings."""
        check_best_of_n(ckpt.config.policy)
        critic = build_critic(ckpt.config.policy, actor.spec)
        ckpt.load_into("q_target", critic, "checkpoint")
        return cls.guided(actor, critic, ckpt.config.policy.algo)  # type: ignore[arg-type]
