"""Which action to send at each cycle, given the chunks the policy has produced.

Actions are indexed by the cycle they are meant for: a chunk computed from the observation of
cycle c holds actions for cycles c, c+1, ...; it is merged at cycle k >= c with its first k - c
actions skipped, because their moment has passed (latency compensation). `ActionQueue` is the
receding horizon of diffusion_policy (a new chunk replaces the old one); `TemporalEnsemble` is
ACT's temporal ensembling (overlapping predictions for the same cycle are averaged)."""

from __future__ import annotations

import numpy as np


class ActionQueue:
    def __init__(self, horizon: int, n_action_steps: int, act_dim: int) -> None:
        self.horizon, self.n_action_steps = horizon, n_action_steps
        self._actions = np.zeros((0, act_dim), dtype=np.float32)
        self._index = 0  # position within the newest chunk of the next action to send

    def add(self, chunk: np.ndarray, skip: int) -> None:
        self._actions, self._index = chunk[skip:], skip

    def pop(self) -> np.ndarray | None:
        """The action for this cycle, or None if nothing is planned."""
        if not len(self._actions):
            return None
        action, self._actions = self._actions[0], self._actions[1:]
        self._index += 1
        return action

    def planned_left(self) -> int:
        """Actions left within the newest chunk's n_action_steps (the rest is a reserve for late chunks)."""
        return min(max(self.n_action_steps - self._index, 0), len(self._actions))

    def __len__(self) -> int:
        return len(self._actions)

    def clear(self) -> None:
        self._actions = self._actions[:0]


class TemporalEnsemble(ActionQueue):
    """Weighted mean of every chunk's prediction for a cycle; a prediction made by the i-th chunk to
    cover that cycle weighs exp(-decay * i), so older predictions weigh more (ACT)."""

    def __init__(self, horizon: int, n_action_steps: int, act_dim: int, decay: float) -> None:
        super().__init__(horizon, n_action_steps, act_dim)
        self.decay = decay
        self._sum = np.zeros((horizon, act_dim))
        self._weight = np.zeros(horizon)
        self._count = np.zeros(horizon)
        self._covered = 0

    def add(self, chunk: np.ndarray, skip: int) -> None:
        new = chunk[skip:]
        n = len(new)
        w = np.exp(-self.decay * self._count[:n])
        self._sum[:n] += w[:, None] * new
        self._weight[:n] += w
        self._count[:n] += 1
        self._covered, self._index = max(self._covered, n), skip

    def pop(self) -> np.ndarray | None:
        if not self._covered:
            return None
        action = (self._sum[0] / self._weight[0]).astype(np.float32)
        for arr in (self._sum, self._weight, self._count):
            arr[:-1] = arr[1:]
            arr[-1] = 0.0
        self._covered -= 1
        self._index += 1
        return action

    def planned_left(self) -> int:
        return min(max(self.n_action_steps - self._index, 0), self._covered)

    def __len__(self) -> int:
        return self._covered

    def clear(self) -> None:
        self._sum[:] = 0.0
        self._weight[:] = 0.0
        self._count[:] = 0.0
        self._covered = 0
