"""Scripted grasp-and-place experts for Lift, Can and Square, acting through OSC_POSE deltas.

Each expert is a list of phases (move above the object, descend, close, lift, carry, lower,
release, retreat). A phase holds a target end-effector position and yaw, recomputed every step
from the observation, and ends when the target is reached (or after a step budget). The gripper
always points down; yaw turns it about the vertical so the fingers close across the object.

The object's position and xyzw quaternion are read from the observation's `object` part (robosuite
1.5's object-state: Lift starts with them, Can and Square put `<obj>_to_robot0_eef` pos/quat first).
Privileged reads: Can reads the goal bin's corner (`bin2_pos`) and aims inside the can's quadrant
near the robot (the quadrant's centre is at the edge of the Panda's reach); Square reads the
square peg's position (body `peg1`) from the robosuite env behind `env.unwrapped`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from scipy.spatial.transform import Rotation

POS_SCALE, ROT_SCALE = 0.05, 0.5  # OSC_POSE output limits: metres / radians per unit of action
DOWN = np.diag([1.0, -1.0, -1.0])  # gripper pointing down, fingers closing along world y at yaw 0
OPEN, CLOSE = -1.0, 1.0


@dataclass
class Scene:
    """What the phases see at one step: gripper and object poses, plus the task's goal position."""

    eef: np.ndarray
    eef_yaw: float
    obj: np.ndarray
    obj_yaw: float
    goal: np.ndarray


@dataclass(frozen=True)
class Phase:
    name: str
    target: Callable[[Scene], tuple[np.ndarray, float]]  # -> (eef position, eef yaw)
    grip: float
    tol: float = 0.01  # metres; the phase ends once the target is this close...
    min_steps: int = 0  # ...and it has lasted this long
    max_steps: int = 80


def _wrap(angle: float, period: float) -> float:
    """The angle's representative in [-period/2, period/2): objects symmetric under `period`."""
    return (angle + period / 2) % period - period / 2


def _yaw(quat_xyzw: np.ndarray) -> float:
    """Heading of the body's x axis in the horizontal plane (well defined unless it points up)."""
    x_axis = Rotation.from_quat(quat_xyzw).as_matrix()[:, 0]
    return float(np.arctan2(x_axis[1], x_axis[0]))


class ScriptedExpert:
    """Runs `phases()` in order; `noise` adds N(0, noise^2) to every action dimension."""

    OBJECT_POSE = 9  # index of the object's position in the flat observation (after 9 robot entries)

    def __init__(self, noise: float = 0.0, speed: float = 1.0):
        self.noise, self.speed = noise, speed
        self._rng = np.random.default_rng()
        self._phase, self._steps = 0, 0

    def phases(self) -> list[Phase]:
        raise NotImplementedError

    def goal(self, env: gym.Env) -> np.ndarray:
        return np.zeros(3)

    def reset(self, env: gym.Env, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)
        self._phase, self._steps = 0, 0
        self._goal = self.goal(env)
        self._plan = self.phases()

    @property
    def phase(self) -> str:
        return self._plan[min(self._phase, len(self._plan) - 1)].name

    def act(self, obs: np.ndarray, env: gym.Env) -> np.ndarray:
        eef_rot = Rotation.from_quat(obs[3:7]).as_matrix()
        i = self.OBJECT_POSE
        scene = Scene(obs[0:3].astype(np.float64), _yaw(obs[3:7]),
                      obs[i:i + 3].astype(np.float64), _yaw(obs[i + 3:i + 7]), self._goal)
        phase = self._plan[min(self._phase, len(self._plan) - 1)]
        pos, yaw = phase.target(scene)
        self._steps += 1
        reached = np.linalg.norm(pos - scene.eef) < phase.tol and self._steps >= phase.min_steps
        if (reached or self._steps >= phase.max_steps) and self._phase < len(self._plan) - 1:
            self._phase, self._steps = self._phase + 1, 0
        action = np.concatenate([self._move(scene.eef, pos), self._turn(eef_rot, yaw), [phase.grip]])
        if self.noise > 0:
            action = action + self.noise * self._rng.standard_normal(7)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def _move(self, eef: np.ndarray, target: np.ndarray) -> np.ndarray:
        delta = (target - eef) / POS_SCALE
        norm = np.linalg.norm(delta)
        return delta * min(1.0, self.speed / norm) if norm > 0 else delta

    def _turn(self, rot: np.ndarray, yaw: float) -> np.ndarray:
        target = Rotation.from_euler("z", yaw).as_matrix() @ DOWN
        return np.clip(Rotation.from_matrix(target @ rot.T).as_rotvec() / ROT_SCALE, -1.0, 1.0)


def _above(s: Scene, point: np.ndarray, height: float, yaw: float) -> tuple[np.ndarray, float]:
    return point + np.array([0.0, 0.0, height]), yaw


class LiftExpert(ScriptedExpert):
    """Grasp the cube across two faces and lift it 15 cm."""

    def phases(self) -> list[Phase]:
        yaw = lambda s: s.eef_yaw + _wrap(s.obj_yaw - s.eef_yaw, np.pi / 2)  # noqa: E731
        return [
            Phase("above", lambda s: _above(s, s.obj, 0.08, yaw(s)), OPEN, tol=0.01),
            Phase("descend", lambda s: _above(s, s.obj, -0.005, yaw(s)), OPEN, tol=0.008),
            Phase("close", lambda s: (s.eef, s.eef_yaw), CLOSE, tol=np.inf, min_steps=10),
            Phase("lift", lambda s: _above(s, s.eef, 0.1, s.eef_yaw), CLOSE, tol=0.0, max_steps=200),
        ]


class CanExpert(ScriptedExpert):
    """Grasp the can from above, carry it over the bins and drop it into its target bin."""

    OBJECT_POSE = 16
    CARRY_Z = 1.0  # the can's bottom clears the bins' walls

    def goal(self, env: gym.Env) -> np.ndarray:
        # the can's quadrant spans bin2_pos + [0, 0.195] x [0, 0.245] (robosuite's not_in_bin, bin id 3)
        return np.asarray(env.unwrapped.robosuite_env.bin2_pos, dtype=np.float64) + np.array([0.07, 0.08, 0.0])

    def phases(self) -> list[Phase]:
        up = lambda p: np.array([p[0], p[1], self.CARRY_Z])  # noqa: E731
        return [
            Phase("above", lambda s: _above(s, s.obj, 0.08, 0.0), OPEN, tol=0.01),
            Phase("descend", lambda s: _above(s, s.obj, 0.01, 0.0), OPEN, tol=0.01, max_steps=40),
            Phase("close", lambda s: (s.eef, 0.0), CLOSE, tol=np.inf, min_steps=10),
            Phase("lift", lambda s: (up(s.eef), 0.0), CLOSE, tol=0.02),
            Phase("carry", lambda s: (up(s.goal + s.eef - s.obj), 0.0), CLOSE, tol=0.015, max_steps=120),
            Phase("lower", lambda s: _above(s, s.goal + s.eef - s.obj, 0.12, 0.0), CLOSE, tol=0.015),
            Phase("release", lambda s: (s.eef, 0.0), OPEN, tol=np.inf, min_steps=8),
            Phase("retreat", lambda s: (up(s.eef), 0.0), OPEN, tol=0.0, max_steps=200),
        ]


class SquareExpert(ScriptedExpert):
    """Grasp the square nut by its handle, turn it square to the peg, and lower it over the peg."""

    OBJECT_POSE = 16
    HANDLE = 0.054  # the handle's offset from the nut's centre along the nut's x axis (square-nut.xml)
    CARRY_Z = 1.02  # nut clear of the peg top (0.95)

    def goal(self, env: gym.Env) -> np.ndarray:
        rs = env.unwrapped.robosuite_env
        return np.array(rs.sim.data.body_xpos[rs.peg1_body_id], dtype=np.float64)

    def phases(self) -> list[Phase]:
        def handle(s: Scene) -> np.ndarray:
            return s.obj + self.HANDLE * np.array([np.cos(s.obj_yaw), np.sin(s.obj_yaw), 0.0])

        def grasp_yaw(s: Scene) -> float:  # fingers close across the handle (the nut's y axis)
            return s.eef_yaw + _wrap(s.obj_yaw - s.eef_yaw, np.pi)

        def square_yaw(s: Scene) -> float:
            # Turn the held nut square to the peg, with the handle not pointing away from the robot:
            # holding it beyond the peg (x > 0.25) is at the edge of the Panda's reach.
            turns = [_wrap(k * np.pi / 2 - s.obj_yaw, 2 * np.pi) for k in (1, 2, 3)]
            return s.eef_yaw + min(turns, key=abs)

        def over_peg(s: Scene, z: float) -> tuple[np.ndarray, float]:
            xy = s.eef[:2] + s.goal[:2] - s.obj[:2]
            return np.array([xy[0], xy[1], z + s.eef[2] - s.obj[2]]), square_yaw(s)

        return [
            Phase("above", lambda s: _above(s, handle(s), 0.08, grasp_yaw(s)), OPEN, tol=0.008),
            Phase("descend", lambda s: _above(s, handle(s), 0.0, grasp_yaw(s)), OPEN, tol=0.006),
            Phase("close", lambda s: (s.eef, s.eef_yaw), CLOSE, tol=np.inf, min_steps=10),
            Phase("lift", lambda s: (np.array([*s.eef[:2], self.CARRY_Z + 0.02]), s.eef_yaw), CLOSE, tol=0.02),
            Phase("carry", lambda s: over_peg(s, self.CARRY_Z), CLOSE, tol=0.004, max_steps=150),
            Phase("lower", lambda s: over_peg(s, 0.84), CLOSE, tol=0.01, max_steps=60),
            Phase("release", lambda s: (s.eef, s.eef_yaw), OPEN, tol=np.inf, min_steps=8),
            Phase("retreat", lambda s: _above(s, s.eef, 0.1, s.eef_yaw), OPEN, tol=0.0, max_steps=200),
        ]


EXPERTS: dict[str, type[ScriptedExpert]] = {"lift": LiftExpert, "can": CanExpert, "square": SquareExpert}
