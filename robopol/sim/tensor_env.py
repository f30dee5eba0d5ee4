"""Vector environments whose observations, rewards and flags stay torch tensors on one device, the
shape of Isaac Gym, Isaac Lab and MJX-style simulators: a loop steps them without numpy round trips.

The contract (`TensorVecEnv`), for N = num_envs:
- `reset(seed=None) -> obs`: every env starts an episode; obs (N, obs_dim) float32 on `device`.
  A seed makes the episodes that follow reproducible (one generator for the batch).
- `step(actions) -> TensorStep`: actions (N, act_dim) float32 on `device`, within
  [action_low, action_high]; every env advances one step. Envs whose episode ended are reset within
  the same step (Gymnasium's SAME_STEP): `obs` holds their next episode's first observation and
  `final_obs` their episode's last one. Time-outs are `truncated` (bootstrap from final_obs), a
  terminal state is `terminated` (no bootstrap); an env is never both.
`TensorEnvAsGym` shows one env of a batch through the Gymnasium Env API, so such a task also works
with robopol's Gymnasium tooling (env checker, evaluation, the numpy training loop)."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import gymnasium as gym
import numpy as np
import torch


class TensorStep(NamedTuple):
    obs: torch.Tensor  # (N, obs_dim) float32; a finished env's first observation of its next episode
    reward: torch.Tensor  # (N,) float32
    terminated: torch.Tensor  # (N,) bool: the episode reached a terminal state
    truncated: torch.Tensor  # (N,) bool: the episode was cut by its time limit
    final_obs: torch.Tensor  # (N, obs_dim) float32; the last observation where an episode ended, else obs


class TensorVecEnv(Protocol):
    num_envs: int
    obs_dim: int
    act_dim: int
    max_episode_steps: int
    device: torch.device
    action_low: torch.Tensor  # (act_dim,)
    action_high: torch.Tensor  # (act_dim,)

    def reset(self, seed: int | None = None) -> torch.Tensor: ...

    def step(self, actions: torch.Tensor) -> TensorStep: ...


class TensorEnvAsGym(gym.Env):
    """A one-env batch behind the Gymnasium Env API (numpy in and out). The batch resets itself when an
    episode ends; this view hands out the final observation, as a Gymnasium env does, and its next
    reset() starts from the observation the batch already reset to (or reseeds it)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, env: TensorVecEnv, render_mode: str | None = None) -> None:
        if env.num_envs != 1:
            raise ValueError(f"TensorEnvAsGym shows a batch of one env; got {env.num_envs}")
        if render_mode is not None:
            raise ValueError(f"render_mode: tensor envs do not render; got {render_mode!r}")
        self.env, self.render_mode = env, None
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (env.obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(env.action_low.cpu().numpy(), env.action_high.cpu().numpy(), dtype=np.float32)
        self.pending: torch.Tensor | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None or self.pending is None:
            seed = seed if seed is not None else int(self.np_random.integers(2**31 - 1))
            self.pending = self.env.reset(seed=seed)
        obs, self.pending = self.pending, None
        return obs[0].cpu().numpy(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        actions = torch.as_tensor(np.asarray(action, np.float32).reshape(1, -1), device=self.env.device)
        result = self.env.step(actions)
        terminated, truncated = bool(result.terminated[0]), bool(result.truncated[0])
        if terminated or truncated:
            self.pending = result.obs
        return result.final_obs[0].cpu().numpy(), float(result.reward[0]), terminated, truncated, {}
