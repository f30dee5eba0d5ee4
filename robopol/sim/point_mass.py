"""PointMass: a batched 2-D point-mass reaching task written in torch, robopol's first tensor env
(robopol.sim.tensor_env) and the test bed of tensor-env loops. All envs step in a few tensor ops.

Each env: a unit mass at p with velocity v must reach a goal g, all in the arena [-1, 1]^2.
Action: a force u in [-1, 1]^2. Dynamics (semi-implicit Euler, dt = 0.1, damping 0.5):
    v' = (1 - 0.5 dt) v + dt u,   p' = clip(p + dt v', -1, 1)   (a wall zeroes the velocity into it)
Observation (6): p, v, g - p. Reward: -|g - p'|. The episode terminates when the mass is within 0.05
of the goal at a speed below 0.2 (a real terminal state: nothing more to earn) and is truncated at
max_episode_steps; a success on the last step counts as terminated only."""

from __future__ import annotations

import torch

from robopol.sim.tensor_env import TensorStep

DT, DAMPING, GOAL_RADIUS, STOP_SPEED = 0.1, 0.5, 0.05, 0.2


class PointMass:
    obs_dim, act_dim = 6, 2

    def __init__(self, num_envs: int, max_episode_steps: int = 100, device: str | torch.device = "cpu") -> None:
        self.num_envs, self.max_episode_steps, self.device = num_envs, max_episode_steps, torch.device(device)
        self.action_low = -torch.ones(self.act_dim, device=self.device)
        self.action_high = torch.ones(self.act_dim, device=self.device)
        self.generator = torch.Generator(self.device)
        self.pos = torch.zeros(num_envs, 2, device=self.device)
        self.vel = torch.zeros_like(self.pos)
        self.goal = torch.zeros_like(self.pos)
        self.steps = torch.zeros(num_envs, dtype=torch.long, device=self.device)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        self._reset(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        return self._obs()

    def step(self, actions: torch.Tensor) -> TensorStep:
        force = actions.to(self.device, torch.float32).clamp(-1.0, 1.0)
        self.vel = (1 - DAMPING * DT) * self.vel + DT * force
        moved = self.pos + DT * self.vel
        self.pos = moved.clamp(-1.0, 1.0)
        self.vel = torch.where(moved == self.pos, self.vel, torch.zeros_like(self.vel))
        self.steps += 1
        dist = (self.goal - self.pos).norm(dim=1)
        terminated = (dist < GOAL_RADIUS) & (self.vel.norm(dim=1) < STOP_SPEED)
        truncated = (self.steps >= self.max_episode_steps) & ~terminated
        final_obs = self._obs()
        ended = terminated | truncated
        if ended.any():
            self._reset(ended)
        return TensorStep(self._obs(), -dist, terminated, truncated, final_obs)

    def _reset(self, mask: torch.Tensor) -> None:
        """New episodes where mask is set: position and goal uniform in [-0.9, 0.9]^2, at rest."""
        draw = (torch.rand(2, self.num_envs, 2, generator=self.generator, device=self.device) * 1.8 - 0.9)
        keep = mask[:, None]
        self.pos = torch.where(keep, draw[0], self.pos)
        self.goal = torch.where(keep, draw[1], self.goal)
        self.vel = torch.where(keep, torch.zeros_like(self.vel), self.vel)
        self.steps = torch.where(mask, torch.zeros_like(self.steps), self.steps)

    def _obs(self) -> torch.Tensor:
        return torch.cat([self.pos, self.vel, self.goal - self.pos], dim=1)
