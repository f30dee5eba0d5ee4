"""Demonstrations -> supervised training windows: an observation history and an action chunk.

A window at step t of an episode holds the observations of steps t-n_obs_steps+1 .. t and the
actions of steps t .. t+horizon-1, the chunk the actor predicts from that history (robopol executes
a chunk from its first action, see sim.wrappers). Steps before the episode's start repeat its first
observation and steps after its end repeat its last action, as diffusion_policy's SequenceSampler
pads; every step of every episode starts one window. Windows are index arrays into the
concatenated episodes, so a batch is one fancy-indexing gather, with no per-sample Python."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Windows:
    obs: torch.Tensor  # (N, obs_dim), all episodes' frames concatenated
    actions: torch.Tensor  # (N, act_dim)
    obs_index: torch.Tensor  # (W, n_obs_steps) rows of `obs` in each window
    action_index: torch.Tensor  # (W, horizon) rows of `actions` in each window

    def __len__(self) -> int:
        return len(self.obs_index)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows `index` (B,) -> obs (B, n_obs_steps, obs_dim), actions (B, horizon, act_dim)."""
        return self.obs[self.obs_index[index]], self.actions[self.action_index[index]]


def window_indices(lengths: Sequence[int], n_obs_steps: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (W, n_obs_steps) and (W, horizon) into the concatenation of episodes of `lengths`,
    clamped to each window's own episode so the edges repeat."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size == 0 or (lengths < 1).any():
        raise ValueError(f"episode lengths must be positive, got {lengths.tolist()}")
    ends = np.cumsum(lengths)
    starts = ends - lengths
    t = np.arange(ends[-1])
    first = np.repeat(starts, lengths)[:, None]
    last = np.repeat(ends - 1, lengths)[:, None]
    obs_index = np.clip(t[:, None] + np.arange(1 - n_obs_steps, 1), first, last)
    action_index = np.clip(t[:, None] + np.arange(horizon), first, last)
    return obs_index, action_index


def make_windows(obs: Sequence[np.ndarray], actions: Sequence[np.ndarray], n_obs_steps: int, horizon: int) -> Windows:
    """Windows over episodes given as per-episode (T, obs_dim) observations and (T, act_dim) actions."""
    obs_index, action_index = window_indices([len(a) for a in actions], n_obs_steps, horizon)
    return Windows(torch.as_tensor(np.concatenate(obs), dtype=torch.float32),
                   torch.as_tensor(np.concatenate(actions), dtype=torch.float32),
                   torch.from_numpy(obs_index), torch.from_numpy(action_index))
