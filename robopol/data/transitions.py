"""The one chunk-level transition store, for off-policy replay and offline datasets alike.

A transition is one executed action chunk in one env: (obs, action chunk, chunk reward, next obs,
terminated, ended, success, episode id, per-sample extras). `ended` marks every episode end
(termination or truncation) and `next_obs` is then the episode's true final observation, so a
truncation can be bootstrapped and a termination is not. Observations are stored raw: normalisers
move during training, so they are applied when a batch is sampled, never when it is stored.

Storage is circular, one column per env, so n-step returns follow each env in time. An episode
counts as successful once any of its transitions reports success; `sample(view="success")` draws
from those episodes only (OGPO's success buffer). `state_dict` holds the filled rows, so a resume
restores the replay exactly; its size is the filled rows x (2 x obs + action + 5 scalars) floats
(1M Hopper transitions: about 120 MB)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

VIEWS = ("all", "success")


class TransitionStore:
    def __init__(self, capacity: int, num_envs: int, obs_shape: tuple[int, ...], action_shape: tuple[int, ...],
                 extras: Mapping[str, tuple[int, ...]] | None = None) -> None:
        if capacity < 1 or num_envs < 1:
            raise ValueError(f"capacity and num_envs must be positive, got {capacity} and {num_envs}")
        self.capacity, self.num_envs = capacity, num_envs
        size = (capacity, num_envs)
        self.columns: dict[str, torch.Tensor] = {
            "obs": torch.zeros(*size, *obs_shape), "next_obs": torch.zeros(*size, *obs_shape),
            "actions": torch.zeros(*size, *action_shape), "reward": torch.zeros(size),
            "terminated": torch.zeros(size, dtype=torch.bool), "ended": torch.zeros(size, dtype=torch.bool),
            "success": torch.zeros(size, dtype=torch.bool), "episode": torch.full(size, -1, dtype=torch.int64),
            "episode_success": torch.zeros(size, dtype=torch.bool),
            **{f"extra.{name}": torch.zeros(*size, *shape) for name, shape in (extras or {}).items()},
        }
        self.pos, self.size = 0, 0
        self.current_episode = torch.arange(num_envs, dtype=torch.int64)
        self.current_success = torch.zeros(num_envs, dtype=torch.bool)
        self.next_episode = num_envs

    def __len__(self) -> int:
        return self.size * self.num_envs

    @property
    def num_successful(self) -> int:
        """Stored transitions that belong to successful episodes."""
        return int(self.columns["episode_success"][: self.size].sum())

    def add(self, obs: torch.Tensor, actions: torch.Tensor, reward: torch.Tensor, next_obs: torch.Tensor,
            terminated: torch.Tensor, truncated: torch.Tensor, success: torch.Tensor | None = None,
            **extras: torch.Tensor) -> None:
        """One chunk step of every env. `next_obs` must be the final observation where an episode ended."""
        c, i = self.columns, self.pos
        success = torch.zeros(self.num_envs, dtype=torch.bool) if success is None else success.bool()
        ended = terminated | truncated
        c["obs"][i], c["actions"][i], c["reward"][i], c["next_obs"][i] = obs, actions, reward, next_obs
        c["terminated"][i], c["ended"][i], c["success"][i] = terminated, ended, success
        c["episode"][i] = self.current_episode
        for name, value in extras.items():
            c[f"extra.{name}"][i] = value
        newly = success & ~self.current_success
        self.current_success |= success
        c["episode_success"][i] = self.current_success
        if newly.any():  # earlier transitions of these episodes join the success view
            c["episode_success"] |= torch.isin(c["episode"], self.current_episode[newly])
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        if ended.any():
            n = int(ended.sum())
            self.current_episode[ended] = torch.arange(self.next_episode, self.next_episode + n)
            self.next_episode += n
            self.current_success[ended] = False

    def sample(self, batch_size: int, n_step: int = 1, discount: float = 0.99, view: str = "all",
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """A TD-ready batch: `reward` summed over up to n_step transitions of one episode with
        `discount`, `next_obs` to bootstrap from, and `bootstrap` = discount^k, or 0 after a termination.
        view="success" draws start transitions from successful episodes only."""
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty transition store")
        c = self.columns
        oldest = (self.pos - self.size) % self.capacity
        if view == "success":
            rows, env = torch.nonzero(c["episode_success"], as_tuple=True)
            if len(rows) == 0:
                raise RuntimeError("no successful episode stored yet; check num_successful before sampling it")
            pick = torch.randint(0, len(rows), (batch_size,), generator=generator)
            start, env = rows[pick], env[pick]
            offset = (start - oldest) % self.capacity
        else:
            offset = torch.randint(0, self.size, (batch_size,), generator=generator)
            start = (oldest + offset) % self.capacity
            env = torch.randint(0, self.num_envs, (batch_size,), generator=generator)
        if n_step == 1:  # SAC's case, one env step per gradient step: skip the window arithmetic
            reward, count, last = c["reward"][start, env], torch.ones(batch_size, dtype=torch.int64), start
        else:
            steps = (start[:, None] + torch.arange(n_step)) % self.capacity  # (B, n)
            written = (offset[:, None] + torch.arange(n_step)) < self.size
            ended = c["ended"][steps, env[:, None]] & written
            # A transition counts if every earlier one in the window was written and did not end the episode.
            alive = torch.cumprod(torch.cat([torch.ones(batch_size, 1, dtype=torch.bool), ~ended[:, :-1]], dim=1).long(),
                                  dim=1).bool() & written
            powers = discount ** torch.arange(n_step, dtype=torch.float32)
            reward = (c["reward"][steps, env[:, None]] * powers * alive).sum(dim=1)
            count = alive.sum(dim=1)
            last = steps[torch.arange(batch_size), count - 1]
        terminal = c["terminated"][last, env]
        batch = {"obs": c["obs"][start, env], "actions": c["actions"][start, env], "reward": reward,
                 "next_obs": c["next_obs"][last, env], "bootstrap": (discount ** count.float()) * (~terminal).float(),
                 "n": count, "success": c["success"][start, env]}
        batch.update({k.removeprefix("extra."): v[start, env] for k, v in c.items() if k.startswith("extra.")})
        return batch

    def add_episodes(self, obs: Sequence[np.ndarray], actions: Sequence[np.ndarray], rewards: Sequence[np.ndarray],
                     success: Sequence[np.ndarray], n_obs_steps: int, horizon: int, n_action_steps: int) -> None:
        """Demonstrations (per-episode (T, obs_dim) raw observations, (T, act_dim) normalised actions,
        (T,) rewards and success flags) as chunk transitions, every n_action_steps-th step starting one.
        Needs a one-column store. An episode ends truncated unless its last step succeeded (terminated)."""
        from robopol.data.windows import window_indices

        if self.num_envs != 1:
            raise ValueError("demonstrations fill a one-column store (num_envs=1)")
        for ep_obs, ep_act, ep_rew, ep_succ in zip(obs, actions, rewards, success):
            T = len(ep_act)
            obs_idx, act_idx = window_indices([T], n_obs_steps, horizon)
            starts = np.arange(0, T, n_action_steps)
            nexts = np.minimum(starts + n_action_steps, T - 1)
            cum = np.concatenate([[0.0], np.cumsum(ep_rew, dtype=np.float64)])
            chunk_reward = cum[np.minimum(starts + n_action_steps, T)] - cum[starts]
            last = starts + n_action_steps >= T
            chunk_success = np.array([ep_succ[s:s + n_action_steps].any() for s in starts])
            terminated = torch.from_numpy(last & bool(ep_succ[-1]))
            for k in range(len(starts)):  # one episode's chunks, a few hundred rows at most
                self.add(torch.as_tensor(ep_obs[obs_idx[starts[k]]], dtype=torch.float32)[None],
                         torch.as_tensor(ep_act[act_idx[starts[k]]], dtype=torch.float32)[None],
                         torch.tensor([chunk_reward[k]], dtype=torch.float32),
                         torch.as_tensor(ep_obs[obs_idx[nexts[k]]], dtype=torch.float32)[None],
                         terminated[k:k + 1], torch.tensor([bool(last[k])]) & ~terminated[k:k + 1],
                         torch.tensor([bool(chunk_success[k])]))

    def truncate_in_flight(self) -> None:
        """End every env's current episode at its newest transition (as a truncation): a resumed run
        resets its envs, so n-step windows must not run from the old episode into the new one."""
        if self.size == 0:
            return
        last = (self.pos - 1) % self.capacity
        self.columns["ended"][last] = True
        self.current_episode = torch.arange(self.next_episode, self.next_episode + self.num_envs)
        self.next_episode += self.num_envs
        self.current_success[:] = False

    def state_dict(self) -> dict[str, Any]:
        rows = self.size if self.size < self.capacity else self.capacity
        return {"pos": self.pos, "size": self.size, "next_episode": self.next_episode,
                "current_episode": self.current_episode.clone(), "current_success": self.current_success.clone(),
                "columns": {k: v[:rows].clone() for k, v in self.columns.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in state["columns"].items():
            if name not in self.columns or value.shape[1:] != self.columns[name].shape[1:] or len(value) > self.capacity:
                raise ValueError(f"stored transitions do not fit this store: column {name!r} {tuple(value.shape)}")
            self.columns[name][: len(value)] = value
        self.pos, self.size, self.next_episode = int(state["pos"]), int(state["size"]), int(state["next_episode"])
        self.current_episode = state["current_episode"].clone()
        self.current_success = state["current_success"].clone()
