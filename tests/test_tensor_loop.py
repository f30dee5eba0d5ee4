"""Tensor envs through the on-policy loop: the rollout's GAE inputs on hand-made cases (a truncated
episode bootstrapped from V(final observation), a terminated one not) for the torch PointMass and the
Isaac Gym adapter (on the VecTask stand-in of test_tensor_env), no numpy on the tensor path, PPO
training point_mass from the CLI, chunking refused on tensor tasks, and the off-policy loop storing
final observations from a tensor env."""

import csv

import pytest
import torch
from test_tensor_env import CounterTask

from robopol.cli import main
from robopol.config import load_run_config
from robopol.loops.env_batch import EnvStep
from robopol.runner import Runner
from robopol.sim import factory
from robopol.sim.isaacgym_adapter import IsaacGymVecEnv

GAMMA = 0.9


def value(obs_n: torch.Tensor) -> torch.Tensor:
    """A critic with a closed form: V(o) = 10 o_0 + o_1 of the latest observation."""
    return 10 * obs_n[:, -1, 0] + obs_n[:, -1, 1]


def no_numpy(self):
    raise AssertionError("the tensor path converted a tensor to numpy")


def collect(tmp_path, task: list[str], num_envs: int, steps: int, actions: torch.Tensor | None = None, monkeypatch=None):
    """One on-policy rollout with the critic above (normalisers off, so V sees raw observations), with
    Tensor.numpy forbidden during it if given monkeypatch; returns the loop, the EnvSteps the envs
    handed it and the observations each step started from."""
    cfg = load_run_config([*task, "policy=ppo", f"sim.num_envs={num_envs}", f"train.rollout_steps={steps}",
                           "sim.normalize_obs=false", "sim.normalize_reward=false", f"policy.algo.gamma={GAMMA}",
                           "train.video=false", "train.progress=false", "policy.actor.hidden=[8]"])
    runner = Runner(cfg, tmp_path)
    loop = runner.loop
    loop.algo.value = value
    if actions is not None:
        loop.algo.act = lambda obs_n: (actions, {"log_prob": torch.zeros(num_envs)})
    seen: list[EnvStep] = []
    step = loop.envs.step
    loop.envs.step = lambda a: seen.append(step(a)) or seen[-1]
    starts = [loop.obs]
    if monkeypatch:
        monkeypatch.setattr(torch.Tensor, "numpy", no_numpy)
    loop.collect()
    if monkeypatch:
        monkeypatch.undo()
    return loop, seen, torch.stack(starts + [s.obs for s in seen[:-1]])


def test_point_mass_rollout_bootstraps_time_outs_and_keeps_tensors(tmp_path, monkeypatch):
    loop, seen, obs = collect(tmp_path, ["task=point_mass", "task.max_episode_steps=3"], 4, 7, monkeypatch=monkeypatch)
    buf = loop.buffer
    truncated = torch.stack([s.truncated for s in seen])
    terminated = torch.stack([s.terminated for s in seen])
    assert truncated[2].all() and truncated[5].all() and truncated.sum() == 8 and not terminated.any()
    reward = torch.stack([s.reward for s in seen]).float()
    final_v = torch.stack([value(s.final_obs) for s in seen])
    torch.testing.assert_close(buf.rewards, reward + GAMMA * final_v * truncated)  # bootstrapped where truncated only
    assert torch.equal(buf.episode_ends, truncated)
    assert isinstance(seen[0].obs, torch.Tensor) and seen[0].obs.shape == (4, 1, 6)
    # the final observation is the episode's last, not the reset one handed on as obs
    assert not torch.allclose(seen[2].final_obs, seen[2].obs)
    torch.testing.assert_close(buf.values, torch.stack([value(o) for o in obs]))
    # GAE at a time-out step: A = r + gamma V(final obs) - V(s), nothing from the next episode
    torch.testing.assert_close(buf.advantages[5], reward[5] + GAMMA * final_v[5] - value(obs[5]))
    assert loop.runner.env_steps == 4 * 7


def test_isaac_gym_adapter_rollout_bootstraps_time_outs_but_not_terminal_states(tmp_path, monkeypatch):
    monkeypatch.setitem(factory.TENSOR_ENVS, "CounterTask", lambda n, length, device: IsaacGymVecEnv(CounterTask(n, length)))
    actions = torch.tensor([[[1.0]], [[0.0]]])  # env 0 passes position 3 at its third step; env 1 waits for the limit
    loop, seen, obs = collect(tmp_path, ["task=point_mass", "task.env_id=CounterTask", "task.max_episode_steps=6"], 2, 5,
                              actions)
    buf = loop.buffer
    assert [s.terminated.tolist() for s in seen] == [[False, False]] * 2 + [[True, False]] + [[False, False]] * 2
    assert [s.truncated.tolist() for s in seen] == [[False, False]] * 3 + [[False, True], [False, False]]
    r = torch.stack([s.reward for s in seen]).float()  # rew_buf = position
    v = torch.stack([value(o) for o in obs])
    # the terminal step: A = r - V(s); no bootstrap, and the episode after does not leak in
    assert buf.rewards[2, 0] == r[2, 0]
    torch.testing.assert_close(buf.advantages[2, 0], r[2, 0] - v[2, 0])
    # the time-out: reward + gamma V(final obs = (position, progress 5)), then A = that - V(s)
    boot = r[3, 1] + GAMMA * (10 * seen[3].final_obs[1, 0, 0] + 5.0)
    torch.testing.assert_close(buf.rewards[3, 1], boot)
    torch.testing.assert_close(buf.advantages[3, 1], boot - v[3, 1])
    assert torch.equal(buf.episode_ends, torch.stack([s.terminated | s.truncated for s in seen]))


def test_ppo_trains_point_mass_from_the_cli(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "task=point_mass", "task.max_episode_steps=20", "policy=ppo", "sim.num_envs=16", "train.rollout_steps=32",
                 "train.total_env_steps=1536", "train.eval_episodes=1", "train.video=false", "train.progress=false",
                 f"train.run_dir={run}"]) == 0
    with open(run / "train.csv") as train, open(run / "eval.csv") as evaluation:
        rows, evals = list(csv.DictReader(train)), list(csv.DictReader(evaluation))
    assert [int(r["env_steps"]) for r in rows] == [512, 1024, 1536]
    assert all(float(r["approx_kl"]) > 0 for r in rows)
    assert all(-20 * 2 * 2**0.5 <= float(r["episode_return"]) < 0 for r in rows)  # 20 steps at distance <= 2 sqrt 2
    assert len(evals) == 1 and float(evals[0]["length_mean"]) == 20


@pytest.mark.parametrize("override", ["policy.n_obs_steps=2", "policy.n_action_steps=2"])
def test_chunking_on_a_tensor_task_is_one_clear_error(override, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "task=point_mass", "policy=dppo", "policy.horizon=4", override]) == 2
    err = capsys.readouterr().err.strip()
    key, number = override.split("=")
    assert err == f"error: {key}: {number}; tensor tasks (task.backend=tensor) observe and act one step at a time: allowed 1"
    assert not (tmp_path / "runs").exists()


def test_off_policy_loop_stores_final_observations_from_a_tensor_env(tmp_path, monkeypatch):
    cfg = load_run_config(["task=point_mass", "task.max_episode_steps=3", "policy=sac", "sim.num_envs=4",
                           "policy.actor.hidden=[8]", "policy.algo.learning_starts=1000", "policy.algo.train_freq=5",
                           "train.video=false",
                           "train.progress=false"])
    loop = Runner(cfg, tmp_path).loop
    seen: list[EnvStep] = []
    step = loop.envs.step
    loop.envs.step = lambda a: seen.append(step(a)) or seen[-1]
    monkeypatch.setattr(torch.Tensor, "numpy", no_numpy)
    monkeypatch.setattr(loop, "reward_scaler", None)  # its statistics live in numpy (views of CPU tensors)
    loop.collect()
    monkeypatch.undo()
    store = loop.store.columns
    n = len(seen)
    assert seen[2].truncated.all() and not torch.equal(seen[2].obs, seen[2].final_obs)
    torch.testing.assert_close(store["next_obs"][:n], torch.stack([s.final_obs for s in seen]))
    torch.testing.assert_close(store["obs"][1:n], torch.stack([s.obs for s in seen[:-1]]))
    assert torch.equal(store["ended"][:n], torch.stack([s.truncated for s in seen]))
