"""On-policy rollout storage, chunk-level, with GAE that bootstraps on truncation and not on termination.

Each entry is one executed action chunk in one env. Algorithms add per-sample extras (log-probs,
denoising chains, FPO's (t, eps, loss) triples) by declaring their shapes up front."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch


class RolloutBuffer:
    def __init__(self, steps: int, num_envs: int, obs_shape: tuple[int, ...], action_shape: tuple[int, ...],
                 extras: Mapping[str, tuple[int, ...]] | None = None) -> None:
        self.steps, self.num_envs = steps, num_envs
        size = (steps, num_envs)
        self.obs = torch.zeros(*size, *obs_shape)
        self.actions = torch.zeros(*size, *action_shape)
        self.rewards = torch.zeros(size)
        self.episode_ends = torch.zeros(size, dtype=torch.bool)
        self.values = torch.zeros(size)
        self.advantages = torch.zeros(size)
        self.returns = torch.zeros(size)
        self.extras = {name: torch.zeros(*size, *shape) for name, shape in (extras or {}).items()}
        self.pos = 0

    def add(self, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, terminated: torch.Tensor,
            truncated: torch.Tensor, values: torch.Tensor, final_values: torch.Tensor, gamma: float,
            **extras: torch.Tensor) -> None:
        """Store one chunk step of every env. A truncated (not terminated) episode's reward absorbs
        gamma * V(final observation), the value it would have had (SB3's treatment of timeouts)."""
        if self.pos >= self.steps:
            raise RuntimeError("rollout buffer is full; call reset() after each update")
        bootstrap = truncated & ~terminated
        self.obs[self.pos] = obs
        self.actions[self.pos] = actions
        self.rewards[self.pos] = rewards + gamma * final_values * bootstrap
        self.episode_ends[self.pos] = terminated | truncated
        self.values[self.pos] = values
        for name, value in extras.items():
            self.extras[name][self.pos] = value
        self.pos += 1

    def compute_gae(self, last_values: torch.Tensor, gamma: float, gae_lambda: float) -> None:
        """GAE(lambda) over the stored steps; `last_values` are V of the observations after the last step."""
        last_gae = torch.zeros(self.num_envs)
        next_values = last_values
        for t in reversed(range(self.pos)):
            not_end = (~self.episode_ends[t]).float()
            delta = self.rewards[t] + gamma * next_values * not_end - self.values[t]
            last_gae = delta + gamma * gae_lambda * not_end * last_gae
            self.advantages[t] = last_gae
            next_values = self.values[t]
        self.returns[: self.pos] = self.advantages[: self.pos] + self.values[: self.pos]

    def minibatches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """Shuffled minibatches over all (step, env) samples, flattened to a batch dimension. One gather
        per tensor shuffles the whole epoch; each minibatch is then a contiguous slice of it."""
        n = self.pos * self.num_envs
        flat = {"obs": self.obs, "actions": self.actions, "values": self.values, "advantages": self.advantages,
                "returns": self.returns, **self.extras}
        order = torch.randperm(n, generator=generator)
        shuffled = {k: v[: self.pos].reshape(n, *v.shape[2:])[order] for k, v in flat.items()}
        for start in range(0, n, batch_size):
            yield {k: v[start:start + batch_size] for k, v in shuffled.items()}

    def reset(self) -> None:
        self.pos = 0
