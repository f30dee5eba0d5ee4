"""Evaluation noise: zero is the deterministic mode; random noise is seeded, so numbers reproduce."""

import torch

from robopol.config import load_run_config
from robopol.evaluate import eval_noise, evaluate
from robopol.runner import Runner

FAST = ["task=reach", "policy=fpo", "train.rollout_steps=16", "sim.num_envs=2", "train.eval_every=0",
        "train.progress=false", "train.video=false"]


def test_eval_noise_modes():
    cfg = load_run_config(FAST)
    assert torch.equal(eval_noise(cfg.policy, 0)((3, 4)), torch.zeros(3, 4))
    random = load_run_config(FAST + ["policy.eval_noise=random"]).policy
    first, again, other = eval_noise(random, 7)((3, 4)), eval_noise(random, 7)((3, 4)), eval_noise(random, 8)((3, 4))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.std() > 0.3


def test_random_noise_evaluation_reproduces_and_differs_from_the_deterministic_mode(tmp_path):
    cfg = load_run_config(FAST + ["policy.eval_noise=random"])
    policy = Runner(cfg, tmp_path).policy()  # an untrained flow: its samples depend on the noise
    random_a = evaluate(policy, cfg.task, cfg.policy, 4)
    random_b = evaluate(policy, cfg.task, cfg.policy, 4)
    zero = evaluate(policy, cfg.task, load_run_config(FAST).policy, 4)
    assert random_a == random_b
    assert random_a["return_mean"] != zero["return_mean"]
