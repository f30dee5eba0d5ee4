"""The PushT and robomimic task envs: spaces, seeding, reward / success semantics, limits, metadata."""

import gymnasium as gym
import numpy as np
import pytest

from robopol.errors import ConfigError
from robopol.sim import pusht
from robopol.sim.robomimic import OBS_KEYS, make_robomimic_env


def test_pusht_success_reward_pays_only_on_success_and_tracks_the_best_coverage():
    from robopol.experts import make_expert
    from robopol.protocols import run_episodes

    env = pusht.make_pusht_env({"reward": "success"}, None)
    expert = make_expert("pusht")
    (record,) = run_episodes(env, lambda obs: expert.act(obs, env), [5], reset=expert.reset,
                             recorder=lambda e: {"best": np.float64(e.max_coverage)})
    assert record.success and record.rewards[-1] == 1.0 and record.rewards[:-1].sum() == 0.0
    best = record.extras["best"][1:]
    np.testing.assert_allclose(best, np.maximum.accumulate(record.coverage))
    with pytest.raises(ConfigError, match="task.env_kwargs.reward"):
        pusht.make_pusht_env({"reward": "dense"}, None)


def test_pusht_progress_reward_telescopes_to_the_coverage_gain_plus_the_success_bonus():
    from robopol.experts import make_expert
    from robopol.protocols import run_episodes

    env = pusht.make_pusht_env({"reward": "progress"}, None)
    expert = make_expert("pusht")
    (record,) = run_episodes(env, lambda obs: expert.act(obs, env), [5], reset=expert.reset,
                             recorder=lambda e: {"coverage": np.float64(e.coverage)})
    assert record.success
    coverage = record.extras["coverage"]  # at reset, then after each step
    np.testing.assert_allclose(coverage[1:], record.coverage)
    steps = np.diff(coverage) / 0.95
    np.testing.assert_allclose(record.rewards[:-1], steps[:-1], atol=1e-9)
    assert record.rewards[-1] == pytest.approx(steps[-1] + 1.0)
    assert record.rewards.sum() == pytest.approx((coverage[-1] - coverage[0]) / 0.95 + 1.0)


@pytest.mark.parametrize("obs_type, dim", [("state", 5), ("keypoints", 18), ("state_keypoints", 23),
                                           ("pixels", 96 * 96 * 3)])
def test_pusht_observations_are_flat_float32(obs_type, dim):
    env = pusht.make_pusht_env({"obs_type": obs_type}, None)
    obs, info = env.reset(seed=0)
    assert env.observation_space.shape == (dim,) and obs.shape == (dim,) and obs.dtype == np.float32
    assert env.observation_space.contains(obs)
    assert info["is_success"] is False and 0.0 <= info["coverage"] <= 1.0
    assert env.action_space.shape == (2,) and env.action_space.high.max() == 512


def test_pusht_is_seedable_and_reports_coverage_as_gym_pusht_rewards_it():
    env = pusht.make_pusht_env({"obs_type": "keypoints"}, None)
    first = env.reset(seed=7)[0]
    assert not np.allclose(first, env.reset(seed=8)[0])
    np.testing.assert_array_equal(first, env.reset(seed=7)[0])
    for action in np.random.default_rng(0).uniform(100, 400, (15, 2)):
        obs, reward, terminated, truncated, info = env.step(action)
        pose = pusht.block_pose(env)
        assert info["coverage"] == pytest.approx(pusht.coverage(pose)[0], abs=1e-12)
        assert reward == pytest.approx(min(info["coverage"] / 0.95, 1.0))
        assert info["is_success"] == (info["coverage"] > 0.95) == terminated
        np.testing.assert_allclose(obs[:16], pusht.keypoints(pose)[0].reshape(-1), atol=1e-3)


def test_pusht_keypoint_observations_lie_in_the_declared_space():
    """gym-pusht bounds the T's corners by its 512-px window, but a reset can put one past it (seed 63)."""
    env = pusht.make_pusht_env({"obs_type": "keypoints"}, None)
    outside = [seed for seed in range(100) if not env.observation_space.contains(env.reset(seed=seed)[0])]
    assert outside == []
    assert env.observation_space.high[0] == pytest.approx(512 + pusht.T_REACH)


def test_pusht_state_keypoints_is_the_state_then_exactly_the_keypoints_observation():
    """The shared observation of a composed state + keypoints policy: each parent must see what its own
    obs_type would show it, to the bit, along a rollout (seed 63 puts a corner past the window)."""
    from gymnasium.utils.env_checker import check_env

    both, state, keys = (pusht.make_pusht_env({"obs_type": t}, None) for t in ("state_keypoints", "state", "keypoints"))
    for seed in (63, 7):
        obs = [env.reset(seed=seed)[0] for env in (both, state, keys)]
        for action in [None, *np.random.default_rng(seed).uniform(50, 450, (20, 2))]:
            if action is not None:
                obs = [env.step(action)[0] for env in (both, state, keys)]
            np.testing.assert_array_equal(obs[0][:5], obs[1])
            np.testing.assert_array_equal(obs[0][5:], obs[2])
            assert both.observation_space.contains(obs[0])
    with pytest.warns(UserWarning):  # check_env's advice about wrapped envs and unnormalised boxes
        check_env(pusht.make_pusht_env({"obs_type": "state_keypoints"}, None), skip_render_check=True)


def test_pusht_goal_pose_is_full_coverage_and_limit_is_300():
    # 3 px along the goal T's own x axis: the bar (30 tall) and the stem (90 tall) each lose a 3 px strip
    along_x = 3 * np.array([np.cos(np.pi / 4), np.sin(np.pi / 4), 0.0])
    coverage = pusht.coverage(np.array([pusht.GOAL_POSE, pusht.GOAL_POSE + along_x]))
    np.testing.assert_allclose(coverage, [1.0, (6300 - 3 * 30 - 3 * 90) / 6300])
    assert pusht.make_pusht_env({}, None).spec.max_episode_steps == 300
    env = pusht.make_pusht_env({"max_episode_steps": 4}, None)
    env.reset(seed=0)
    truncated = [env.step(np.array([20.0, 20.0]))[3] for _ in range(4)]
    assert truncated == [False, False, False, True]


def test_pusht_rejects_unknown_kwargs_and_values():
    with pytest.raises(ConfigError, match="obs_typ"):
        pusht.make_pusht_env({"obs_typ": "state"}, None)
    with pytest.raises(ConfigError, match="choose one of: state, keypoints, pixels"):
        pusht.make_pusht_env({"obs_type": "rgb"}, None)


@pytest.fixture(scope="module")
def lift():
    env = make_robomimic_env({"task": "lift", "max_episode_steps": 3}, "rgb_array")
    yield env
    env.close()


def test_robomimic_spaces_and_seeding(lift):
    assert lift.observation_space.shape == (19,) and lift.action_space == gym.spaces.Box(-1, 1, (7,), np.float32)
    obs, info = lift.reset(seed=3)
    assert info == {"is_success": False} and obs.dtype == np.float32
    np.testing.assert_array_equal(obs, lift.reset(seed=3)[0])
    assert not np.allclose(obs, lift.reset(seed=4)[0])
    parts = lift.obs_dict()
    assert tuple(parts) == OBS_KEYS
    np.testing.assert_array_equal(np.concatenate(list(parts.values())), lift.reset(seed=4)[0])


def test_robomimic_truncates_at_horizon_and_replays_states(lift):
    obs0, _ = lift.reset(seed=5)
    state0 = lift.sim_state()
    flags = [lift.step(np.zeros(7))[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]
    np.testing.assert_allclose(lift.reset_to_state(state0), obs0, atol=1e-5)
    args = lift.env_args()
    assert args["env_name"] == "Lift" and args["type"] == 1
    assert args["env_kwargs"]["control_freq"] == 20 and args["env_kwargs"]["robots"] == ["Panda"]
    assert args["env_kwargs"]["controller_configs"]["body_parts"]["right"]["type"] == "OSC_POSE"


def test_robomimic_renders_offscreen(lift):
    lift.reset(seed=0)
    frame = lift.render()
    assert frame.shape == (256, 256, 3) and frame.dtype == np.uint8 and frame.std() > 10


@pytest.mark.parametrize("task, dim", [("can", 23), ("square", 23)])
def test_robomimic_other_tasks(task, dim):
    env = make_robomimic_env({"task": task}, None)
    assert env.observation_space.shape == (dim,) and env.horizon == {"can": 300, "square": 400}[task]
    assert env.render() is None
    env.close()


def test_robomimic_rejects_unknown_task():
    with pytest.raises(ConfigError, match="choose one of: lift, can, square"):
        make_robomimic_env({"task": "transport"}, None)
