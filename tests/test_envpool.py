"""The EnvPool backend against Gymnasium on the same ids, and a DeepMind Control task through the CLI.

What differs (robopol/sim/envpool_env.py says why): EnvPool's random streams, so a seed gives another
initial state than Gymnasium's and single trajectories differ while episode statistics agree; no
rendering; info holds only robopol's keys. Everything else here is asserted equal."""

import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from robopol.config import PolicyConfig, TaskConfig
from robopol.errors import ConfigError
from robopol.sim.envpool_env import EnvPoolEnv
from robopol.sim.factory import make_base_env, make_vec_env

IDS = ["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5"]


def open_loop(t: int, act_dim: int) -> np.ndarray:
    """A fixed policy that ignores observations: each joint follows its own sinusoid."""
    return np.sin(0.1 * t * (1 + np.arange(act_dim)) + np.arange(act_dim)).astype(np.float32)


def first_episodes(envs: gym.vector.VectorEnv, seed: int, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return, length and terminated flag of each env's first episode under the open-loop policy."""
    n, act_dim = envs.num_envs, envs.single_action_space.shape[-1]
    envs.reset(seed=seed)
    returns, lengths, terminated = np.zeros(n), np.zeros(n, dtype=int), np.zeros(n, dtype=bool)
    running = np.ones(n, dtype=bool)
    for t in range(limit):
        action = np.broadcast_to(open_loop(t, act_dim), (n, 1, act_dim))
        _, reward, term, trunc, _ = envs.step(action)
        returns += np.where(running, reward, 0.0)
        lengths += running
        terminated |= running & term
        running &= ~(term | trunc)
        if not running.any():
            break
    return returns, lengths, terminated


def agree(a: np.ndarray, b: np.ndarray) -> bool:
    """Means within four standard errors of their difference (plus a hair for constant samples)."""
    se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    return abs(a.mean() - b.mean()) <= 4 * se + 1e-6


@pytest.mark.parametrize("env_id", IDS)
def test_spaces_match_gymnasium(env_id):
    ours = make_base_env(TaskConfig(backend="envpool", env_id=env_id))
    theirs = gym.make(env_id)
    assert ours.observation_space == theirs.observation_space
    assert ours.action_space == theirs.action_space
    obs, _ = ours.reset(seed=0)
    assert obs.shape == theirs.reset(seed=0)[0].shape and obs.dtype == np.float64


@pytest.mark.parametrize("env_id", IDS)
def test_reward_and_termination_statistics_of_a_fixed_policy_match_gymnasium(env_id):
    task = TaskConfig(env_id=env_id, max_episode_steps=120)
    policy = PolicyConfig()
    gym_stats = first_episodes(make_vec_env(task, policy, 24), 0, 130)
    pool_stats = first_episodes(make_vec_env(TaskConfig(backend="envpool", env_id=env_id, max_episode_steps=120),
                                             policy, 24), 0, 130)
    for ours, theirs in zip(pool_stats, gym_stats):
        assert agree(ours.astype(float), theirs.astype(float)), (env_id, ours.mean(), theirs.mean())
    if env_id == "HalfCheetah-v5":  # never terminates: every episode is cut by the time limit
        assert (pool_stats[1] == 120).all() and not pool_stats[2].any()
    else:  # falls long before the limit under this policy
        assert pool_stats[2].all() and gym_stats[2].all()


def test_a_seed_reproduces_an_episode_but_not_gymnasiums():
    a, b = EnvPoolEnv("Hopper-v5"), EnvPoolEnv("Hopper-v5")
    first = a.reset(seed=3)[0]
    np.testing.assert_array_equal(first, b.reset(seed=3)[0])
    assert not np.allclose(first, a.reset(seed=4)[0])
    assert not np.allclose(first, gym.make("Hopper-v5").reset(seed=3)[0])


def test_vector_env_steps_each_env_as_its_single_env_through_chunks_and_resets():
    """Env i of the batched pool (seed 10 + i) and a one-env pool seeded 10 + i see the same
    observations, rewards, flags and final observations, across early-stopped chunks and resets."""
    task, policy = TaskConfig(backend="envpool", env_id="Hopper-v5", max_episode_steps=25), PolicyConfig(
        n_obs_steps=2, horizon=3, n_action_steps=3)
    vec = make_vec_env(task, policy, 3)
    singles = [make_base_env(task) for _ in range(3)]
    obs, _ = vec.reset(seed=10)
    for i, env in enumerate(singles):
        np.testing.assert_allclose(obs[i, -1], env.reset(seed=10 + i)[0], rtol=1e-6)
    history = [[o[-1]] * 2 for o in obs]
    rng, ends = np.random.default_rng(0), 0
    for _ in range(30):
        actions = rng.uniform(-1, 1, (3, 3, 3)).astype(np.float32)
        obs, reward, terminated, truncated, info = vec.step(actions)
        for i, env in enumerate(singles):
            total, k = 0.0, 0
            for k, action in enumerate(actions[i], start=1):
                o, r, te, tr, _ = env.step(action)
                total += r
                history[i] = [history[i][-1], o]
                if te or tr:
                    break
            assert (terminated[i], truncated[i]) == (te, tr)
            assert reward[i] == pytest.approx(total)
            if te or tr:
                ends += 1
                np.testing.assert_allclose(info["final_obs"][i], np.stack(history[i]), rtol=1e-6)
                assert info["final_info"]["chunk_steps"][i] == k
                history[i] = [env.reset()[0]] * 2
            else:
                assert info["chunk_steps"][i] == k
            np.testing.assert_allclose(obs[i], np.stack(history[i]), rtol=1e-6)
    assert ends >= 3


def test_final_observations_are_the_last_state_and_info_keys_match_gymnasium():
    """Both backends: a terminated Hopper's final observation is unhealthy (height < 0.7 or
    |angle| > 0.2) and the observation returned for it is a fresh, healthy start."""
    policy = PolicyConfig(horizon=2, n_action_steps=2)
    keys = {}
    for backend in ("gym", "envpool"):
        envs = make_vec_env(TaskConfig(backend=backend, env_id="Hopper-v5"), policy, 4)
        envs.reset(seed=0)
        for t in range(200):
            obs, _, terminated, _, info = envs.step(np.broadcast_to(open_loop(t, 3), (4, 2, 3)))
            if terminated.any():
                break
        i = int(np.flatnonzero(terminated)[0])
        height, angle = info["final_obs"][i][-1][:2]
        assert height < 0.7 or abs(angle) > 0.2, backend
        assert obs[i, -1, 0] > 1.2 and abs(obs[i, -1, 1]) < 0.01, backend
        assert info["final_obs"][i].shape == obs[i].shape and info["final_info"]["_chunk_steps"][i]
        keys[backend] = ({k for k in info if k.lstrip("_") in ("chunk_steps", "is_success", "final_obs", "final_info")},
                         set(info["final_info"]))
    assert keys["envpool"] == keys["gym"]


def test_envpool_task_mistakes_are_config_errors():
    with pytest.raises(ConfigError, match="EnvPool has no env 'Hoper-v5'"):
        make_base_env(TaskConfig(backend="envpool", env_id="Hoper-v5"))
    with pytest.raises(ConfigError, match="'frameskip' is not an EnvPool option of CheetahRun-v1; allowed: .*frame_skip"):
        make_base_env(TaskConfig(backend="envpool", env_id="CheetahRun-v1", env_kwargs={"frameskip": 2}))
    with pytest.raises(ConfigError, match="robopol needs Box actions; this EnvPool env has Discrete"):
        make_base_env(TaskConfig(backend="envpool", env_id="CartPole-v1"))


@pytest.mark.parametrize("task, dim, act", [("hopper_stand", 15, 4), ("cheetah_run", 17, 6),
                                            ("walker_walk", 24, 6), ("finger_spin", 12, 2)])
def test_dmc_tasks_run_1000_step_truncated_episodes(task, dim, act):
    from robopol.config import load_run_config

    cfg = load_run_config([f"task={task}"])
    envs = make_vec_env(cfg.task, PolicyConfig(horizon=4, n_action_steps=4), 2)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (2, 1, dim) and envs.single_action_space.shape == (4, act)
    returns = np.zeros(2)
    for step in range(250):
        _, reward, terminated, truncated, info = envs.step(np.zeros((2, 4, act), np.float32))
        returns += reward
        assert not terminated.any() and (0 <= reward).all() and (reward <= 4).all()
        assert truncated.all() == (step == 249)
    assert info["final_info"]["chunk_steps"].tolist() == [4, 4]


def test_a_dmc_task_trains_a_few_ppo_updates_through_the_cli(tmp_path):
    run = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-m", "robopol.cli", "train", "task=cheetah_run", "policy=ppo", "task.max_episode_steps=200",
         "train.total_env_steps=4096", "train.rollout_steps=128", "sim.num_envs=8", "train.eval_episodes=2",
         "train.video=false", "train.progress=false", f"train.run_dir={run}"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["length_mean"] == 200 and 0 <= result["return_mean"] <= 200
    rows = (run / "train.csv").read_text().splitlines()
    header, values = rows[0].split(","), [dict(zip(rows[0].split(","), r.split(","))) for r in rows[1:]]
    assert [int(v["env_steps"]) for v in values] == [1024, 2048, 3072, 4096] and "policy_loss" in header
    assert all(np.isfinite(float(v["value_loss"])) for v in values)
    assert any(v.get("episode_return") for v in values[1:])  # 200-step episodes ended and were counted


def test_the_training_loops_envpool_batch_hands_over_what_the_gymnasium_api_does():
    """EnvPoolBatch reads step_chunks' arrays, GymnasiumBatch the same vector through Gymnasium's step and
    info dicts: the same observations, rewards, flags, final observations and env-step counts, across
    observation history, early-stopped chunks and resets."""
    import torch

    from robopol.config import load_run_config
    from robopol.loops.env_batch import EnvPoolBatch, GymnasiumBatch, make_env_batch

    cfg = load_run_config(["task=hopper_300k_envpool", "policy=fpo", "task.max_episode_steps=25", "sim.num_envs=3",
                           "policy.n_obs_steps=2", "policy.horizon=3", "policy.n_action_steps=3"])
    direct, gymnasium = make_env_batch(cfg), GymnasiumBatch(cfg)
    assert isinstance(direct, EnvPoolBatch)
    torch.testing.assert_close(direct.reset(seed=5), gymnasium.reset(seed=5), rtol=0, atol=0)
    rng, ends = np.random.default_rng(0), 0
    for _ in range(40):
        actions = torch.from_numpy(rng.uniform(-1, 1, (3, 3, 3)).astype(np.float32))
        a, b = direct.step(actions), gymnasium.step(actions)
        for field in ("obs", "reward", "terminated", "truncated", "final_obs", "success"):
            torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=0, atol=0, msg=field)
        assert a.env_steps == b.env_steps
        ends += int((a.terminated | a.truncated).sum())
    assert ends >= 3
