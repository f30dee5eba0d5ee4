"""Robomimic's Lift, Can and Square tasks, driven through robosuite 1.5 directly (not robomimic).

Settings as robomimic's datasets record them: Panda arm, composite BASIC controller with OSC_POSE
for the arm (delta inputs in [-1, 1] -> 5 cm / 0.5 rad per step) and a binary gripper (-1 open,
+1 close), 20 Hz control, sparse reward, object observations on, cameras off.

Observation: the concatenation, in OBS_KEYS order (DPPO's `low_dim_keys`), of robot0_eef_pos (3),
robot0_eef_quat (4, xyzw), robot0_gripper_qpos (2), object (Lift 10, Can 14, Square 14).
Reward is 1.0 on success, else 0. An episode terminates on success and is truncated at the task's
horizon: 300 / 300 / 400 steps as DPPO's robomimic fine-tuning configs use
(cfg/robomimic/finetune/<task>/*.yaml, env.max_episode_steps); robomimic's own evaluation uses 400
for all three proficient-human datasets (robomimic/__init__.py). Override with env_kwargs
`max_episode_steps`.

Rendering (render_mode "rgb_array") uses robosuite's offscreen renderer; set MUJOCO_GL=osmesa
before anything imports mujoco on a machine without a display or EGL. If the renderer cannot be
created, the env warns once and `render()` returns None."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from robopol.errors import ConfigError
from robopol.typed_config import build, field

OBS_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object")
ROBOSUITE_ENV_TYPE = 1  # robomimic's EnvType.ROBOSUITE_TYPE, stored in env_args["type"]


@dataclass(frozen=True)
class RobomimicTask:
    env_name: str  # the robosuite class, as robomimic's env_args["env_name"] names it
    horizon: int
    object_dim: int


TASKS = {
    "lift": RobomimicTask("Lift", 300, 10),
    "can": RobomimicTask("PickPlaceCan", 300, 14),
    "square": RobomimicTask("NutAssemblySquare", 400, 14),
}


@dataclass
class RobomimicKwargs:
    task: str = field("lift", choices=tuple(TASKS))
    max_episode_steps: int | None = field(None, gt=0)
    camera: str = "agentview"
    render_height: int = field(256, gt=0)
    render_width: int = field(256, gt=0)


def make_robomimic_env(env_kwargs: dict[str, Any], render_mode: str | None) -> gym.Env:
    """Build a robomimic task from a task config's env_kwargs (see RobomimicKwargs)."""
    kw = build(RobomimicKwargs, dict(env_kwargs), "task.env_kwargs")
    if render_mode not in (None, "rgb_array"):
        raise ConfigError(f"render_mode: {render_mode!r} is not supported by robomimic tasks; allowed: None, 'rgb_array'")
    return RobomimicEnv(kw, render_mode)


def robosuite_kwargs(offscreen: bool) -> dict[str, Any]:
    """The robosuite.make kwargs robomimic stores as env_args["env_kwargs"]."""
    from robosuite.controllers import load_composite_controller_config

    return dict(
        has_renderer=False, has_offscreen_renderer=offscreen, ignore_done=True, use_object_obs=True,
        use_camera_obs=False, camera_depths=False, control_freq=20, reward_shaping=False,
        robots=["Panda"], controller_configs=load_composite_controller_config(robot="Panda"),
    )


class RobomimicEnv(gym.Env):
    """A robosuite manipulation env with robomimic's settings behind the Gymnasium API."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, kw: RobomimicKwargs, render_mode: str | None = None):
        self.task = kw.task
        self.task_spec = TASKS[kw.task]
        self.horizon = kw.max_episode_steps or self.task_spec.horizon
        self.render_mode = render_mode
        self._camera, self._size = kw.camera, (kw.render_height, kw.render_width)
        self.robosuite_env, self._can_render = _make_robosuite(self.task_spec.env_name, render_mode == "rgb_array")
        self._obs = self._read_obs(self.robosuite_env._get_observations(force_update=True))
        dim = sum(v.size for v in self._obs.values())
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            _reseed(self.robosuite_env, seed)
        self._obs = self._read_obs(self.robosuite_env.reset())
        self._t = 0
        return self._flat(), {"is_success": False}

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        raw, _, _, _ = self.robosuite_env.step(action)
        self._obs = self._read_obs(raw)
        self._t += 1
        success = bool(self.robosuite_env._check_success())
        truncated = self._t >= self.horizon and not success
        return self._flat(), float(success), success, truncated, {"is_success": success}

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array" or not self._can_render:
            return None
        height, width = self._size
        return self.robosuite_env.sim.render(camera_name=self._camera, height=height, width=width)[::-1].copy()

    def close(self):
        self.robosuite_env.close()

    def obs_dict(self) -> dict[str, np.ndarray]:
        """The current observation per robomimic key, as the HDF5 `obs/<key>` datasets store it."""
        return {k: v.copy() for k, v in self._obs.items()}

    def sim_state(self) -> np.ndarray:
        """The flattened MuJoCo state (time, qpos, qvel), robomimic's HDF5 `states` entry."""
        return np.array(self.robosuite_env.sim.get_state().flatten())

    def reset_to_state(self, state: np.ndarray) -> np.ndarray:
        """Set the simulator to a recorded `states` row (same scene) and return the observation."""
        self.robosuite_env.sim.set_state_from_flattened(np.asarray(state, dtype=np.float64))
        self.robosuite_env.sim.forward()
        self._obs = self._read_obs(self.robosuite_env._get_observations(force_update=True))
        return self._flat()

    def env_args(self) -> dict[str, Any]:
        """robomimic's env metadata (data.attrs["env_args"]): enough to rebuild this env there."""
        import robosuite

        return dict(env_name=self.task_spec.env_name, env_version=robosuite.__version__, type=ROBOSUITE_ENV_TYPE,
                    env_kwargs=robosuite_kwargs(offscreen=False))

    def _read_obs(self, raw: dict[str, Any]) -> dict[str, np.ndarray]:
        raw = dict(raw, object=raw["object-state"])
        return {k: np.asarray(raw[k], dtype=np.float32) for k in OBS_KEYS}

    def _flat(self) -> np.ndarray:
        return np.concatenate(list(self._obs.values()))


def _make_robosuite(env_name: str, offscreen: bool):
    """robosuite.make with robomimic's kwargs; without a usable GL context, fall back to no renderer."""
    import robosuite

    if offscreen:
        try:
            return robosuite.make(env_name, **robosuite_kwargs(offscreen=True)), True
        except Exception as exc:  # robosuite raises several GL error types, depending on the backend
            warnings.warn(f"robomimic {env_name}: offscreen rendering is unavailable ({type(exc).__name__}: {exc}); "
                          "render() will return None. Install libosmesa6 and set MUJOCO_GL=osmesa before "
                          "importing mujoco to record videos.", RuntimeWarning, stacklevel=3)
    return robosuite.make(env_name, **robosuite_kwargs(offscreen=False)), False


def _reseed(env: Any, seed: int) -> None:
    """Give robosuite one fresh generator for everything random at reset: the robot's initial joint
    noise (env.rng) and the object placement samplers, which keep their own reference to it."""
    rng = np.random.default_rng(seed)
    env.rng = rng
    samplers = [env.placement_initializer] if getattr(env, "placement_initializer", None) is not None else []
    while samplers:
        sampler = samplers.pop()
        sampler.rng = rng
        samplers.extend(getattr(sampler, "samplers", {}).values())
