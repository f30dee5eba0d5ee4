"""On-policy rollout storage, chunk-level, with GAE that bootstraps on truncation and not on termination.

Each entry is one executed action chunk in one env. Algorithms add per-sample extras (log-probs,
denoising chains, FPO's (t, eps, loss) triples) by declaring their shapes up front."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

import torch


class QueuedStep(NamedTuple):
    """One chunk step of every env as `add` received it (raw rewards)."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    values: torch.Tensor
    extras: dict[str, torch.Tensor]


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
        self.pending: list[QueuedStep] = []  # steps added since the last compute_gae
        self.final_values: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (step, env index, V(final obs))

    def add(self, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, terminated: torch.Tensor,
            truncated: torch.Tensor, values: torch.Tensor, **extras: torch.Tensor) -> None:
        """Queue one chunk step of every env (raw rewards); `compute_gae` writes the queued steps into the
        storage at once, as a per-step write of each field is a dozen small tensor copies a step."""
        if self.pos >= self.steps:
            raise RuntimeError("rollout buffer is full; call reset() after each update")
        self.pending.append(QueuedStep(obs, actions, rewards, terminated, truncated, values, extras))
        self.pos += 1

    def bootstrap(self, env_index: torch.Tensor, final_values: torch.Tensor) -> None:
        """V(final observation) of the envs `env_index` whose episodes ended at the step just added: a
        truncated (not terminated) one's reward absorbs gamma * that value, the value it would have had
        (SB3's treatment of timeouts)."""
        self.final_values.append((self.pos - 1, env_index, final_values))

    def compute_gae(self, last_values: torch.Tensor, gamma: float, gae_lambda: float,
                    scale_rewards: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> None:
        """GAE(lambda) over the stored steps; `last_values` are V of the observations after the last step.
        `scale_rewards(rewards, episode_ends)`, both (steps, num_envs), rescales the raw rewards first (the
        bootstrapped values are already in the scaled units the critic learns)."""
        self._store_pending(gamma, scale_rewards)
        n = self.pos
        rewards, values, not_end = self.rewards[:n], self.values[:n], (~self.episode_ends[:n]).float()
        next_values = torch.cat([values[1:], last_values.to(values)[None]])
        deltas = (rewards + gamma * next_values * not_end - values).unbind(0)
        decays = (gamma * gae_lambda * not_end).unbind(0)
        last_gae, advantages = torch.zeros(self.num_envs), []
        for t in reversed(range(n)):  # two small ops a step: the rest is computed for all steps at once
            last_gae = deltas[t] + decays[t] * last_gae
            advantages.append(last_gae)
        self.advantages[:n] = torch.stack(advantages[::-1])
        self.returns[:n] = self.advantages[:n] + values

    def _store_pending(self, gamma: float, scale_rewards: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None) -> None:
        """Stack the queued steps into the storage (one copy per field) and bootstrap truncated episodes."""
        if not self.pending:
            return
        start, end = self.pos - len(self.pending), self.pos
        steps = QueuedStep(*zip(*self.pending))  # each field: a tuple over the queued steps
        for target, parts in ((self.obs, steps.obs), (self.actions, steps.actions), (self.values, steps.values)):
            target[start:end] = torch.stack(parts)
        for name in self.extras:
            self.extras[name][start:end] = torch.stack([extras[name] for extras in steps.extras])
        terminated, truncated = torch.stack(steps.terminated).cpu(), torch.stack(steps.truncated).cpu()
        ends = terminated | truncated
        rewards = torch.stack(steps.rewards).cpu()
        if scale_rewards is not None:
            rewards = scale_rewards(rewards, ends)
        final_values = torch.zeros(end - start, self.num_envs)
        for t, env_index, v in self.final_values:
            final_values[t - start, env_index.cpu()] = v.float().cpu()
        self.rewards[start:end] = rewards.float() + gamma * final_values * (truncated & ~terminated)
        self.episode_ends[start:end] = ends
        self.pending.clear()
        self.final_values.clear()

    def minibatch_groups(self, batch_size: int, group: int = 1, generator: torch.Generator | None = None
                         ) -> Iterator[dict[str, torch.Tensor]]:
        """Shuffled minibatches over all (step, env) samples, `group` consecutive ones at a time, each tensor
        (k, batch_size, ...) with k <= group (a last partial minibatch comes alone, (1, rest, ...)). One
        gather per tensor shuffles the whole epoch; each group is then a view of a contiguous slice of it."""
        n = self.pos * self.num_envs
        flat = {"obs": self.obs, "actions": self.actions, "values": self.values, "advantages": self.advantages,
                "returns": self.returns, **self.extras}
        order = torch.randperm(n, generator=generator)
        shuffled = {k: v[: self.pos].reshape(n, *v.shape[2:])[order] for k, v in flat.items()}
        whole = n // batch_size
        for first in range(0, whole, group):
            k = min(group, whole - first)
            start = first * batch_size
            yield {key: v[start:start + k * batch_size].view(k, batch_size, *v.shape[1:]) for key, v in shuffled.items()}
        if whole * batch_size < n:
            yield {key: v[whole * batch_size:][None] for key, v in shuffled.items()}

    def reset(self) -> None:
        self.pos = 0
        self.pending.clear()
        self.final_values.clear()
