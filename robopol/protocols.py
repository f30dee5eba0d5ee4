"""Benchmark evaluation protocols, as pure functions over recorded episodes, and the loop that
records them.

- PushT (diffusion_policy, LeRobot): per episode the max over steps of clip(coverage / 0.95, 0, 1);
  report the mean of those over episodes, and the success rate (coverage > 0.95 at any step).
  diffusion_policy evaluates 50 episodes of at most 300 steps; LeRobot 500.
- Robomimic (robomimic, DPPO): success rate over N episodes (robomimic evaluates 50).

Evaluation seeds are fixed: episode i uses EVAL_SEED_BASE + i (the env factory's constant, far above
every training seed), so every policy is measured on the same initial states."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from robopol.sim.factory import EVAL_SEED_BASE

SUCCESS_COVERAGE = 0.95  # gym-pusht's success threshold, also the reward's normaliser


@dataclass(frozen=True)
class EpisodeRecord:
    """One episode: per-step rewards and success flags, PushT's per-step coverage (NaN elsewhere),
    and optionally the observations (T + 1 rows), actions (T rows) and recorder outputs (T + 1 rows)."""

    seed: int
    rewards: np.ndarray
    successes: np.ndarray
    coverage: np.ndarray
    terminated: bool
    obs: np.ndarray | None = None
    actions: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return len(self.rewards)

    @property
    def success(self) -> bool:
        return bool(self.successes.any())


def eval_seeds(n: int) -> list[int]:
    return [EVAL_SEED_BASE + i for i in range(n)]


def run_episodes(env: gym.Env, policy: Callable[[np.ndarray], np.ndarray], seeds: Sequence[int],
                 reset: Callable[[gym.Env, int], None] | None = None,
                 recorder: Callable[[gym.Env], dict[str, np.ndarray]] | None = None,
                 keep_obs: bool = False, progress: str | None = None) -> list[EpisodeRecord]:
    """Run one episode per seed until the env terminates or truncates. `reset(env, seed)` runs after
    each env.reset (policies with state, experts); `recorder(env)` after every reset and step."""
    records = []
    for seed in tqdm(seeds, desc=progress, disable=progress is None, unit="episode"):
        obs, _ = env.reset(seed=int(seed))
        if reset is not None:
            reset(env, int(seed))
        observations, actions, rewards, successes, coverage = [obs], [], [], [], []
        extras = [recorder(env)] if recorder else []
        done = terminated = False
        while not done:
            action = np.asarray(policy(obs))
            obs, reward, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            actions.append(action)
            rewards.append(reward)
            successes.append(bool(info.get("is_success", False)))
            coverage.append(info.get("coverage", np.nan))
            if keep_obs:
                observations.append(obs)
            if recorder:
                extras.append(recorder(env))
        records.append(EpisodeRecord(
            seed=int(seed), rewards=np.asarray(rewards, np.float64), successes=np.asarray(successes),
            coverage=np.asarray(coverage, np.float64), terminated=bool(terminated),
            obs=np.stack(observations) if keep_obs else None, actions=np.stack(actions) if keep_obs else None,
            extras={k: np.stack([e[k] for e in extras]) for k in (extras[0] if extras else {})}))
    return records


def pusht_metrics(records: Sequence[EpisodeRecord]) -> dict[str, float]:
    """diffusion_policy's `test/mean_score` (mean of per-episode max reward) and the success rate."""
    max_reward = [np.clip(r.coverage / SUCCESS_COVERAGE, 0.0, 1.0).max() for r in records]
    success = [(r.coverage > SUCCESS_COVERAGE).any() for r in records]
    return {"mean_max_reward": float(np.mean(max_reward)), "success_rate": float(np.mean(success)),
            "episodes": float(len(records))}


def robomimic_metrics(records: Sequence[EpisodeRecord]) -> dict[str, float]:
    """Success rate: the fraction of episodes in which the task succeeded at some step."""
    return {"success_rate": float(np.mean([r.success for r in records])), "episodes": float(len(records))}


PROTOCOLS: dict[str, Callable[[Sequence[EpisodeRecord]], dict[str, float]]] = {
    "pusht": pusht_metrics, "lift": robomimic_metrics, "can": robomimic_metrics, "square": robomimic_metrics,
}
