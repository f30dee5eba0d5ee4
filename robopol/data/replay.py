"""Off-policy replay: circular, chunk-level, one column per env so n-step returns follow each env in time.

A transition is one executed chunk: (obs, action chunk, chunk reward, next obs, terminated, ended),
where `ended` marks any episode end (termination or truncation) and `next_obs` is then the episode's
final observation. Sampling returns TD-ready tensors: reward summed over up to n transitions with
`discount`, the observation to bootstrap from, and the factor to multiply its value by (0 after a
termination, discount^k otherwise), so a truncation is bootstrapped and a termination is not."""

from __future__ import annotations

import torch


class ReplayBuffer:
    def __init__(self, capacity: int, num_envs: int, obs_shape: tuple[int, ...], action_shape: tuple[int, ...]) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be positive, got {capacity}")
        self.capacity, self.num_envs = capacity, num_envs
        size = (capacity, num_envs)
        self.obs = torch.zeros(*size, *obs_shape)
        self.next_obs = torch.zeros(*size, *obs_shape)
        self.actions = torch.zeros(*size, *action_shape)
        self.rewards = torch.zeros(size)
        self.terminated = torch.zeros(size, dtype=torch.bool)
        self.ended = torch.zeros(size, dtype=torch.bool)
        self.pos, self.size = 0, 0

    def __len__(self) -> int:
        return self.size * self.num_envs

    def add(self, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, next_obs: torch.Tensor,
            terminated: torch.Tensor, truncated: torch.Tensor) -> None:
        i = self.pos
        self.obs[i], self.actions[i], self.rewards[i], self.next_obs[i] = obs, actions, rewards, next_obs
        self.terminated[i], self.ended[i] = terminated, terminated | truncated
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, n_step: int = 1, discount: float = 0.99,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        # offset counts from the oldest stored transition; windows stop at the newest one written.
        oldest = (self.pos - self.size) % self.capacity
        offset = torch.randint(0, self.size, (batch_size,), generator=generator)
        start = (oldest + offset) % self.capacity
        env = torch.randint(0, self.num_envs, (batch_size,), generator=generator)
        steps = (start[:, None] + torch.arange(n_step)) % self.capacity           # (B, n)
        written = (offset[:, None] + torch.arange(n_step)) < self.size
        ended = self.ended[steps, env[:, None]] & written
        # A transition counts if every earlier one in the window was written and did not end the episode.
        alive = torch.cumprod(torch.cat([torch.ones(batch_size, 1, dtype=torch.bool),
                                         ~ended[:, :-1]], dim=1).long(), dim=1).bool() & written
        powers = discount ** torch.arange(n_step, dtype=torch.float32)
        reward = (self.rewards[steps, env[:, None]] * powers * alive).sum(dim=1)
        count = alive.sum(dim=1)
        last = steps[torch.arange(batch_size), count - 1]
        terminal = self.terminated[last, env]
        return {
            "obs": self.obs[start, env],
            "actions": self.actions[start, env],
            "reward": reward,
            "next_obs": self.next_obs[last, env],
            "bootstrap": (discount ** count.float()) * (~terminal).float(),
            "n": count,
        }
