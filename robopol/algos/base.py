"""The algorithm contract every update rule follows, whatever loop drives it.

An algorithm declares the loop that feeds it (`loop`: on_policy, off_policy or offline), builds the
critics, buffers and optimisers it needs from the policy config, and answers the Runner's few
questions: how to act, how to update on what the loop hands it, which modules and state a checkpoint
must hold, and which actors a policy bundle serves. Subclasses register themselves under their
config's `name` (robopol.registry), so adding one edits no central table."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch
from torch import nn

from robopol import registry
from robopol.config import AlgoConfig, PolicyConfig
from robopol.errors import ConfigError
from robopol.policies.base import Actor

LOOPS = ("on_policy", "off_policy", "offline")


class Algorithm(abc.ABC):
    config_class: ClassVar[type[AlgoConfig]]
    loop: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "config_class" in cls.__dict__:
            if cls.loop not in LOOPS:
                raise TypeError(f"{cls.__qualname__}.loop must be one of {LOOPS}, got {cls.loop!r}")
            registry.register("algorithm", cls.config_class.name, cls)

    def __init__(self, policy: PolicyConfig, actor: Actor) -> None:
        self.cfg, self.actor = policy.algo, actor

    @abc.abstractmethod
    def update(self, data: Any, progress: float) -> dict[str, float]:
        """One update on what the loop collected; `progress` in [0, 1) is the share of the run done."""

    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Exploratory action chunks for normalised observations, and per-sample extras to store."""
        return self.actor.sample(obs, torch.randn(self.actor.noise_shape(obs.shape[0]))), {}

    def modules(self) -> dict[str, nn.Module]:
        """Networks a checkpoint holds (weights); `actor` is always among them."""
        return {"actor": self.actor}

    def policy_actors(self) -> dict[str, Actor]:
        """The actors a policy bundle serves for evaluation, export and deploy."""
        return {"actor": self.actor}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything else resume needs (counters, EMA targets, schedules), as nested tensors and numbers."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def algorithm_class(name: str) -> type[Algorithm]:
    algorithms = registry.lookup("algorithm")
    if name not in algorithms:
        raise ConfigError(f"policy.algo.name: {name!r} has no algorithm; choose one of: {', '.join(sorted(algorithms))}")
    return algorithms[name]
