"""Evaluation protocols on hand-made episodes, and the episode runner on a tiny deterministic env."""

import gymnasium as gym
import numpy as np
import pytest

from robopol.protocols import EpisodeRecord, eval_seeds, pusht_metrics, robomimic_metrics, run_episodes
from robopol.sim.factory import EVAL_SEED_BASE


def _record(coverage=(), successes=(False,)):
    n = max(len(coverage), len(successes))
    cov = np.asarray(coverage, float) if len(coverage) else np.full(n, np.nan)
    return EpisodeRecord(seed=0, rewards=np.zeros(n), successes=np.asarray(successes, bool) if len(successes) == n
                         else np.zeros(n, bool), coverage=cov, terminated=False)


def test_pusht_mean_max_reward_and_success():
    records = [
        _record(coverage=[0.1, 0.5, 0.3]),  # max reward 0.5 / 0.95
        _record(coverage=[0.2, 0.96, 0.9]),  # success, reward clipped to 1
        _record(coverage=[0.95, 0.0]),  # exactly 0.95: reward 1, but success needs > 0.95
    ]
    metrics = pusht_metrics(records)
    assert metrics["mean_max_reward"] == pytest.approx((0.5 / 0.95 + 1.0 + 1.0) / 3)
    assert metrics["success_rate"] == pytest.approx(1 / 3)
    assert metrics["episodes"] == 3


def test_robomimic_success_rate():
    records = [_record(successes=[False, False, True]), _record(successes=[False] * 4),
               _record(successes=[False, True]), _record(successes=[False])]
    assert robomimic_metrics(records) == {"success_rate": 0.5, "episodes": 4.0}


def test_eval_seeds_are_fixed_and_above_training_seeds():
    assert eval_seeds(3) == [EVAL_SEED_BASE, EVAL_SEED_BASE + 1, EVAL_SEED_BASE + 2]


class Counter(gym.Env):
    """Walks a counter by the action; succeeds (terminates) at 3, truncates after 5 steps."""

    observation_space = gym.spaces.Box(-10, 10, (1,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = float(seed % 2), 0
        return np.array([self.x], np.float32), {}

    def step(self, action):
        self.x += float(action[0])
        self.t += 1
        success = self.x >= 3
        return np.array([self.x], np.float32), float(success), success, self.t >= 5 and not success, \
            {"is_success": success, "coverage": self.x / 4}


def test_run_episodes_records_seeded_episodes_until_they_end():
    resets = []
    records = run_episodes(Counter(), lambda obs: np.array([1.0]), [10, 11], reset=lambda env, seed: resets.append(seed),
                           recorder=lambda env: {"t": np.array(env.t)}, keep_obs=True)
    assert resets == [10, 11]
    even, odd = records
    assert (even.seed, even.length, even.terminated, even.success) == (10, 3, True, True)  # 0 -> 3
    assert (odd.length, odd.terminated) == (2, True)  # 1 -> 3
    np.testing.assert_array_equal(even.obs[:, 0], [0, 1, 2, 3])
    np.testing.assert_array_equal(even.actions, [[1.0]] * 3)
    np.testing.assert_array_equal(even.extras["t"], [0, 1, 2, 3])
    np.testing.assert_allclose(even.coverage, [0.25, 0.5, 0.75])
    np.testing.assert_array_equal(even.rewards, [0, 0, 1])


def test_run_episodes_stops_at_truncation_without_success():
    (record,) = run_episodes(Counter(), lambda obs: np.array([0.0]), [4])
    assert (record.length, record.terminated, record.success, record.obs) == (5, False, False, None)
    assert robomimic_metrics([record])["success_rate"] == 0.0
