"""The envs an online loop steps, behind one torch interface: a Gymnasium vector (numpy inside, chunked
and with observation history), EnvPool's chunked vector read through its arrays, or a tensor env
(robopol.sim.tensor_env) whose observations, rewards and flags are torch tensors already, so its loop
makes no numpy round trip.

Each hands the loop `EnvStep`s of torch tensors on the learner's device (train.device; for a GPU, copied
through pinned memory once per vector step), N = num_envs:
obs and final_obs (N, n_obs_steps, obs_dim) float32, reward (N,) float64, terminated / truncated /
success (N,) bool, and the env steps executed (a chunk stops early where its episode ends)."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import numpy as np
import torch

from robopol.config import RunConfig
from robopol.core_pinning import learner_core
from robopol.device import to_learner
from robopol.sim.factory import make_tensor_env, make_vec_env
from robopol.sim.tensor_env import TensorVecEnv


class EnvStep(NamedTuple):
    """One vector step. Its tensors are the loop's to keep (the rollout buffer queues them until the end of
    the rollout): no env may write into them later."""

    obs: torch.Tensor  # where an episode ended, the first observation of the next one (SAME_STEP reset)
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    final_obs: torch.Tensor  # the episode's last observation where one ended, else obs
    success: torch.Tensor
    env_steps: int


class EnvBatch(Protocol):
    def reset(self, seed: int) -> torch.Tensor:
        """First observations (N, n_obs_steps, obs_dim); env i's episodes follow from seed + i."""
        ...

    def step(self, actions: torch.Tensor) -> EnvStep:
        """Execute action chunks (N, n_action_steps, act_dim) in env units."""
        ...

    def close(self) -> None: ...


class GymnasiumBatch:
    """A Gymnasium vector env of chunked envs; numpy converts to torch here, once a step."""

    def __init__(self, cfg: RunConfig, device: torch.device | str = "cpu") -> None:
        self.envs = _vector(cfg)
        self.num_envs, self.device = cfg.sim.num_envs, torch.device(device)

    def reset(self, seed: int) -> torch.Tensor:
        obs, _ = self.envs.reset(seed=[seed + i for i in range(self.num_envs)])
        return to_learner(torch.from_numpy(obs).to(torch.float32, copy=True), self.device)

    def step(self, actions: torch.Tensor) -> EnvStep:
        obs_np, reward, terminated, truncated, info = self.envs.step(actions.cpu().numpy())
        obs = torch.from_numpy(obs_np).to(torch.float32, copy=True)  # vector envs may reuse their buffers
        ended = terminated | truncated
        final_obs = obs
        if ended.any():
            idx = np.flatnonzero(ended)
            final_obs = obs.clone()
            final_obs[idx] = torch.from_numpy(np.stack(info["final_obs"][idx])).float()
        tensors = (obs, torch.from_numpy(reward.astype(np.float64, copy=False)), torch.from_numpy(terminated),
                   torch.from_numpy(truncated), final_obs, torch.from_numpy(successes(info, ended)))
        return EnvStep(*(to_learner(t, self.device) for t in tensors), _executed_steps(info, ended))

    def close(self) -> None:
        self.envs.close()


class EnvPoolBatch:
    """EnvPool's chunked vector (task.backend=envpool) read through its arrays (EnvPoolVectorEnv.step_chunks)
    rather than Gymnasium's info dicts: the same transitions, fewer small numpy operations a step."""

    def __init__(self, cfg: RunConfig, device: torch.device | str = "cpu") -> None:
        self.envs = _vector(cfg)
        self.device = torch.device(device)
        self.no_success = to_learner(torch.zeros(cfg.sim.num_envs, dtype=torch.bool), self.device)  # EnvPool reports none

    def reset(self, seed: int) -> torch.Tensor:
        obs, _ = self.envs.reset(seed=seed)
        return to_learner(torch.from_numpy(obs), self.device)

    def step(self, actions: torch.Tensor) -> EnvStep:
        out = self.envs.step_chunks(actions.cpu().numpy())  # fresh arrays: no copies needed
        tensors = (out.obs, out.reward, out.terminated, out.truncated, out.final_obs)
        return EnvStep(*(to_learner(torch.from_numpy(t), self.device) for t in tensors), self.no_success,
                       int(out.steps.sum()))

    def close(self) -> None:
        self.envs.close()


class TensorBatch:
    """A tensor env: one action and one observation per step (no chunking, no observation history), its
    tensors moved to the learner's device (a no-op for a CPU env)."""

    def __init__(self, env: TensorVecEnv, device: torch.device | str = "cpu") -> None:
        self.env, self.device = env, torch.device(device)
        self.no_success = torch.zeros(env.num_envs, dtype=torch.bool, device=self.device)

    def reset(self, seed: int) -> torch.Tensor:
        return self._observations(self.env.reset(seed=seed))

    def step(self, actions: torch.Tensor) -> EnvStep:
        out = self.env.step(actions[:, 0].to(self.env.device))
        to = self.device
        return EnvStep(self._observations(out.obs), out.reward.to(to, torch.float64, copy=True),
                       out.terminated.to(to, copy=True), out.truncated.to(to, copy=True),
                       self._observations(out.final_obs), self.no_success, self.env.num_envs)

    def _observations(self, obs: torch.Tensor) -> torch.Tensor:
        """(N, 1, obs_dim) float32 copies: a simulator may overwrite its observation buffer in place."""
        return obs.to(self.device, torch.float32, copy=True).unsqueeze(1)

    def close(self) -> None:
        pass


def make_env_batch(cfg: RunConfig, device: torch.device | str = "cpu") -> EnvBatch:
    """The tensor path for a tensor task (task.backend=tensor), EnvPool's arrays for an EnvPool task,
    Gymnasium's vector for the others; their tensors reach the loop on the learner's `device`."""
    if cfg.task.backend == "envpool":
        return EnvPoolBatch(cfg, device)
    if cfg.task.backend != "tensor":
        return GymnasiumBatch(cfg, device)
    return TensorBatch(make_tensor_env(cfg.task, cfg.sim.num_envs), device)  # RunConfig allows it single steps only


def _vector(cfg: RunConfig) -> Any:
    """The run's chunked vector env (Gymnasium's, or EnvPoolVectorEnv for task.backend=envpool, its workers
    on the learner's core under sim.cpu)."""
    return make_vec_env(cfg.task, cfg.policy, cfg.sim.num_envs, cfg.sim.vectorization, cfg.sim.envpool_threads,
                        learner_core(cfg.sim.cpu))


def successes(info: dict[str, Any], ended: np.ndarray) -> np.ndarray:
    """Per env, whether this step reported success (an ended env's report is in final_info)."""
    def flags(d: dict[str, Any]) -> np.ndarray:
        if "is_success" not in d:
            return np.zeros(len(ended), dtype=bool)
        return np.asarray(d["is_success"], dtype=bool) & np.asarray(d.get("_is_success", True), dtype=bool)

    now = flags(info)
    if ended.any() and "final_info" in info:
        now = np.where(ended, flags(info["final_info"]), now)
    return now


def _executed_steps(info: dict[str, Any], ended: np.ndarray) -> int:
    """Env steps run by one vector step: a finished env's count is in final_info (SAME_STEP reset)."""
    steps = np.asarray(info.get("chunk_steps", np.zeros(len(ended), dtype=int)))
    if ended.any():
        steps = np.where(ended, info["final_info"]["chunk_steps"], steps)
    return int(steps.sum())
