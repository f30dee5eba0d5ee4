"""A geometric pusher for PushT.

gym-pusht's block has zero velocity retention (space damping 0), so it moves only while pushed
(quasi-static). Each step the expert picks, among points on the T's outline, the contact whose
normal push best produces the block motion still needed: a push force f at point c moves the block
roughly along the twist (f, (c - com) x f / RHO), which is compared with the wanted twist
(goal com - com, RHO * angle error). It then walks the agent around the block to just outside that
contact and pushes into it, by an amount that shrinks as the block nears the goal.

Privileged reads: the block's pose and centre of gravity (`env.unwrapped.block`)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import shapely

from robopol.sim.pusht import GOAL_POSE, block_pose

AGENT_RADIUS = 15.0
GAP = 6.0  # px between the agent's rim and the contact before it pushes
RHO = 50.0  # px; converts rotation to distance, about the T's radius of gyration
# The T's outline in block-local coordinates, counter-clockwise, so outward normals are (dy, -dx).
OUTLINE = np.array([(-60, 0), (60, 0), (60, 30), (15, 30), (15, 120), (-15, 120), (-15, 30), (-60, 30)], float)


def _contacts(spacing: float = 6.0, corner_margin: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """Candidate contact points along the outline (away from corners) and their outward normals."""
    points, normals = [], []
    for a, b in zip(OUTLINE, np.roll(OUTLINE, -1, axis=0)):
        length = np.linalg.norm(b - a)
        s = np.arange(corner_margin, length - corner_margin + 1e-9, spacing) / length
        points.append(a + s[:, None] * (b - a))
        normals.append(np.repeat([[(b - a)[1], -(b - a)[0]]], len(s), axis=0) / length)
    return np.concatenate(points), np.concatenate(normals)


CONTACTS, NORMALS = _contacts()


def _rot(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


class PushTExpert:
    """`act(obs, env)` returns the agent's target position; `noise` is a std in pixels."""

    def __init__(self, noise: float = 0.0, switch_margin: float = 0.15):
        self.noise, self.switch_margin = noise, switch_margin
        self._rng = np.random.default_rng()
        self._contact: int | None = None

    def reset(self, env: gym.Env, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)
        self._contact = None

    def act(self, obs: np.ndarray, env: gym.Env) -> np.ndarray:
        agent = np.array(env.unwrapped.agent.position)
        pose = block_pose(env)
        rot, cog = _rot(pose[2]), np.array(env.unwrapped.block.center_of_gravity)
        com = pose[:2] + rot @ cog
        wanted = np.concatenate([GOAL_POSE[:2] + _rot(GOAL_POSE[2]) @ cog - com,
                                 [RHO * _wrap(GOAL_POSE[2] - pose[2])]])
        points = pose[:2] + CONTACTS @ rot.T
        normals = NORMALS @ rot.T
        pre = points + normals * (AGENT_RADIUS + GAP)
        block = shapely.Polygon(pose[:2] + OUTLINE @ rot.T)
        # the agent must fit at the contact: inside the arena and clear of the T's other parts
        reachable = np.all((pre > 20.0) & (pre < 492.0), axis=1) & (
            shapely.distance(block, shapely.points(pre)) > AGENT_RADIUS + 3.0)
        self._contact = self._choose(points - com, -normals, wanted, reachable)
        c, n = points[self._contact], normals[self._contact]
        target = self._approach(agent, c, n, block, com, float(np.linalg.norm(wanted)))
        if self.noise > 0:
            target = target + self.noise * self._rng.standard_normal(2)
        return np.clip(target, 10.0, 502.0).astype(np.float32)

    def _choose(self, lever: np.ndarray, force: np.ndarray, wanted: np.ndarray, reachable: np.ndarray) -> int:
        torque = lever[:, 0] * force[:, 1] - lever[:, 1] * force[:, 0]
        twist = np.column_stack([force, torque / RHO])
        score = twist @ wanted / (np.linalg.norm(twist, axis=1) * np.linalg.norm(wanted) + 1e-9)
        score = np.where(reachable, score, -np.inf)
        best = int(np.argmax(score))
        keep = self._contact is not None and score[self._contact] > score[best] - self.switch_margin
        return self._contact if keep else best

    def _approach(self, agent: np.ndarray, c: np.ndarray, n: np.ndarray, block: shapely.Polygon,
                  com: np.ndarray, error: float) -> np.ndarray:
        """Push if the agent is at the contact; else walk to just outside it, coming in along the
        contact's normal from outside the block's convex hull (contacts in the T's pockets need it)."""
        pre = c + n * (AGENT_RADIUS + GAP)
        at_contact = np.linalg.norm(agent - (c + n * AGENT_RADIUS)) < 10.0
        if at_contact or np.linalg.norm(agent - pre) < 5.0:
            return c - n * np.clip(0.3 * error, 1.0, 25.0)
        if not block.buffer(AGENT_RADIUS + 2.0).intersects(shapely.LineString([agent, pre])):
            return pre
        ray = pre + n * np.arange(0.0, 200.0, 4.0)[:, None]
        outside = ~shapely.contains_xy(block.convex_hull.buffer(AGENT_RADIUS + 6.0), ray[:, 0], ray[:, 1])
        entry = ray[np.argmax(outside)]
        if np.linalg.norm(agent - entry) < 6.0:
            return pre
        return _waypoint(agent, entry, block, com)


def _waypoint(agent: np.ndarray, goal: np.ndarray, block: shapely.Polygon, com: np.ndarray) -> np.ndarray:
    """Next point on a path from agent to goal that keeps the agent off the block: the goal if it is
    in sight, else a corner of a margin around the block's convex hull. The walk goes round the
    block the shorter way unless a corner on it lies outside the arena, and heads for the visible
    corner furthest along (angle about the block's centre), so it never turns back."""
    obstacle = block.buffer(AGENT_RADIUS + 2.0)
    if not obstacle.intersects(shapely.LineString([agent, goal])):
        return goal
    corners = np.array(block.convex_hull.buffer(AGENT_RADIUS + 8.0, quad_segs=2).exterior.coords[:-1])
    inside = np.all((corners > 20.0) & (corners < 492.0), axis=1)
    lines = shapely.linestrings(np.stack([np.broadcast_to(agent, corners.shape), corners], axis=1))
    usable = inside & ~shapely.intersects(obstacle, lines) & (np.linalg.norm(corners - agent, axis=1) > 4.0)
    angle = lambda p: np.arctan2(p[..., 1] - com[1], p[..., 0] - com[0])  # noqa: E731
    turn = _wrap(angle(goal) - angle(agent))
    ways = [(np.sign(turn) or 1.0, abs(turn)), (-(np.sign(turn) or 1.0), 2 * np.pi - abs(turn))]
    for direction, span in sorted(ways, key=lambda w: w[1]):
        ahead = (direction * (angle(corners) - angle(agent))) % (2 * np.pi)
        if not inside[(ahead > 0.05) & (ahead < span)].all():
            continue  # walled off this way round
        ok = usable & (ahead > 0.05) & (ahead < span + 0.5)
        if ok.any():
            return corners[ok][np.argmax(ahead[ok])]
    return agent + 20.0 * (agent - com) / (np.linalg.norm(agent - com) + 1e-9)  # boxed in: back off


def _wrap(angle):
    return (angle + np.pi) % (2 * np.pi) - np.pi
