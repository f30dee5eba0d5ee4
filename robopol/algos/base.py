"""The algorithm contract every update rule follows, whatever loop drives it.

An algorithm declares the loop that feeds it (`loop`: on_policy, off_policy or offline), builds the
critics, buffers and optimisers it needs from the policy config, and answers the Runner's few
questions: how to act, how to update on what the loop hands it, which modules and state a checkpoint
must hold, and which actors a policy bundle serves. Subclasses register themselves under their
config's `name` (robopol.registry), so adding one edits no central table."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import nn

from robopol import registry
from robopol.config import AlgoConfig, PolicyConfig, RunConfig
from robopol.errors import ConfigError
from robopol.policies.base import Actor
from robopol.typed_config import field

if TYPE_CHECKING:
    import numpy as np

    from robopol.data.episodes import Episode

LOOPS = ("on_policy", "off_policy", "offline")


class StoredRun(Protocol):
    """What `served_actor` reads from a checkpoint; robopol.checkpoint.Checkpoint is one (that module
    imports this one to build a policy bundle, so this one names the interface, not the class)."""

    config: RunConfig

    def load_into(self, name: str, module: nn.Module, purpose: str) -> None: ...


class Algorithm(abc.ABC):
    config_class: ClassVar[type[AlgoConfig]]
    loop: ClassVar[str]
    eval_settings: ClassVar[tuple[str, ...]] = ()  # policy.algo keys `robopol eval` may override on a checkpoint

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

    @classmethod
    def served_actor(cls, actor: Actor, ckpt: StoredRun) -> Actor:
        """What a policy bundle loaded from `ckpt` serves, given its restored `actor`: the actor itself,
        or (QGF) a sampler built around it from the checkpoint's other modules and settings."""
        return actor


@dataclass
class OfflineConfig(AlgoConfig):
    """The settings the offline loop reads from every offline algorithm's config."""

    dataset: str = field("", doc="robomimic HDF5 file or PushT zarr store made for the task")
    drop_bad_episodes: bool = field(False, doc="drop demos with no steps or non-finite values (warning how many) "
                                               "instead of refusing the file")
    num_steps: int = field(20_000, ge=1, doc="gradient steps")
    batch_size: int = field(256, ge=1)
    val_every: int = field(1000, ge=0, doc="steps between validation losses on mask/valid demos; 0: never")
    action_bounds: str = field("data", choices=("data", "env"),
                               doc="the [-1, 1] action range: the demos' min/max, or the env's action space "
                                   "(policies trained on different demos then share it, as GPC composition needs)")


class OfflineAlgorithm(Algorithm):
    """The offline loop's contract (BC, QGF): the config is an OfflineConfig; `update` takes normalised
    batches {obs, actions} of demonstration windows, plus {reward, next_obs, bootstrap} chunk returns
    (robopol.data.chunk_returns) when `return_discount` is set; `validation_loss` scores held-out windows."""

    loop = "offline"
    cfg: OfflineConfig

    @property
    def return_discount(self) -> float | None:
        """The per-env-step discount of the chunk returns batches must carry; None: windows only."""
        return None

    def step_rewards(self, episode: Episode) -> np.ndarray:
        """The per-step rewards (T,) chunk returns sum: the file's, unless the algorithm chooses otherwise."""
        return episode.rewards

    @abc.abstractmethod
    def validation_loss(self, obs: torch.Tensor, actions: torch.Tensor, seed: int = 0) -> float:
        """A loss on held-out windows with fixed noise draws, so successive values are comparable."""


def algorithm_class(name: str) -> type[Algorithm]:
    algorithms = registry.lookup("algorithm")
    if name not in algorithms:
        raise ConfigError(f"policy.algo.name: {name!r} has no algorithm; choose one of: {', '.join(sorted(algorithms))}")
    return algorithms[name]
