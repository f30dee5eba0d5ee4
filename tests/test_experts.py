"""Scripted experts: each solves a seeded episode; noise perturbs them reproducibly; demos get written."""

import numpy as np
import pytest

from robopol.data.pusht_zarr import read_pusht_zarr
from robopol.data.robomimic_hdf5 import read_robomimic_hdf5
from robopol.demos import write_demonstrations
from robopol.errors import ConfigError
from robopol.experts import make_expert
from robopol.protocols import run_episodes
from robopol.sim.pusht import make_pusht_env
from robopol.sim.robomimic import make_robomimic_env


def _solve(env, task, seed, noise=0.0):
    expert = make_expert(task, noise)
    (record,) = run_episodes(env, lambda obs: expert.act(obs, env), [seed], reset=expert.reset, keep_obs=True)
    return record


def test_pusht_expert_pushes_the_t_home():
    record = _solve(make_pusht_env({}, None), "pusht", seed=5)
    assert record.success and record.terminated and record.length < 150
    assert record.coverage[-1] > 0.95


@pytest.mark.parametrize("task, seed, max_steps", [("lift", 0, 80), ("can", 0, 200), ("square", 0, 200)])
def test_robomimic_experts_succeed(task, seed, max_steps):
    env = make_robomimic_env({"task": task}, None)
    record = _solve(env, task, seed)
    env.close()
    assert record.success and record.terminated and record.length < max_steps
    assert record.rewards[-1] == 1.0 and record.rewards[:-1].sum() == 0.0


def test_noise_perturbs_actions_reproducibly():
    env = make_pusht_env({}, None)
    clean, noisy, again = (_solve(env, "pusht", 5, noise).actions[:20] for noise in (0.0, 5.0, 5.0))
    assert not np.allclose(clean, noisy)
    np.testing.assert_array_equal(noisy, again)


def test_unknown_task_and_negative_noise_are_config_errors():
    with pytest.raises(ConfigError, match="choose one of: pusht, lift, can, square"):
        make_expert("transport")
    with pytest.raises(ConfigError, match="noise"):
        make_expert("lift", -0.1)


def test_demos_write_readable_files(tmp_path):
    stats = write_demonstrations("lift", 1, tmp_path / "lift.hdf5", noise=0.05, seed=0, fmt="hdf5")
    assert stats["successes"] == 1 and stats["episodes"] == 1
    demos = read_robomimic_hdf5(tmp_path / "lift.hdf5", "lift")
    (ep,) = demos.episodes
    assert len(ep) == stats["episode_lengths"][0] and ep.rewards[-1] == 1.0 and ep.dones[-1]
    assert ep.states.shape == (len(ep), 32) and demos.env_args["env_name"] == "Lift"
    # next_obs is the observation after each action: it matches the following obs
    np.testing.assert_array_equal(ep.next_obs["object"][:-1], ep.obs["object"][1:])

    stats = write_demonstrations("pusht", 1, tmp_path / "pusht.zarr", seed=5, fmt="zarr")
    (ep,) = read_pusht_zarr(tmp_path / "pusht.zarr", "keypoints").episodes
    assert stats["successes"] == 1 and len(ep) == stats["episode_lengths"][0] and ep.rewards.max() == 1.0
    with pytest.raises(ConfigError, match="'zarr' is not available for task 'lift'"):
        write_demonstrations("lift", 1, tmp_path / "x.zarr", fmt="zarr")
