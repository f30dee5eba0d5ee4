"""The off-policy loop: update-to-data accounting after learning_starts, the true final observation
stored at every episode end, a resume that restores the replay, and SAC learning a tiny task."""

from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pytest
import torch

from robopol.algos.off_policy import OffPolicyAlgorithm, OffPolicyConfig, Replay
from robopol.checkpoint import load_checkpoint, restore_normalizer
from robopol.config import load_run_config
from robopol.data.normalizer import Normalizer
from robopol.data.transitions import TransitionStore
from robopol.demos import write_demonstrations
from robopol.errors import ConfigError, DataError
from robopol.runner import Runner


class CounterEnv(gym.Env):
    """obs = [t, episode]; even episodes terminate at t = 3, odd ones are truncated at t = 5."""

    def __init__(self, render_mode=None) -> None:
        self.observation_space = gym.spaces.Box(-100, 100, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1, 1, (1,), np.float32)
        self.t, self.episode = 0, -1

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.episode = 0, self.episode + 1
        return np.array([0, self.episode], np.float32), {}

    def step(self, action):
        self.t += 1
        even = self.episode % 2 == 0
        obs = np.array([self.t, self.episode], np.float32)
        return obs, 1.0, even and self.t == 3, not even and self.t == 5, {"is_success": even and self.t == 3}


gym.register("robopol-test/Counter-v0", entry_point=CounterEnv)


@dataclass
class RecordingConfig(OffPolicyConfig):
    actor_types: ClassVar[tuple[str, ...]] = ("tanh_gaussian",)
    name: str = "test_recording"


class Recording(OffPolicyAlgorithm):
    """Records the store size and gradient steps of every update call; learns nothing."""

    config_class = RecordingConfig

    def __init__(self, policy, actor) -> None:
        super().__init__(policy, actor)
        self.calls: list[tuple[int, int]] = []

    def update(self, data: Replay, progress: float, gradient_steps: int = 1) -> dict[str, Any]:
        data.sample(4)
        self.calls.append((len(data.store), gradient_steps))
        return {"gradient_steps_in_call": float(gradient_steps)}


def _runner(tmp_path, task="robopol-test/Counter-v0", **algo) -> Runner:
    cfg = load_run_config([f"task={task}", "policy=sac", "sim.num_envs=2", "train.rollout_steps=6", "train.eval_every=0",
                           "train.eval_episodes=1", "train.video=false", "train.progress=false", "train.total_env_steps=48",
                           "train.checkpoint_every=2", "policy.actor.hidden=[8]"])
    cfg.policy.algo = RecordingConfig(**algo)
    return Runner(cfg, tmp_path)


def test_updates_follow_the_update_to_data_ratio_after_learning_starts(tmp_path):
    # blocks of train_freq=2 chunk steps x 2 envs = 4 transitions; utd 0.75 -> 3 gradient steps a block
    runner = _runner(tmp_path, learning_starts=10, train_freq=2, utd_ratio=0.75, batch_size=4)
    runner.run()
    calls = runner.algo.calls
    assert [size for size, _ in calls] == list(range(12, 49, 4))  # the first block ending at >= 10 env steps
    assert all(steps == 3 for _, steps in calls)
    assert runner.loop.gradient_steps == 3 * len(calls) == int(0.75 * (48 - 8))
    # a fractional share is carried over: utd 0.3 of 4 transitions = 1.2 per block
    runner = _runner(tmp_path / "frac", learning_starts=0, train_freq=2, utd_ratio=0.3, batch_size=4)
    runner.run()
    assert runner.loop.gradient_steps == int(0.3 * 48) and sum(s for _, s in runner.algo.calls) == 14


def test_every_episode_end_stores_its_true_final_observation(tmp_path):
    runner = _runner(tmp_path, learning_starts=1000)
    runner.run()
    c, n = runner.loop.store.columns, runner.loop.store.size
    obs, next_obs = c["obs"][:n, :, -1], c["next_obs"][:n, :, -1]  # newest frame of each history
    ended, terminated = c["ended"][:n], c["terminated"][:n]
    assert ended.any() and (ended & ~terminated).any()  # both kinds of ending happened
    torch.testing.assert_close(next_obs[..., 0][~ended], obs[..., 0][~ended] + 1)  # t advances within an episode
    torch.testing.assert_close(next_obs[..., 0][terminated], torch.full_like(next_obs[..., 0][terminated], 3.0))
    truncated = ended & ~terminated
    torch.testing.assert_close(next_obs[..., 0][truncated], torch.full_like(next_obs[..., 0][truncated], 5.0))
    assert (next_obs[..., 1][ended] == obs[..., 1][ended]).all()  # the final obs, not the next episode's first
    assert c["success"][:n][terminated].all() and not c["success"][:n][~terminated].any()


def test_raw_observations_reach_sac_unclipped_in_training_and_from_the_checkpoint(tmp_path):
    """policies/sac.yaml does not normalise (SB3's MuJoCo settings), so nothing may clip either: a clip at
    10 once cut HalfCheetah's joint velocities (up to 25) on 62% of a trained policy's steps."""
    runner = _runner(tmp_path, learning_starts=1000)
    runner.run()
    raw = torch.tensor([[25.0, -40.0], [0.5, 3.0]])
    assert torch.equal(runner.normalizer.normalize_obs(raw), raw)
    assert torch.equal(restore_normalizer(load_checkpoint(tmp_path)).normalize_obs(raw), raw)
    # with normalisation on (every other recipe), the normalised observation is clipped to sim.clip_obs
    cfg = load_run_config(["policy=ppo", "sim.clip_obs=5"])
    normalizer = Normalizer(2, np.array([-1.0]), np.array([1.0]), cfg.sim.obs_clip())
    assert torch.equal(normalizer.normalize_obs(raw)[0], torch.tensor([5.0, -5.0]))


def test_resume_restores_the_replay_and_cuts_the_episodes_in_flight(tmp_path):
    runner = _runner(tmp_path, learning_starts=1000)
    runner.run()
    before = runner.loop.store.state_dict()
    ckpt = load_checkpoint(tmp_path)
    resumed = Runner(ckpt.config, tmp_path, resume=ckpt)
    after = resumed.loop.store
    assert after.size == before["size"] and after.pos == before["pos"]
    last = (after.pos - 1) % after.capacity
    for name, column in before["columns"].items():
        expected = column.clone()
        if name == "ended":
            expected[last] = True  # the envs restart, so the stored episodes end at the checkpoint
        torch.testing.assert_close(after.columns[name][: len(column)], expected)
    assert resumed.loop.gradient_steps == runner.loop.gradient_steps
    resumed.loop.close()


def test_a_resume_whose_optimiser_state_does_not_fit_is_one_error_naming_it(tmp_path, monkeypatch):
    """SAC's temperature once had an Adam of its own: such a checkpoint's 'actor' optimiser has one
    parameter fewer than today's. Simulated here by saving with the actor's optimiser over the actor alone."""
    from robopol.algos.sac import SAC
    from robopol.errors import CheckpointError

    cfg = load_run_config(["task=robopol-test/Counter-v0", "policy=sac", "train.rollout_steps=6", "train.eval_every=0",
                           "train.eval_episodes=1", "train.video=false", "train.progress=false", "train.total_env_steps=24",
                           "policy.actor.hidden=[8]", "policy.critic.hidden=[8]", "policy.algo.learning_starts=12",
                           "policy.algo.batch_size=4"])
    original = SAC.optimizers
    monkeypatch.setattr(SAC, "optimizers", lambda self: {**original(self), "actor": torch.optim.Adam(self.actor.parameters())})
    Runner(cfg, tmp_path).run()
    monkeypatch.setattr(SAC, "optimizers", original)
    ckpt = load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="optimiser 'actor'.*train.pretrained="):
        Runner(ckpt.config, tmp_path, resume=ckpt)


@pytest.mark.slow
def test_sac_raises_return_on_reach(tmp_path):
    cfg = load_run_config(["task=reach", "policy=sac", "train.total_env_steps=2500", "train.rollout_steps=500",
                           "train.eval_every=0", "train.eval_episodes=16", "train.video=false", "train.progress=false",
                           "train.seed=1", "policy.algo.learning_starts=300", "policy.algo.batch_size=64",
                           "policy.actor.hidden=[64,64]", "policy.critic.hidden=[64,64]", "sim.num_envs=2"])
    runner = Runner(cfg, tmp_path)
    before = runner.evaluate()["return_mean"]
    after = runner.run()["return_mean"]
    print(f"sac: evaluation return {before:.1f} -> {after:.1f}")
    assert after > before + 8, f"sac: evaluation return {before:.1f} -> {after:.1f}"


def _store(value: float, rows: int, success: bool) -> TransitionStore:
    store = TransitionStore(rows, 1, (1, 2), (1, 1))
    for t in range(rows):
        last = t == rows - 1
        store.add(torch.full((1, 1, 2), value), torch.zeros(1, 1, 1), torch.ones(1), torch.full((1, 1, 2), value),
                  torch.tensor([last and success]), torch.tensor([last and not success]), torch.tensor([last and success]))
    return store


def test_replay_draws_its_demo_fraction_from_the_demonstrations_and_keeps_successes_online():
    online, demos = _store(0.0, 20, success=True), _store(1.0, 6, success=False)
    replay = Replay(online, Normalizer(2, -np.ones(1), np.ones(1)), None, demos, demo_fraction=0.25)
    batch = replay.sample(8)
    assert batch["obs"].shape == (8, 1, 2)
    assert (batch["obs"][:2] == 1).all() and (batch["obs"][2:] == 0).all()
    assert (replay.sample_successes(8)["obs"] == 0).all()


def test_demos_and_demo_fraction_come_together():
    with pytest.raises(ConfigError, match="policy.algo.demo_fraction: 0.0 with policy.algo.demos='d.hdf5'"):
        load_run_config(["task=reach", "policy=sac", "policy.algo.demos=d.hdf5"])
    with pytest.raises(ConfigError, match="policy.algo.demo_fraction: 0.5 with policy.algo.demos=None"):
        load_run_config(["task=reach", "policy=sac", "policy.algo.demo_fraction=0.5"])


def test_ogpo_on_pusht_mixes_a_demonstration_file_into_its_batches(tmp_path):
    """Two expert PushT episodes become chunk transitions in their own store (terminated where the
    expert succeeded), and OGPO trains with half of each replay batch drawn from them."""
    stats = write_demonstrations("pusht", 2, tmp_path / "d.hdf5")
    cfg = load_run_config(["task=pusht", "policy=ogpo_finetune", "train.video=false", "train.progress=false",
                           "train.eval_every=0", "sim.num_envs=2", "policy.actor.hidden=[16,16]",
                           "policy.critic.hidden=[16]", "policy.algo.q_heads=2", "policy.algo.group_states=4",
                           "policy.algo.group_size=2", "policy.algo.batch_size=8", "policy.algo.bc_batch_size=8",
                           "policy.algo.learning_starts=16", "train.rollout_steps=16", "train.total_env_steps=64",
                           f"policy.algo.demos={tmp_path / 'd.hdf5'}", "policy.algo.demo_fraction=0.5"])
    runner = Runner(cfg, tmp_path / "run")
    demos = runner.loop.replay.demos
    n_action = cfg.policy.n_action_steps
    assert len(demos) == sum(-(-length // n_action) for length in stats["episode_lengths"])
    ends = demos.columns["ended"][: demos.size, 0]
    terminal = demos.columns["terminated"][: demos.size, 0]
    assert int(ends.sum()) == 2 and int(terminal.sum()) == stats["successes"]
    runner.run()
    assert runner.loop.gradient_steps > 0
    with pytest.raises(DataError, match="policy.algo.demos: .*missing.hdf5 does not exist"):
        Runner(load_run_config(["task=pusht", "policy=ogpo_finetune", f"policy.algo.demos={tmp_path / 'missing.hdf5'}",
                                "policy.algo.demo_fraction=0.5"]), tmp_path / "run2")
