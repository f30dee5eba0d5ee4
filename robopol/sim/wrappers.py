"""Per-environment wrappers: observation history and action chunking (diffusion_policy's To / Ta)."""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np


class ObservationHistory(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Observations become the last `n_obs_steps` frames, (n_obs_steps, obs_dim); at reset the first
    frame is repeated, as diffusion_policy pads its history. It records its constructor arguments so
    the wrapped env can be rebuilt from its spec (Gymnasium's env checker does)."""

    def __init__(self, env: gym.Env, n_obs_steps: int) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, n_obs_steps=n_obs_steps)
        super().__init__(env)
        space = env.observation_space
        self.frames: deque[np.ndarray] = deque(maxlen=n_obs_steps)
        self.observation_space = gym.spaces.Box(np.repeat(space.low[None], n_obs_steps, 0).astype(np.float32),
                                                np.repeat(space.high[None], n_obs_steps, 0).astype(np.float32),
                                                dtype=np.float32)

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self.frames.extend([np.asarray(obs, dtype=np.float32)] * self.frames.maxlen)
        return self._history(), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.frames.append(np.asarray(obs, dtype=np.float32))
        return self._history(), reward, terminated, truncated, info

    def _history(self) -> np.ndarray:
        if self.frames.maxlen == 1:  # the common case: no copy through np.stack
            return self.frames[0][None]
        return np.stack(self.frames)


class ActionChunk(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """One step executes up to `n_action_steps` actions; the reward is their sum and the chunk stops
    early when the episode ends, so an algorithm's transition is one executed chunk.

    Its info holds only what robopol reads (chunk_steps, is_success and the keys in PASS_INFO):
    vector envs merge every info key of every env on every step, which costs more than the policy."""

    PASS_INFO = ("max_coverage",)

    def __init__(self, env: gym.Env, n_action_steps: int) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, n_action_steps=n_action_steps)
        super().__init__(env)
        space = env.action_space
        self.n_action_steps = n_action_steps
        self.action_space = gym.spaces.Box(np.repeat(space.low[None], n_action_steps, 0),
                                           np.repeat(space.high[None], n_action_steps, 0), dtype=space.dtype)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        total = 0.0
        success = False
        for executed, action in enumerate(actions, start=1):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            success = success or bool(info.get("is_success", False))
            if terminated or truncated:
                break
        kept = {key: info[key] for key in self.PASS_INFO if key in info}
        return obs, total, terminated, truncated, {**kept, "chunk_steps": executed, "is_success": success}
