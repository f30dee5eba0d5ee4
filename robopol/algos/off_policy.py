"""What every off-policy algorithm shares: replay settings read by the off-policy loop, and the
normalised view of the transition store its updates sample from."""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch

from robopol.algos.base import Algorithm
from robopol.config import AlgoConfig
from robopol.data.normalizer import Normalizer, RewardScaler
from robopol.data.transitions import TransitionStore
from robopol.errors import ConfigError
from robopol.typed_config import field


@dataclass
class OffPolicyConfig(AlgoConfig):
    gamma: float = field(0.99, ge=0, le=1, doc="discount per executed chunk")
    buffer_size: int = field(1_000_000, ge=1, doc="transitions (chunks) kept, over all envs")
    batch_size: int = field(256, ge=1)
    n_step: int = field(1, ge=1, doc="transitions summed into one TD target")
    learning_starts: int = field(10_000, ge=0, doc="env steps collected before the first update")
    random_warmup: bool = field(True, doc="uniform random actions until learning_starts (SB3's choice)")
    train_freq: int = field(1, ge=1, doc="chunk steps per env between updates")
    utd_ratio: float = field(1.0, gt=0, doc="gradient steps per transition collected after learning_starts")
    demos: str | None = field(None, doc="a demonstration file (robopol demos; robomimic HDF5, PushT zarr) whose "
                                         "chunks make up demo_fraction of every replay batch")
    demo_fraction: float = field(0.0, ge=0, lt=1, doc="share of each replay batch drawn from `demos` (OGPO's "
                                                        "offline_ratio; 0: none, as the official scripts)")

    def __post_init__(self) -> None:
        if (self.demos is None) != (self.demo_fraction == 0):
            raise ConfigError(f"policy.algo.demo_fraction: {self.demo_fraction} with policy.algo.demos={self.demos!r}; "
                              "set both (a file and a share in (0, 1)) or neither")


class Replay:
    """Batches from the store with observations normalised by the current statistics and rewards
    scaled by the current return std (when the run scales rewards): stored data stays raw. Given a
    store of demonstrations, round(demo_fraction x batch) rows of every "all" batch come from it
    (the first rows); the success view stays online only."""

    def __init__(self, store: TransitionStore, normalizer: Normalizer, reward_scaler: RewardScaler | None,
                 demos: TransitionStore | None = None, demo_fraction: float = 0.0) -> None:
        self.store, self.normalizer, self.reward_scaler = store, normalizer, reward_scaler
        self.demos, self.demo_fraction = demos, demo_fraction if demos is not None else 0.0

    def sample(self, batch_size: int, n_step: int = 1, discount: float = 0.99, view: str = "all") -> dict[str, torch.Tensor]:
        n_demo = round(self.demo_fraction * batch_size) if view == "all" else 0
        batch = self.store.sample(batch_size - n_demo, n_step, discount, view)
        if n_demo and self.demos is not None:
            demo = self.demos.sample(n_demo, n_step, discount)
            batch = {key: torch.cat([demo[key], value]) for key, value in batch.items()}
        batch["obs"] = self.normalizer.normalize_obs(batch["obs"])
        batch["next_obs"] = self.normalizer.normalize_obs(batch["next_obs"])
        if self.reward_scaler is not None:
            batch["reward"] = batch["reward"] / self.reward_scaler.std
        return batch

    def sample_successes(self, batch_size: int) -> dict[str, torch.Tensor]:
        """A batch from successful episodes (OGPO's success buffer), or from all of the replay while
        none has succeeded yet."""
        return self.sample(batch_size, view="success" if self.store.num_successful else "all")


class OffPolicyAlgorithm(Algorithm):
    loop = "off_policy"
    cfg: OffPolicyConfig

    def extras_spec(self) -> dict[str, tuple[int, ...]]:
        """Per-transition tensors (name -> shape) this algorithm stores beside each chunk."""
        return {}

    @abc.abstractmethod
    def update(self, data: Replay, progress: float, gradient_steps: int = 1) -> dict[str, float]:  # type: ignore[override]
        """`gradient_steps` updates on batches drawn from the replay."""
