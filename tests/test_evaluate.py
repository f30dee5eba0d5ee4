"""Evaluation noise: zero is the deterministic mode; random noise is seeded per episode, so numbers
reproduce and do not depend on how many episodes run side by side."""

import pytest
import torch

from robopol.config import load_run_config
from robopol.evaluate import eval_noise, evaluate
from robopol.policies.bundle import PolicyBundle
from robopol.runner import Runner

FAST = ["task=reach", "policy=fpo", "train.rollout_steps=16", "sim.num_envs=2", "train.eval_every=0",
        "train.progress=false", "train.video=false"]


def test_eval_noise_modes():
    cfg = load_run_config(FAST)
    assert torch.equal(eval_noise(cfg.policy, [0, 1, 2])([0, 2], (2, 3, 4)), torch.zeros(2, 3, 4))
    random = load_run_config(FAST + ["policy.eval_noise=random"]).policy
    both, again = eval_noise(random, [7, 8])([0, 1], (2, 3, 4)), eval_noise(random, [7, 8])([0, 1], (2, 3, 4))
    assert torch.equal(both, again) and not torch.equal(both[0], both[1])
    assert torch.equal(both[1:], eval_noise(random, [7, 8])([1], (1, 3, 4)))  # episode 1 alone: the same rows
    assert torch.equal(both[:1], eval_noise(random, [7])([0], (1, 3, 4)))
    draw = eval_noise(random, [7, 8])
    first, second = draw([0, 1], (2, 3, 4)), draw([1], (1, 3, 4))
    assert torch.equal(first, both) and not torch.equal(second, both[1:])  # each call draws on
    assert both.std() > 0.3


def test_random_noise_evaluation_reproduces_and_differs_from_the_deterministic_mode(tmp_path):
    cfg = load_run_config(FAST + ["policy.eval_noise=random"])
    policy = Runner(cfg, tmp_path).policy()  # an untrained flow: its samples depend on the noise
    random_a = evaluate(policy, cfg.task, cfg.policy, 4)
    random_b = evaluate(policy, cfg.task, cfg.policy, 4)
    zero = evaluate(policy, cfg.task, load_run_config(FAST).policy, 4)
    assert random_a == random_b
    assert random_a["return_mean"] != zero["return_mean"]


class OneEpisodeAtATime:
    """The policy applied to each episode's row alone: BLAS rounds a row's last bit differently by batch
    size, and this takes that out, so what remains is evaluate's own bookkeeping of seeds and noise."""

    def __init__(self, policy: PolicyBundle) -> None:
        self.policy, self.noise_shape, self.n_action_steps = policy, policy.noise_shape, policy.n_action_steps

    def __call__(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.policy(o[None], z[None]) for o, z in zip(obs, noise)])


@pytest.mark.parametrize("noise", ["zero", "random"])
def test_blocks_of_episodes_give_the_numbers_of_one_batch(tmp_path, noise):
    cfg = load_run_config(FAST + [f"policy.eval_noise={noise}"])
    policy = Runner(cfg, tmp_path).policy()  # untrained: its actions depend on the noise and the seed
    rowwise = OneEpisodeAtATime(policy)
    one_batch = evaluate(rowwise, cfg.task, cfg.policy, 7, max_parallel=7)  # type: ignore[arg-type]
    assert evaluate(rowwise, cfg.task, cfg.policy, 7, max_parallel=3) == one_batch  # type: ignore[arg-type]  # 3 + 3 + 1
    assert one_batch["return_std"] > 0  # the seven episodes differ, so a mix-up of seeds or noise would show
    batched = evaluate(policy, cfg.task, cfg.policy, 7, max_parallel=3)  # the policy as evaluate runs it
    assert batched == pytest.approx(one_batch, rel=1e-6)
