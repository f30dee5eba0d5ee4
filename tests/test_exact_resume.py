"""A run killed and resumed from its last checkpoint writes the same train.csv as the run that was
never interrupted: envs, episodes in flight, replay, optimisers, normalisers and RNG all continue."""

import csv

import pytest

from robopol.config import load_run_config
from robopol.runner import Runner, resume

TIMINGS = {"steps_per_second", "wall_time", "decoder_seconds"}


def _rows(run):
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in csv.DictReader(open(run / "train.csv"))]


@pytest.mark.parametrize("task,policy,extra", [
    ("hopper", "ppo", ["sim.num_envs=2", "train.rollout_steps=64", "train.total_env_steps=640"]),
    ("hopper", "sac", ["train.rollout_steps=100", "train.total_env_steps=600", "policy.algo.learning_starts=150",
                       "policy.algo.batch_size=32", "policy.actor.hidden=[32,32]", "policy.critic.hidden=[32,32]"]),
    ("reach", "fpo", ["sim.num_envs=2", "train.rollout_steps=40", "train.total_env_steps=400"]),
    ("reach", "ogpo_finetune", ["sim.num_envs=2", "train.rollout_steps=10", "train.total_env_steps=480",
                                "policy.algo.learning_starts=40", "policy.algo.batch_size=16", "policy.algo.group_states=4",
                                "policy.algo.group_size=4", "policy.algo.q_heads=3", "policy.actor.hidden=[16,16]",
                                "policy.critic.hidden=[16]"]),
    # stage switches (rollout, decoder training, fresh latent policy) in the second iteration, before the kill,
    # and in the fourth, after the resume
    ("reach", "gorl", ["sim.num_envs=2", "train.rollout_steps=40", "train.total_env_steps=560",
                       "policy.algo.stage_env_steps=[160,240]", "policy.algo.decoder_steps=20", "policy.algo.decoder_batch=64",
                       "policy.algo.decoder_rollouts=1"]),
])
def test_killed_and_resumed_run_reproduces_the_uninterrupted_train_csv(task, policy, extra, tmp_path, monkeypatch):
    overrides = [f"task={task}", f"policy={policy}", *extra, "train.eval_every=0", "train.eval_episodes=1",
                 "train.video=false", "train.progress=false", "train.checkpoint_every=1", "train.seed=7"]
    Runner(load_run_config(overrides), tmp_path / "whole").run()

    killed = tmp_path / "killed"
    runner = Runner(load_run_config(overrides), killed)
    iterate, calls = type(runner.loop).iterate, []

    def dies_in_the_fourth_iteration(self, progress):
        calls.append(progress)
        if len(calls) == 4:
            raise KeyboardInterrupt("killed")  # after the third iteration's checkpoint
        return iterate(self, progress)

    monkeypatch.setattr(type(runner.loop), "iterate", dies_in_the_fourth_iteration)
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    monkeypatch.undo()
    assert len(_rows(killed)) == 3
    resume(killed)
    assert _rows(killed) == _rows(tmp_path / "whole")
