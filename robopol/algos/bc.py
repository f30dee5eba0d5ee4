"""Behaviour cloning: the actor's own supervised loss (denoising, flow matching or Gaussian NLL) on
demonstrated action chunks, with AdamW, a linear warm-up into a cosine decay, and EMA weights
(diffusion_policy's recipe). Driven by the offline loop (`robopol pretrain`); the EMA weights are
the policy it serves and saves as `actor`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from robopol.algos.base import OfflineAlgorithm, OfflineConfig
from robopol.config import PolicyConfig
from robopol.policies.base import Actor
from robopol.policies.ema import EMA
from robopol.typed_config import field


@dataclass
class BCConfig(OfflineConfig):
    actor_types: ClassVar[tuple[str, ...]] = ("diffusion", "flow", "gaussian")
    name: str = "bc"
    lr: float = field(1e-4, gt=0)
    weight_decay: float = field(1e-6, ge=0)
    warmup_steps: int = field(500, ge=0)
    ema_decay: float = field(0.995, ge=0, lt=1, doc="cap of diffusion_policy's warm-up EMA schedule")


def warmup_cosine(warmup_steps: int, total_steps: int):
    """LR multiplier: linear from 0 over warm-up, then cosine to 0 at total_steps."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


class BC(OfflineAlgorithm):
    config_class = BCConfig
    cfg: BCConfig

    def __init__(self, policy: PolicyConfig, actor: Actor) -> None:
        super().__init__(policy, actor)
        cfg = self.cfg
        self.optimizer = torch.optim.AdamW(actor.parameters(), lr=cfg.lr, betas=(0.95, 0.999),
                                           weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(cfg.warmup_steps, cfg.num_steps))
        self.ema = EMA(actor, cfg.ema_decay)

    def update(self, data: dict[str, torch.Tensor], progress: float = 0.0) -> dict[str, float]:
        """One gradient step on a batch of normalised windows {obs, actions}."""
        loss = self.actor.loss(data["obs"], data["actions"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update()
        return {"loss": loss.item(), "lr": self.lr}

    def modules(self) -> dict[str, nn.Module]:
        return {"actor": self.ema.average, "online_actor": self.actor}

    def policy_actors(self) -> dict[str, Actor]:
        return {"actor": self.ema.average}  # type: ignore[dict-item]

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adamw": self.optimizer}

    def state_dict(self) -> dict[str, Any]:
        return {"ema_step": self.ema.step, "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema.step = int(state["ema_step"])
        self.scheduler.load_state_dict(state["scheduler"])

    @torch.no_grad()
    def validation_loss(self, obs: torch.Tensor, actions: torch.Tensor, seed: int = 0) -> float:
        """The EMA actor's loss with fixed noise draws, so successive values are comparable."""
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return self.ema.average.loss(obs, actions).item()

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]
