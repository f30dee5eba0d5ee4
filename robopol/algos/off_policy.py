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


class Replay:
    """Batches from the store with observations normalised by the current statistics and rewards
    scaled by the current return std (when the run scales rewards): stored data stays raw."""

    def __init__(self, store: TransitionStore, normalizer: Normalizer, reward_scaler: RewardScaler | None) -> None:
        self.store, self.normalizer, self.reward_scaler = store, normalizer, reward_scaler

    def sample(self, batch_size: int, n_step: int = 1, discount: float = 0.99, view: str = "all") -> dict[str, torch.Tensor]:
        batch = self.store.sample(batch_size, n_step, discount, view)
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
