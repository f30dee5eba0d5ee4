"""PushT (gym-pusht) as a flat-observation Gymnasium env, and the task's geometry.

gym-pusht 0.1.8 semantics, read from its source: each step runs 10 PD-controlled physics steps
(10 Hz control); reward = clip(coverage / 0.95, 0, 1) where coverage = area(T ∩ goal T) / area(T);
`is_success` = coverage > 0.95, and the episode terminates then. The goal pose is fixed at
(256, 256, pi/4). Episodes are cut at 300 steps, as diffusion_policy and LeRobot evaluate.

Observation types (env_kwargs["obs_type"]), always a flat float32 vector:
- "state" (5): agent x, y, block x, y, block angle in [0, 2pi) -- diffusion_policy's zarr `state`.
- "keypoints" (18): the T's 8 corner keypoints (x0, y0, ..., x7, y7), then agent x, y. These are
  gym-pusht's corners, not diffusion_policy's 9 pixel-sampled keypoints (20-dim obs), which cannot
  be recomputed exactly; train on diffusion_policy data with "state" to evaluate here.
- "state_keypoints" (23): "state", then "keypoints" computed from its block pose; for a composed
  policy whose parents observe one each (robopol.sim.observation_keys).
- "pixels" (96*96*3): the rendered image in HWC order, values 0..255.
Actions are native: the agent's target position in [0, 512]^2.

env_kwargs `reward`:
- "coverage": gym-pusht's dense reward. The episode ends on success, so a return-maximising policy
  learns to hover just short of the goal; do not fine-tune on it.
- "success": 1.0 on the step the task succeeds, else 0; no signal until a policy succeeds.
- "progress": the change in coverage / 0.95 plus 1.0 on success. Potential-based shaping (Ng et al.
  1999): the undiscounted return telescopes to final - initial coverage plus the success bonus, so
  it ranks policies as the protocol does while paying for every push towards the goal.
Either way info["max_coverage"] is the episode's best coverage so far, which the protocol scores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import shapely

from robopol.errors import ConfigError
from robopol.typed_config import build, field

ENV_ID = "gym_pusht/PushT-v0"
MAX_EPISODE_STEPS = 300
SUCCESS_COVERAGE = 0.95
GOAL_POSE = np.array([256.0, 256.0, np.pi / 4])
# The T in block-local coordinates: the bar, then the stem, each in the vertex order pymunk stores
# for gym-pusht's add_tee (scale 30), so `keypoints` matches gym-pusht's `get_keypoints`.
T_PARTS = np.array([
    [(-60, 0), (60, 0), (60, 30), (-60, 30)],
    [(-15, 30), (15, 30), (15, 120), (-15, 120)],
], dtype=np.float64)
T_AREA = 120 * 30 + 30 * 90
T_REACH = float(np.linalg.norm(T_PARTS.reshape(-1, 2), axis=1).max())  # farthest corner from the block's origin
_OBS_TYPES = {"state": "state", "keypoints": "environment_state_agent_pos", "pixels": "pixels",
              "state_keypoints": "state"}
STATE_DIM, KEYPOINT_DIM = 5, 16  # agent x, y, block x, y, angle; 8 corners (x, y)


def obs_keys(obs_type: str, width: int = 96, height: int = 96) -> tuple[tuple[str, int], ...]:
    """The named segments of an obs_type's flat observation, in order."""
    return {"state": (("state", STATE_DIM),), "keypoints": (("keypoint", KEYPOINT_DIM), ("agent_pos", 2)),
            "state_keypoints": (("state", STATE_DIM), ("keypoint", KEYPOINT_DIM), ("agent_pos", 2)),
            "pixels": (("pixels", width * height * 3),)}[obs_type]


@dataclass
class PushTKwargs:
    obs_type: str = field("state", choices=tuple(_OBS_TYPES))
    reward: str = field("coverage", choices=("coverage", "success", "progress"))
    max_episode_steps: int = field(MAX_EPISODE_STEPS, gt=0)
    damping: float | None = None
    observation_width: int = field(96, gt=0)
    observation_height: int = field(96, gt=0)
    visualization_width: int = field(680, gt=0)
    visualization_height: int = field(680, gt=0)


def make_pusht_env(env_kwargs: dict[str, Any], render_mode: str | None) -> gym.Env:
    """Build PushT from a task config's env_kwargs (see PushTKwargs for the allowed keys)."""
    import gym_pusht  # noqa: F401  (registers gym_pusht/PushT-v0)

    kw = build(PushTKwargs, dict(env_kwargs), "task.env_kwargs")
    if render_mode not in (None, "rgb_array", "human"):
        raise ConfigError(f"render_mode: {render_mode!r} is not supported by PushT; allowed: None, 'rgb_array', 'human'")
    inner = gym.make(
        ENV_ID, obs_type=_OBS_TYPES[kw.obs_type], render_mode=render_mode or "rgb_array",
        max_episode_steps=kw.max_episode_steps, damping=kw.damping,
        observation_width=kw.observation_width, observation_height=kw.observation_height,
        visualization_width=kw.visualization_width, visualization_height=kw.visualization_height,
        disable_env_checker=True,  # gym-pusht's keypoint bounds are too narrow; FlatPushT's are checked instead
    )
    return FlatPushT(inner, reward=kw.reward, with_keypoints=kw.obs_type == "state_keypoints")


class FlatPushT(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Flattens gym-pusht's observations to float32, reports `coverage` on reset too and the
    episode's `max_coverage`, and pays the `reward` chosen in PushTKwargs. `with_keypoints` appends the
    "keypoints" observation (corners, agent x, y) computed from a "state" one."""

    def __init__(self, env: gym.Env, reward: str = "coverage", with_keypoints: bool = False):
        gym.utils.RecordConstructorArgs.__init__(self, reward=reward, with_keypoints=with_keypoints)
        super().__init__(env)
        self.reward, self.max_coverage, self.coverage = reward, 0.0, 0.0
        self.with_keypoints = with_keypoints
        space = env.observation_space
        parts = [space[k] for k in ("environment_state", "agent_pos")] if isinstance(space, gym.spaces.Dict) else [space]
        low, high = (np.concatenate([getattr(p, bound).reshape(-1) for p in parts]) for bound in ("low", "high"))
        if isinstance(space, gym.spaces.Dict):  # gym-pusht bounds the T's corners by the window, yet a reset can
            corners = space["environment_state"].shape[0]  # place one past it (seed 63: 513.5): widen by the T's reach
            low[:corners] -= T_REACH
            high[:corners] += T_REACH
        if with_keypoints:  # the state's own bounds, then corners (within the T's reach of the window) and agent
            low = np.concatenate([low, np.full(KEYPOINT_DIM, -T_REACH), low[:2]])
            high = np.concatenate([high, np.full(KEYPOINT_DIM, 512.0 + T_REACH), high[:2]])
        self.observation_space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)

    def observation(self, obs: Any) -> np.ndarray:
        if isinstance(obs, dict):
            obs = np.concatenate([obs["environment_state"], obs["agent_pos"]])
        elif self.with_keypoints:
            obs = np.concatenate([obs, keypoints(obs[2:5]).reshape(-1), obs[:2]])
        return np.asarray(obs, dtype=np.float32).reshape(-1)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = super().reset(seed=seed, options=options)
        info["coverage"] = self.max_coverage = self.coverage = float(self.env.unwrapped._get_coverage())
        info["max_coverage"] = self.max_coverage
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        info["is_success"] = bool(info["is_success"])
        coverage, previous = float(info["coverage"]), self.coverage
        self.coverage, self.max_coverage = coverage, max(self.max_coverage, coverage)
        info["max_coverage"] = self.max_coverage
        if self.reward == "success":
            reward = float(info["is_success"])
        elif self.reward == "progress":
            reward = (coverage - previous) / SUCCESS_COVERAGE + float(info["is_success"])
        return obs, float(reward), bool(terminated), bool(truncated), info


def block_pose(env: gym.Env) -> np.ndarray:
    """Privileged (x, y, angle) of the T's body origin, as the `state` observation reports it."""
    block = env.unwrapped.block
    return np.array([block.position.x, block.position.y, block.angle])


def keypoints(poses: np.ndarray) -> np.ndarray:
    """(N, 3) block poses -> (N, 8, 2) corner keypoints, in gym-pusht's `get_keypoints` order."""
    poses = np.asarray(poses, dtype=np.float64).reshape(-1, 3)
    c, s = np.cos(poses[:, 2]), np.sin(poses[:, 2])
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # (N, 2, 2)
    local = T_PARTS.reshape(8, 2)
    return np.einsum("nij,kj->nki", rot, local) + poses[:, None, :2]


def coverage(poses: np.ndarray) -> np.ndarray:
    """(N, 3) block poses -> (N,) fraction of the goal T covered, exactly as gym-pusht computes it.
    The T's two rectangles do not overlap, so the area of T ∩ goal is the sum over part pairs."""
    poses = np.asarray(poses, dtype=np.float64).reshape(-1, 3)
    block = shapely.polygons(keypoints(poses).reshape(-1, 2, 4, 2))  # (N, 2)
    goal = shapely.polygons(keypoints(GOAL_POSE).reshape(2, 4, 2))  # (2,)
    area = shapely.area(shapely.intersection(block[:, :, None], goal[None, None, :]))
    return area.sum(axis=(1, 2)) / T_AREA


def reward(poses: np.ndarray) -> np.ndarray:
    """gym-pusht's reward for (N, 3) block poses: clip(coverage / 0.95, 0, 1)."""
    return np.clip(coverage(poses) / SUCCESS_COVERAGE, 0.0, 1.0)
