"""An Isaac Gym task (IsaacGymEnvs' VecTask) as a robopol tensor env (robopol.sim.tensor_env).

Typed against isaacgym-stubs (`pip install -e .[isaacgym]`); tests/test_tensor_env.py runs the
basedpyright type checker on this module. Isaac Gym itself cannot be installed on robopol's machines (it needs an NVIDIA driver and
a registration-only download), so the tests drive the adapter with a torch object that follows the
VecTask contract below, not with Isaac Gym.

The VecTask contract, as IsaacGymEnvs' `VecTask.step` implements it:
- `step(actions) -> (obs_dict, rew_buf, reset_buf, extras)`: obs_dict["obs"] is the clipped obs_buf,
  reset_buf flags every env whose episode ended (terminal state or time-out), and
  extras["time_outs"] flags the time-outs (progress_buf >= max_episode_length - 1).
- Flagged envs are reset by the task itself during its next step, so their observation from this
  step is the episode's last one.
- `reset() -> obs_dict`; the task draws its random resets from torch's global generator.

What the adapter makes of it: truncated = reset_buf & time_outs, terminated = reset_buf & ~time_outs
(a terminal state on the time-out step counts as a time-out: VecTask cannot tell them apart), and
final_obs = the step's observation. The one departure from the tensor-env contract: a finished env's
`obs` is that same final observation, not its next episode's first one (the task resets it only on the
next step, as rl_games and rsl_rl also see it), so one transition per episode starts from a final
observation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import torch

from robopol.sim.tensor_env import TensorStep, TensorVecEnv

if TYPE_CHECKING:
    from isaacgym import gymapi


class VecTask(Protocol):
    """The parts of IsaacGymEnvs' VecTask the adapter reads."""

    gym: gymapi.Gym
    sim: gymapi.Sim
    num_envs: int
    num_obs: int
    num_actions: int
    max_episode_length: int
    rl_device: str
    obs_buf: torch.Tensor
    rew_buf: torch.Tensor
    reset_buf: torch.Tensor
    progress_buf: torch.Tensor

    def reset(self) -> dict[str, torch.Tensor]: ...

    def step(self, actions: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, dict[str, Any]]: ...


class IsaacGymVecEnv:
    """robopol's tensor-env interface over a VecTask (see the module docstring for the semantics)."""

    def __init__(self, task: VecTask) -> None:
        self.task = task
        self.num_envs, self.obs_dim, self.act_dim = task.num_envs, task.num_obs, task.num_actions
        self.max_episode_steps = task.max_episode_length
        self.device = torch.device(task.rl_device)
        self.action_low = -torch.ones(self.act_dim, device=self.device)  # VecTask's act_space is [-1, 1]
        self.action_high = torch.ones(self.act_dim, device=self.device)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """A seed seeds torch's global generator, which VecTask tasks draw their resets from."""
        if seed is not None:
            torch.manual_seed(seed)
        return self.task.reset()["obs"]

    def step(self, actions: torch.Tensor) -> TensorStep:
        obs_dict, reward, reset, extras = self.task.step(actions)
        obs, ended = obs_dict["obs"], reset.bool()
        time_outs = extras.get("time_outs")
        timed_out = time_outs.bool() if time_outs is not None else torch.zeros_like(ended)
        return TensorStep(obs, reward.float(), ended & ~timed_out, ended & timed_out, obs)


if TYPE_CHECKING:  # the type checker proves the adapter meets the tensor-env protocol

    def _as_tensor_env(task: VecTask) -> TensorVecEnv:
        return IsaacGymVecEnv(task)
