"""train.autocast=bf16: updates see their own optimiser steps (no stale bf16 weight copies)."""

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
