"""Checkpoints round-trip exactly, are written atomically, and a SIGKILLed run resumes where it stopped."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from robopol import checkpoint as ckpt_mod
from robopol.checkpoint import load_checkpoint, load_policy
from robopol.config import load_run_config
from robopol.errors import CheckpointError, ConfigError
from robopol.runner import Runner, resume

FAST = ["task=reach", "train.rollout_steps=16", "sim.num_envs=4", "train.eval_every=0", "train.eval_episodes=2",
        "train.progress=false", "train.video=false", "train.checkpoint_every=1"]


@pytest.mark.parametrize("policy", ["ppo", "fpo", "dppo"])
def test_checkpoint_round_trip_reproduces_the_policy(policy, tmp_path):
    cfg = load_run_config(FAST + [f"policy={policy}", "train.total_env_steps=128"])
    trainer = Runner(cfg, tmp_path)
    trainer.run()
    original = trainer.policy()
    loaded = load_policy(tmp_path)
    obs = torch.randn(5, 1, 4)
    noise = torch.randn(original.noise_shape(5))
    with torch.no_grad():
        torch.testing.assert_close(loaded(obs, noise), original(obs, noise))
    torch.testing.assert_close(loaded.normalizer.obs_mean, trainer.normalizer.obs_mean)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.env_steps == trainer.env_steps and ckpt.config == cfg
    state = ckpt.trainer_state()
    optimizer = trainer.algo.optimizers()["actor_critic"].state_dict()
    key = next(iter(optimizer["state"]))  # DPPO's critic warm-up leaves the actor's entries empty
    torch.testing.assert_close(state["optimizers"]["actor_critic"]["state"][key]["exp_avg"], optimizer["state"][key]["exp_avg"])


def test_a_crash_while_saving_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    cfg = load_run_config(FAST + ["policy=ppo", "train.total_env_steps=64"])
    trainer = Runner(cfg, tmp_path)
    trainer.run()
    before = load_checkpoint(tmp_path).path

    def dying_save(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    trainer.env_steps += 64
    trainer.progress += 64
    monkeypatch.setattr(ckpt_mod, "save_file", dying_save)
    with pytest.raises(KeyboardInterrupt):
        trainer.save()
    assert load_checkpoint(tmp_path).path == before
    monkeypatch.undo()
    assert trainer.save().name == f"step_{trainer.env_steps:012d}"
    assert not list((tmp_path / "checkpoints").glob(".*"))  # the half-written folder was cleaned up


def test_missing_and_dangling_checkpoints_raise_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "LATEST").write_text("step_000000000099")
    with pytest.raises(CheckpointError, match="step_000000000099, which is missing"):
        load_checkpoint(tmp_path)


def test_resume_after_sigkill_continues_step_count_optimiser_and_rng(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "robopol.cli", "train", *FAST, "policy=ppo", "train.total_env_steps=6000",
           f"train.run_dir={run}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    latest = run / "checkpoints" / "LATEST"
    while time.time() < deadline and not (latest.exists() and int(latest.read_text()[5:]) >= 1000):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # lands at an arbitrary point, possibly mid-checkpoint
    proc.wait()
    killed = load_checkpoint(run)
    assert 0 < killed.env_steps < 6000
    state = killed.trainer_state()

    cfg = killed.config
    trainer = Runner(cfg, run, resume=killed)
    assert trainer.env_steps == killed.env_steps
    assert torch.equal(torch.get_rng_state(), state["rng"]["torch"])
    adam = trainer.algo.optimizers()["actor_critic"].state_dict()["state"][0]["step"]
    assert adam == state["optimizers"]["actor_critic"]["state"][0]["step"] and adam > 0
    trainer.loop.close()

    _, metrics = resume(run)
    final = load_checkpoint(run)
    assert final.env_steps >= 6000 and "return_mean" in metrics
    steps = [int(r["env_steps"]) for r in csv.DictReader(open(run / "train.csv"))]
    assert steps == sorted(set(steps)), "resumed log must continue, not repeat, the step count"


def test_resume_extends_a_finished_run_to_a_larger_budget(tmp_path):
    cfg = load_run_config(FAST + ["policy=ppo", "train.total_env_steps=128"])
    Runner(cfg, tmp_path).run()
    done = load_checkpoint(tmp_path).env_steps
    with pytest.raises(ConfigError, match=f"train.total_env_steps: 64 is not beyond the {done} env steps"):
        resume(tmp_path, total_env_steps=64)
    resume(tmp_path, total_env_steps=done + 128)
    extended = load_checkpoint(tmp_path)
    assert extended.env_steps >= done + 128 and extended.config.train.total_env_steps == done + 128
    steps = [int(r["env_steps"]) for r in csv.DictReader(open(tmp_path / "train.csv"))]
    assert steps == sorted(set(steps)) and steps[-1] == extended.env_steps


def test_eval_command_writes_the_protocol_result_and_a_rollout_video(tmp_path):
    from robopol.cli import main
    from robopol.evaluate import evaluate
    from robopol.sim.factory import EVAL_SEED_BASE

    cfg = load_run_config(FAST + ["policy=ppo", "train.total_env_steps=128"])
    Runner(cfg, tmp_path).run()
    assert main(["eval", str(tmp_path), "--episodes", "3"]) == 0
    result = json.loads((tmp_path / "eval" / "result.json").read_text())
    expected = evaluate(load_policy(tmp_path), cfg.task, cfg.policy, 3)  # same fixed seeds, same numbers
    assert result["episodes"] == 3 and result["seeds"] == [EVAL_SEED_BASE, EVAL_SEED_BASE + 2]
    assert result["return_mean"] == pytest.approx(expected["return_mean"])
    assert result["success_rate"] == expected["success_rate"] and result["env_steps"] == 128
    video = tmp_path / "eval" / "rollout.mp4"
    assert result["video"] == str(video) and video.stat().st_size > 1000
