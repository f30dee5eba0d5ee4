"""Reach: a tiny 2-D point-reaching task, fast enough for learning tests to train in seconds."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class ReachEnv(gym.Env):
    """Move a point to a random goal in [-1, 1]^2. Action: velocity in [-1, 1]^2 scaled by 0.1.
    Reward: minus the distance to the goal; the episode terminates within 0.05 of it (success)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, max_episode_steps: int = 30, render_mode: str | None = None) -> None:
        self.observation_space = gym.spaces.Box(-2.0, 2.0, (4,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.max_episode_steps, self.render_mode = max_episode_steps, render_mode
        self.pos = np.zeros(2)
        self.goal = np.zeros(2)
        self.t = 0

    def _obs(self) -> np.ndarray:
        return np.concatenate([self.pos, self.goal]).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-1, 1, 2)
        self.goal = self.np_random.uniform(-1, 1, 2)
        self.t = 0
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.pos = np.clip(self.pos + 0.1 * np.clip(action, -1, 1), -1.5, 1.5)
        self.t += 1
        dist = float(np.linalg.norm(self.pos - self.goal))
        success = dist < 0.05
        return self._obs(), -dist, success, self.t >= self.max_episode_steps and not success, {"is_success": success}

    def robopol_state(self) -> dict[str, Any]:
        """What resume needs to continue an episode exactly (robopol.sim.env_state)."""
        return {"pos": self.pos.tolist(), "goal": self.goal.tolist(), "t": self.t}

    def robopol_set_state(self, state: dict[str, Any]) -> None:
        self.pos, self.goal, self.t = np.array(state["pos"]), np.array(state["goal"]), int(state["t"])

    def render(self) -> np.ndarray:
        frame = np.full((64, 64, 3), 255, np.uint8)
        for point, colour in ((self.goal, (0, 160, 0)), (self.pos, (200, 0, 0))):
            x, y = ((np.clip(point, -1.5, 1.5) + 1.5) / 3.0 * 63).astype(int)
            frame[max(y - 2, 0):y + 3, max(x - 2, 0):x + 3] = colour
        return frame


gym.register("robopol/Reach-v0", entry_point=ReachEnv)
