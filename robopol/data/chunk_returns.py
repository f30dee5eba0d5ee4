"""Demonstrations -> chunk transitions for offline critics (QGF's IQL): every window of
robopol.data.windows (the observation history at step t and the action chunk t..t+horizon-1) with
the return of the chunk the env executes and the history where the next chunk starts.

With k = n_action_steps executed actions and T the episode's length, the chunk ends at e = min(t + k, T):
    reward    = sum_{j=t}^{e-1} gamma^(j-t) r_j
    next_obs  = the history ending at frame e, where frame T is the episode's true final observation
    bootstrap = 0 if the episode terminated at e = T (the task was solved there), else gamma^(e-t)
so Q(s_t, a_chunk) <- reward + bootstrap * V(next_obs); a truncated episode is bootstrapped, a solved
one is not (the task envs terminate on success)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from robopol.data.episodes import Episode
from robopol.data.windows import window_indices


@dataclass(frozen=True)
class ChunkReturns:
    frames: torch.Tensor  # (sum of T + 1, obs_dim): each episode's observations, then its final one
    actions: torch.Tensor  # (sum of T, act_dim)
    obs_index: torch.Tensor  # (W, n_obs_steps) rows of `frames`
    action_index: torch.Tensor  # (W, horizon) rows of `actions`
    next_obs_index: torch.Tensor  # (W, n_obs_steps) rows of `frames`
    reward: torch.Tensor  # (W,)
    bootstrap: torch.Tensor  # (W,)

    def __len__(self) -> int:
        return len(self.reward)

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """{obs, actions, reward, next_obs, bootstrap} of windows `index` (B,)."""
        return {"obs": self.frames[self.obs_index[index]], "actions": self.actions[self.action_index[index]],
                "reward": self.reward[index], "next_obs": self.frames[self.next_obs_index[index]],
                "bootstrap": self.bootstrap[index]}


def terminated(ep: Episode) -> bool:
    """Whether the episode ended because the task was solved (robopol's task envs terminate then)."""
    return bool(ep.successes[-1]) if ep.successes is not None else False


def chunk_returns(episodes: Sequence[Episode], frames: Sequence[np.ndarray], actions: Sequence[np.ndarray],
                  rewards: Sequence[np.ndarray], n_obs_steps: int, horizon: int, executed: int,
                  gamma: float) -> ChunkReturns:
    """Chunk transitions of `episodes`, whose observations `frames` (T + 1 rows: the final
    observation appended) and `actions` (T rows) are given already normalised, with per-step `rewards`."""
    lengths = np.array([len(a) for a in actions])
    _, action_index = window_indices(lengths, n_obs_steps, horizon)
    frame_starts = np.cumsum(lengths + 1) - (lengths + 1)
    obs_rows, next_rows, returns, bootstraps = [], [], [], []
    history = np.arange(1 - n_obs_steps, 1)
    for ep, r, start, T in zip(episodes, rewards, frame_starts, lengths):
        t = np.arange(T)
        end = np.minimum(t + executed, T)
        obs_rows.append(start + np.clip(t[:, None] + history, 0, T - 1))
        next_rows.append(start + np.clip(end[:, None] + history, 0, T))
        r = np.asarray(r, dtype=np.float64)
        reward = np.zeros(T)
        for j in range(executed):
            inside = t + j < T
            reward[inside] += gamma ** j * r[(t + j)[inside]]
        bootstrap = gamma ** (end - t).astype(np.float64)
        if terminated(ep):
            bootstrap[end == T] = 0.0
        returns.append(reward)
        bootstraps.append(bootstrap)
    return ChunkReturns(torch.as_tensor(np.concatenate(frames), dtype=torch.float32),
                        torch.as_tensor(np.concatenate(actions), dtype=torch.float32),
                        torch.from_numpy(np.concatenate(obs_rows)), torch.from_numpy(action_index),
                        torch.from_numpy(np.concatenate(next_rows)),
                        torch.as_tensor(np.concatenate(returns), dtype=torch.float32),
                        torch.as_tensor(np.concatenate(bootstraps), dtype=torch.float32))


def final_frames(ep: Episode) -> np.ndarray:
    """The episode's flat observations with its final observation appended (T + 1 rows); a file
    without next_obs repeats the last observation."""
    last = (np.concatenate([v[-1:].reshape(1, -1) for v in ep.next_obs.values()], axis=1, dtype=np.float32)
            if ep.next_obs is not None else ep.flat_obs[-1:])
    return np.concatenate([ep.flat_obs, last])
