"""Chunking sums rewards and stops early; history pads at reset; normaliser statistics are exact."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from robopol.config import PolicyConfig, TaskConfig
from robopol.data.normalizer import Normalizer
from robopol.sim.factory import make_vec_env
from robopol.sim.wrappers import ActionChunk, ObservationHistory


class Counter(gym.Env):
    """obs = step count; reward = the action's first element; terminates after `length` steps."""

    def __init__(self, length: int = 5) -> None:
        self.observation_space = gym.spaces.Box(-100, 100, (1,), np.float32)
        self.action_space = gym.spaces.Box(-10, 10, (1,), np.float32)
        self.length, self.t = length, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t], np.float32), float(action[0]), self.t >= self.length, False, {}


def test_action_chunk_sums_rewards_and_stops_at_episode_end():
    env = ActionChunk(Counter(length=5), n_action_steps=3)
    env.reset()
    obs, reward, terminated, truncated, info = env.step(np.array([[1.0], [2.0], [3.0]]))
    assert (obs[0], reward, terminated, info["chunk_steps"]) == (3.0, 6.0, False, 3)
    obs, reward, terminated, truncated, info = env.step(np.array([[1.0], [10.0], [100.0]]))
    assert (obs[0], reward, terminated, info["chunk_steps"]) == (5.0, 11.0, True, 2)  # the third action never ran


def test_observation_history_pads_with_the_first_frame_and_slides():
    env = ObservationHistory(Counter(), n_obs_steps=3)
    obs, _ = env.reset()
    np.testing.assert_array_equal(obs[:, 0], [0, 0, 0])
    env.step(np.array([0.0]))
    obs, *_ = env.step(np.array([0.0]))
    np.testing.assert_array_equal(obs[:, 0], [0, 1, 2])
    assert env.observation_space.shape == (3, 1)


def test_vector_env_is_seeded_and_exposes_final_observations():
    policy = PolicyConfig(n_obs_steps=2, horizon=4, n_action_steps=4)
    task = TaskConfig(name="reach", env_id="robopol/Reach-v0", max_episode_steps=6)
    a = make_vec_env(task, policy, 3)
    b = make_vec_env(task, policy, 3)
    oa, _ = a.reset(seed=[1, 2, 3])
    ob, _ = b.reset(seed=[1, 2, 3])
    np.testing.assert_array_equal(oa, ob)
    assert oa.shape == (3, 2, 4)
    _, _, _, truncated, _ = a.step(np.zeros((3, 4, 2)))
    _, _, _, truncated, info = a.step(np.zeros((3, 4, 2)))  # 8 > 6 steps: truncated after 2 actions
    assert truncated.all() and info["final_info"]["chunk_steps"].tolist() == [2, 2, 2]
    assert np.stack(info["final_obs"]).shape == (3, 2, 4)


def test_normalizer_running_stats_match_numpy_and_actions_round_trip():
    norm = Normalizer(3, np.array([-2.0, 0.0]), np.array([2.0, 10.0]))
    data = torch.randn(50, 3) * torch.tensor([1.0, 5.0, 0.1]) + 3
    for chunk in data.split(7):
        norm.update(chunk)
    torch.testing.assert_close(norm.obs_mean, data.mean(0), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(norm.obs_var, data.var(0, unbiased=False), rtol=1e-3, atol=1e-4)
    raw = torch.tensor([[-2.0, 0.0], [0.0, 5.0], [2.0, 10.0]])
    torch.testing.assert_close(norm.normalize_action(raw), torch.tensor([[-1.0, -1.0], [0.0, 0.0], [1.0, 1.0]]))
    torch.testing.assert_close(norm.unnormalize_action(norm.normalize_action(raw)), raw)
    torch.testing.assert_close(norm.unnormalize_action(torch.tensor([[5.0, -5.0]])), torch.tensor([[2.0, 0.0]]))


def test_normalizer_folded_writes_nothing_and_committing_it_is_update():
    """The compiled rollout step computes `folded` in its graph and commits it eagerly: folding must
    leave the stored statistics alone, and normalising with it must equal updating, then normalising."""
    a, b = Normalizer(3, np.zeros(1), np.ones(1)), Normalizer(3, np.zeros(1), np.ones(1))
    first, batch = torch.randn(8, 2, 3) * 4 + 1, torch.randn(8, 2, 3) * 2 - 3
    a.update(first)
    b.update(first)
    before = {k: v.clone() for k, v in b.state_dict().items()}
    folded = b.folded(batch)
    assert all(torch.equal(before[k], v) for k, v in b.state_dict().items())
    a.update(batch)
    assert torch.equal(b.normalize_obs(batch, folded), a.normalize_obs(batch))
    b.commit(batch, folded)
    assert all(torch.equal(v, a.state_dict()[k]) for k, v in b.state_dict().items())
    assert float(b.count) == pytest.approx(32)
