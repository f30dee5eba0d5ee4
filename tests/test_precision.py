"""train.autocast=bf16: updates see their own optimiser steps (no stale bf16 weight copies), and the
Q ensemble's output layer stays in float32."""

import torch

from robopol.config import load_run_config
from robopol.runner import Runner

FAST = ["task=reach", "policy=ppo", "sim.num_envs=2", "train.eval_every=0", "train.progress=false", "train.video=false"]


def test_bf16_precision_forwards_use_weights_updated_inside_the_context(tmp_path):
    runner = Runner(load_run_config(FAST + ["train.autocast=bf16"]), tmp_path)
    layer = torch.nn.Linear(4, 4)
    x = torch.randn(3, 4)
    with runner.precision():
        before = layer(x)
        assert before.dtype == torch.bfloat16
        with torch.no_grad():
            layer.weight.add_(1.0)  # what an optimiser step does between two minibatches
        after = layer(x)
    expected = torch.nn.functional.linear(x.bfloat16(), layer.weight.detach().bfloat16(), layer.bias.detach().bfloat16())
    torch.testing.assert_close(after.detach(), expected)
    assert not torch.allclose(after, before)


def test_fp32_precision_is_plain_fp32(tmp_path):
    runner = Runner(load_run_config(FAST), tmp_path)
    with runner.precision():
        assert torch.nn.Linear(4, 4)(torch.randn(3, 4)).dtype == torch.float32


def test_q_values_of_several_hundred_keep_float32_resolution_under_bf16(tmp_path):
    """Q near 600: bf16 outputs would move in steps of 4 (errors up to 2); float32 outputs over bf16
    hidden layers stay within a few hundredths of the all-float32 values."""
    from robopol.critics import QEnsemble

    torch.manual_seed(0)
    q = QEnsemble(obs_dim=11, n_obs_steps=1, act_dim=3, horizon=1, heads=2)
    with torch.no_grad():
        q.net[-1].bias.fill_(600.0)
    obs, actions = torch.randn(256, 1, 11), torch.rand(256, 1, 3) * 2 - 1
    exact = q(obs, actions)
    with Runner(load_run_config(FAST + ["train.autocast=bf16"]), tmp_path).precision():  # training's own context
        mixed = q(obs, actions)
        assert q.net[0](torch.randn(2, 2, 14)).dtype == torch.bfloat16  # the hidden products do run in bf16
    assert mixed.dtype == torch.float32
    assert (mixed - exact).abs().max() < 0.25

