"""What the Runner asks of a loop, and the vector-env stepping both online loops share."""

from __future__ import annotations

import abc
from typing import Any, Protocol

import numpy as np
import torch

from robopol import distributed
from robopol.algos.base import Algorithm
from robopol.config import RunConfig
from robopol.data.normalizer import Normalizer, RewardScaler
from robopol.device import cpu_side
from robopol.loops.env_batch import EnvStep, make_env_batch
from robopol.policies.base import ChunkSpec
from robopol.run_logger import RunLogger
from robopol.sim import env_state

RANK_ENV_SEED_STRIDE = 10_000_000  # rank r's env i starts from seed + r * stride + i: no rank repeats another's


class RunState(Protocol):
    """What a loop may read and advance of the Runner that drives it."""

    cfg: RunConfig
    device: torch.device  # the learner's (train.device); envs stay on the CPU
    spec: ChunkSpec
    normalizer: Normalizer
    algo: Algorithm
    logger: RunLogger | None  # rank 0's alone
    env_steps: int  # advanced by the online loops as they step envs
    progress: int
    iteration: int

    def precision(self) -> torch.autocast:
        """The context updates run in (train.autocast)."""
        ...

    def evaluate(self) -> dict[str, float]:
        """Evaluate the current policy now and log an eval row at the current env steps."""
        ...


class Loop(abc.ABC):
    stream = "train"  # the CSV / TensorBoard stream its metrics go to
    unit = "step"  # what progress counts: env steps (online) or gradient steps (offline)
    evaluates_in_run = True  # evaluate every train.eval_every iterations, not only at the end
    progress_per_rank = False  # whether each rank's progress is its own share (its envs' steps) of the run's

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
    """A seeded batch of envs (robopol.loops.env_batch: Gymnasium's vector, or a tensor env without numpy),
    the observation normaliser's running statistics, and episode-return tracking; `env_step` executes
    normalised action chunks and counts env steps. Everything here is a torch tensor, on the learner's
    device. Under torchrun each rank steps its own envs, seeded apart, and counts its own env steps."""

    progress_per_rank = True

    def __init__(self, runner: RunState) -> None:
        super().__init__(runner)
        cfg = runner.cfg
        with cpu_side(runner.device):
            self.envs = make_env_batch(cfg, runner.device)
        # A behaviour-cloned actor keeps the normaliser it was trained with.
        self.update_obs_stats = cfg.sim.normalize_obs and not cfg.train.pretrained
        self.episode_returns = torch.zeros(cfg.sim.num_envs, dtype=torch.float64)
        self.recent_returns: list[float] = []
        self.restored: dict[str, Any] | None = None  # env states from a checkpoint, put back in start()

    @property
    def budget(self) -> int:
        return self.runner.cfg.train.total_env_steps

    def start(self) -> None:
        """Continue the checkpoint's episodes where their envs' states were saved; else reset with seeds."""
        if self.restored is not None:
            for env, state in zip(self.envs.envs.envs, self.restored["envs"]):  # type: ignore[attr-defined]
                env_state.restore(env, state)
            device = self.runner.device
            self.obs = self.restored["obs"].to(device, copy=True)
            self.episode_returns = self.restored["episode_returns"].to(device, copy=True)
            return
        cfg, iteration = self.runner.cfg, self.runner.iteration
        rank_offset = distributed.rank() * RANK_ENV_SEED_STRIDE
        self.obs = self.envs.reset(seed=cfg.train.seed * 1000 + iteration * 100 + rank_offset)

    def env_states(self) -> dict[str, Any]:
        """The envs' states, their current observations and the returns of the episodes in flight; `envs`
        is None where a backend's state cannot be captured (see robopol.sim.env_state)."""
        vector = getattr(self.envs, "envs", None)  # a Gymnasium batch; tensor envs hold no per-env objects
        subs = getattr(vector, "envs", None)  # a synchronous vector holds its envs in this process
        states = [env_state.capture(env) for env in subs] if subs is not None else [None]
        return {"envs": None if any(s is None for s in states) else states, "obs": self.obs.clone(),
                "episode_returns": self.episode_returns.clone()}

    def load_env_states(self, state: dict[str, Any]) -> None:
        self.restored = state if state.get("envs") is not None else None

    def observe(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The current raw observations and their normalised form (statistics updated first)."""
        if self.update_obs_stats:
            self.runner.normalizer.update(self.obs)
        return self.obs, self.runner.normalizer.normalize_obs(self.obs)

    def merge_statistics(self, reward_scaler: RewardScaler | None) -> None:
        """Under torchrun, every rank's observation (and reward) statistics become those of all ranks' envs:
        once per collection, as each collective is a scheduling round trip (a no-op in one process)."""
        if self.update_obs_stats:
            self.runner.normalizer.merge_ranks()
        if reward_scaler is not None:
            reward_scaler.merge_ranks()

    def env_step(self, actions: torch.Tensor) -> EnvStep:
        """Execute the first n_action_steps of normalised chunks; the envs' step, with self.obs advanced."""
        return self.execute(self.runner.normalizer.unnormalize_action(actions[:, : self.runner.spec.n_action_steps]))

    def execute(self, env_actions: torch.Tensor) -> EnvStep:
        """Execute action chunks in env units (N, n_action_steps, act_dim); `env_step` without the conversion."""
        runner = self.runner
        step = self.envs.step(env_actions)
        self.obs = step.obs
        runner.env_steps += step.env_steps
        ended = step.terminated | step.truncated
        self.episode_returns += step.reward
        if ended.any():
            self.recent_returns.extend(self.episode_returns[ended].tolist())
            self.episode_returns[ended] = 0.0
        return step

    def episode_metrics(self) -> dict[str, float]:
        """Mean return of the training episodes that ended since the last call."""
        if not self.recent_returns:
            return {}
        out = {"episode_return": float(np.mean(self.recent_returns))}
        self.recent_returns.clear()
        return out

    def close(self) -> None:
        self.envs.close()
