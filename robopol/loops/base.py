"""What the Runner asks of a loop, and the vector-env stepping both online loops share."""

from __future__ import annotations

import abc
from typing import Any, Protocol

import numpy as np
import torch

from robopol.algos.base import Algorithm
from robopol.config import RunConfig
from robopol.data.normalizer import Normalizer
from robopol.policies.base import ChunkSpec
from robopol.run_logger import RunLogger
from robopol.sim import env_state
from robopol.sim.factory import make_vec_env


class RunState(Protocol):
    """What a loop may read and advance of the Runner that drives it."""

    cfg: RunConfig
    spec: ChunkSpec
    normalizer: Normalizer
    algo: Algorithm
    logger: RunLogger
    env_steps: int  # advanced by the online loops as they step envs
    progress: int
    iteration: int

    def precision(self) -> torch.autocast:
        """The context updates run in (train.autocast)."""
        ...


class Loop(abc.ABC):
    stream = "train"  # the CSV / TensorBoard stream its metrics go to
    unit = "step"  # what progress counts: env steps (online) or gradient steps (offline)
    evaluates_in_run = True  # evaluate every train.eval_every iterations, not only at the end

    def __init__(self, runner: RunState) -> None:
        self.runner = runner

    @property
    @abc.abstractmethod
    def budget(self) -> int:
        """Progress at which the run is done."""

    @abc.abstractmethod
    def iterate(self, progress: float) -> tuple[int, dict[str, float]]:
        """One iteration; returns the progress it made and its metrics."""

    def start(self) -> None:
        """Called once the Runner has restored any checkpoint, before the first iteration."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass

    def plot(self, logger: RunLogger) -> None:
        """Extra figures a person reads at the end of the run."""

    def summary(self) -> dict[str, Any]:
        """Extra keys for the run's final result."""
        return {}


class OnlineLoop(Loop):
    """A seeded vector of chunked envs, the observation normaliser's running statistics, and
    episode-return tracking; `env_step` executes normalised action chunks and counts env steps."""

    def __init__(self, runner: RunState) -> None:
        super().__init__(runner)
        cfg = runner.cfg
        self.envs = make_vec_env(cfg.task, cfg.policy, cfg.sim.num_envs, cfg.sim.vectorization, cfg.sim.envpool_threads)
        # A behaviour-cloned actor keeps the normaliser it was trained with.
        self.update_obs_stats = cfg.sim.normalize_obs and not cfg.train.pretrained
        self.episode_returns = np.zeros(cfg.sim.num_envs)
        self.recent_returns: list[float] = []
        self.restored: dict[str, Any] | None = None  # env states from a checkpoint, put back in start()

    @property
    def budget(self) -> int:
        return self.runner.cfg.train.total_env_steps

    def start(self) -> None:
        """Continue the checkpoint's episodes where their envs' states were saved; else reset with seeds."""
        if self.restored is not None:
            for env, state in zip(self.envs.envs, self.restored["envs"]):  # type: ignore[attr-defined]
                env_state.restore(env, state)
            self.obs, self.episode_returns = self.restored["obs"].numpy(), self.restored["episode_returns"].numpy()
            return
        cfg, iteration = self.runner.cfg, self.runner.iteration
        self.obs, _ = self.envs.reset(seed=[cfg.train.seed * 1000 + iteration * 100 + i for i in range(cfg.sim.num_envs)])

    def env_states(self) -> dict[str, Any]:
        """The envs' states, their current observations and the returns of the episodes in flight; `envs`
        is None where a backend's state cannot be captured (see robopol.sim.env_state)."""
        subs = getattr(self.envs, "envs", None)  # a synchronous vector holds its envs in this process
        states = [env_state.capture(env) for env in subs] if subs is not None else [None]
        return {"envs": None if any(s is None for s in states) else states, "obs": torch.from_numpy(self.obs.copy()),
                "episode_returns": torch.from_numpy(self.episode_returns.copy())}

    def load_env_states(self, state: dict[str, Any]) -> None:
        self.restored = state if state.get("envs") is not None else None

    def observe(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The current raw observations and their normalised form (statistics updated first)."""
        obs = torch.from_numpy(self.obs).float()
        if self.update_obs_stats:
            self.runner.normalizer.update(obs)
        return obs, self.runner.normalizer.normalize_obs(obs)

    def env_step(self, actions: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Execute the first n_action_steps of normalised chunks; (reward, terminated, truncated, info)."""
        runner = self.runner
        env_actions = runner.normalizer.unnormalize_action(actions[:, : runner.spec.n_action_steps]).numpy()
        self.obs, reward, terminated, truncated, info = self.envs.step(env_actions)
        ended = terminated | truncated
        runner.env_steps += _executed_steps(info, ended)
        self.episode_returns += reward
        self.recent_returns.extend(self.episode_returns[ended].tolist())
        self.episode_returns[ended] = 0.0
        return reward, terminated, truncated, info

    def episode_metrics(self) -> dict[str, float]:
        """Mean return of the training episodes that ended since the last call."""
        if not self.recent_returns:
            return {}
        out = {"episode_return": float(np.mean(self.recent_returns))}
        self.recent_returns.clear()
        return out

    def close(self) -> None:
        self.envs.close()


def final_observations(info: dict[str, Any], idx: np.ndarray) -> torch.Tensor:
    """The true last observations of the episodes of envs `idx` that just ended (SAME_STEP reset)."""
    return torch.from_numpy(np.stack(info["final_obs"][idx])).float()


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
