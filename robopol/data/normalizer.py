"""Observation / action normalisation (travels inside the checkpoint) and training-time reward scaling."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from robopol import distributed


@dataclass(frozen=True)
class Moments:
    """Count, mean and population variance of a set of samples; `add` is the exact parallel merge."""

    count: float
    mean: Any  # a tensor (per-dimension) or a float
    var: Any

    def add(self, other: Moments) -> Moments:
        total = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / total
        var = (self.var * self.count + other.var * other.count + delta**2 * self.count * other.count / total) / total
        return Moments(total, mean, var)


class SinceMerge:
    """Under torchrun, what a running statistic keeps between merges over ranks: its statistics at the last
    merge and this rank's samples since (Normalizer and RewardScaler each hold one; no-ops in one process)."""

    def __init__(self) -> None:
        self.at_merge: Moments | None = None
        self.samples: Moments | None = None

    def note(self, batch: Moments, current: Callable[[], Moments]) -> None:
        """Record a batch about to be folded in; `current` gives the statistics before the first one."""
        if not distributed.active():
            return
        if self.samples is None:
            self.at_merge, self.samples = current(), batch
        else:
            self.samples = self.samples.add(batch)

    def merge(self, empty: Moments) -> tuple[Moments | None, Moments]:
        """A collective: (the statistics at the last merge, None if this rank saw nothing since; every rank's
        samples since, shaped like `empty`), and a fresh start."""
        mine = self.samples or empty
        mean, var, n = distributed.merge_moments(torch.as_tensor(mine.mean, dtype=torch.float64),
                                                 torch.as_tensor(mine.var, dtype=torch.float64), mine.count)
        at_merge, self.at_merge, self.samples = self.at_merge, None, None
        return at_merge, Moments(n, mean, var)


class Folded(NamedTuple):
    """A batch's moments (float64) and the running statistics with the batch folded in."""

    batch_mean: torch.Tensor
    batch_var: torch.Tensor
    mean: torch.Tensor  # float32, as stored
    var: torch.Tensor
    count: torch.Tensor  # 0-d float64


class Normalizer(nn.Module):
    """obs -> clip((obs - mean) / std, +-clip_obs) (no clip if None); actions in [-1, 1] <-> env units [low, high].

    Running statistics (Chan et al. parallel update) serve RL from scratch; `fit` sets them from
    demonstrations for behaviour cloning. Buffers, so they are saved with the weights. Under torchrun each
    rank folds in its own envs' observations as they come and `merge_ranks` (once per iteration, not per
    step: every collective is a scheduling round trip) makes every rank's statistics those of all ranks'
    observations so far."""

    def __init__(self, obs_dim: int, action_low: np.ndarray, action_high: np.ndarray, clip_obs: float | None = 10.0,
                 eps: float = 1e-8) -> None:
        super().__init__()
        self.clip_obs, self.eps = clip_obs, eps
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_var", torch.ones(obs_dim))
        self.register_buffer("count", torch.tensor(eps, dtype=torch.float64))
        self.register_buffer("action_low", torch.as_tensor(np.asarray(action_low, dtype=np.float32)))
        self.register_buffer("action_high", torch.as_tensor(np.asarray(action_high, dtype=np.float32)))
        self.since_merge = SinceMerge()

    @torch.no_grad()
    def update(self, obs: torch.Tensor) -> None:
        """Fold a batch of raw observations (..., obs_dim) into the running mean and variance."""
        self.commit(obs, self.folded(obs))

    def folded(self, obs: torch.Tensor) -> Folded:
        """The batch's moments and the running statistics with it folded in, nothing written: a compiled
        rollout step computes them in its graph and `commit`s them eagerly (torch 2.13's compile drops
        the write to the 0-d float64 `count`)."""
        flat = obs.reshape(-1, obs.shape[-1]).double()
        var, mean = torch.var_mean(flat, dim=0, unbiased=False)
        return Folded(mean, var, *self._folded(mean, var, flat.shape[0]))

    @torch.no_grad()
    def commit(self, obs: torch.Tensor, folded: Folded) -> None:
        """Store `folded`, the statistics with the batch `obs` folded in."""
        self.since_merge.note(Moments(obs.numel() // obs.shape[-1], folded.batch_mean, folded.batch_var),
                              lambda: Moments(float(self.count), self.obs_mean.clone(), self.obs_var.clone()))
        self._set(folded.mean, folded.var, folded.count)

    @torch.no_grad()
    def merge_ranks(self) -> None:
        """Every rank's statistics := the statistics at the last merge plus every rank's observations since
        (a collective: every rank calls it at the same point); nothing to do in a single process."""
        if not distributed.active():
            return
        zeros = torch.zeros_like(self.obs_mean, dtype=torch.float64)
        at_merge, everyone = self.since_merge.merge(Moments(0, zeros, zeros))
        if at_merge is not None:  # back to the statistics before this rank's own observations
            self.obs_mean.copy_(at_merge.mean)
            self.obs_var.copy_(at_merge.var)
            self.count.fill_(at_merge.count)
        if everyone.count:
            self._set(*self._folded(everyone.mean, everyone.var, everyone.count))

    def _folded(self, mean: torch.Tensor, var: torch.Tensor, n: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The stored statistics with a batch's (mean, var, n) merged in: (mean, var) float32, count float64."""
        total = self.count + n
        delta = mean - self.obs_mean.double()
        new_mean = self.obs_mean.double() + delta * n / total
        m2 = self.obs_var.double() * self.count + var * n + delta.pow(2) * self.count * n / total
        return new_mean.float(), (m2 / total).float(), total

    def _set(self, mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor) -> None:
        self.obs_mean.copy_(mean)
        self.obs_var.copy_(var)
        self.count.copy_(count)

    @torch.no_grad()
    def fit(self, obs: torch.Tensor, actions: torch.Tensor | None = None) -> None:
        """Set statistics from a dataset; actions' min/max become the [-1, 1] range (diffusion_policy)."""
        flat = obs.reshape(-1, obs.shape[-1]).double()
        self.obs_mean.copy_(flat.mean(0).float())
        self.obs_var.copy_(flat.var(0, unbiased=False).float())
        self.count.fill_(flat.shape[0])
        if actions is not None:
            flat_a = actions.reshape(-1, actions.shape[-1])
            low, high = flat_a.min(0).values, flat_a.max(0).values
            pad = ((high - low) < 1e-6).float() * 1e-3  # a constant action dimension still maps to a range
            self.action_low.copy_(low - pad)
            self.action_high.copy_(high + pad)

    def normalize_obs(self, obs: torch.Tensor, folded: Folded | None = None) -> torch.Tensor:
        """(obs - mean) / std, clipped to +-clip_obs unless that is None (the statistics of a run that does
        not normalise stay 0 and 1, so its observations pass through unchanged); with `folded`'s
        statistics instead of the stored ones where given."""
        mean, var = (self.obs_mean, self.obs_var) if folded is None else (folded.mean, folded.var)
        z = (obs - mean) / (var + self.eps).sqrt()
        return z if self.clip_obs is None else z.clamp(-self.clip_obs, self.clip_obs)

    def normalize_action(self, action: torch.Tensor) -> torch.Tensor:
        return 2.0 * (action - self.action_low) / (self.action_high - self.action_low) - 1.0

    def unnormalize_action(self, action: torch.Tensor) -> torch.Tensor:
        """The one place where actions return to env units; clipped to the bounds."""
        return self.action_low + (action.clamp(-1.0, 1.0) + 1.0) * 0.5 * (self.action_high - self.action_low)


class RewardScaler:
    """Divides rewards by the running std of the discounted return (SB3 VecNormalize's norm_reward)."""

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0, eps: float = 1e-8) -> None:
        self.gamma, self.clip, self.eps = gamma, clip, eps
        self.returns = np.zeros(num_envs)
        self.mean, self.var, self.count = 0.0, 1.0, eps
        self.since_merge = SinceMerge()

    def __call__(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        self.returns = self.returns * self.gamma + reward
        self._update(self.returns)
        self.returns[done] = 0.0
        return np.clip(reward / np.sqrt(self.var + self.eps), -self.clip, self.clip)

    def scale_rollout(self, rewards: torch.Tensor, ended: torch.Tensor) -> torch.Tensor:
        """A rollout's rewards (steps, num_envs) scaled step by step, as calls step by step would: the
        on-policy loop scales once per rollout, on numpy rows, rather than converting tensors every step."""
        r, done = rewards.cpu().numpy(), ended.cpu().numpy()
        return torch.from_numpy(np.stack([self(r[t], done[t]) for t in range(len(r))])).to(rewards.device)

    @property
    def std(self) -> float:
        """The current divisor: sqrt of the running variance of the discounted return."""
        return float(np.sqrt(self.var + self.eps))

    def _update(self, x: np.ndarray) -> None:
        # x.mean() and x.var() to the bit (numpy's own reductions), without their per-call Python overhead
        n = x.shape[0]
        mean = np.add.reduce(x) / n
        var = np.add.reduce(np.square(x - mean)) / n
        self.since_merge.note(Moments(n, mean, var), lambda: Moments(self.count, self.mean, self.var))
        self._fold(mean, var, n)

    def merge_ranks(self) -> None:
        """Every rank scales by the discounted returns of all ranks' envs: the statistics at the last merge
        plus every rank's returns since (a collective, like Normalizer.merge_ranks)."""
        if not distributed.active():
            return
        at_merge, everyone = self.since_merge.merge(Moments(0, 0.0, 0.0))
        if at_merge is not None:
            self.count, self.mean, self.var = at_merge.count, at_merge.mean, at_merge.var
        if everyone.count:
            self._fold(float(everyone.mean), float(everyone.var), everyone.count)

    def _fold(self, mean: float, var: float, n: float) -> None:
        total = self.count + n
        delta = mean - self.mean
        self.var = (self.var * self.count + var * n + delta**2 * self.count * n / total) / total
        self.mean += delta * n / total
        self.count = total

    def state_dict(self) -> dict[str, Any]:
        """Statistics and the discounted returns in flight, so a resumed run scales exactly as before."""
        return {"mean": self.mean, "var": self.var, "count": self.count, "returns": torch.from_numpy(self.returns.copy())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.var, self.count = state["mean"], state["var"], state["count"]
        if "returns" in state:  # checkpoints before exact resume lack it: the returns in flight restart at 0
            self.returns = state["returns"].numpy().copy()
