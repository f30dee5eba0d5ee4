"""policy.algo.compile: the on-policy minibatch loss runs through torch.compile (dynamo capture and
AOT autograd; the aot_eager backend here, so the test needs no C++ compile) and its update matches the
eager one, including through critic warm-up where the policy terms are absent."""

import functools

import pytest
import torch

from robopol.config import load_run_config
from robopol.runner import Runner


def first_updates(tmp_path, policy: str, compile: bool) -> list[dict[str, float]]:
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    cfg = load_run_config(["task=point_mass", f"policy={policy}", "sim.num_envs=8", "train.rollout_steps=16",
                           "policy.actor.hidden=[16]", "policy.critic.hidden=[16]", "policy.algo.update_epochs=2",
                           "policy.algo.minibatch_size=32", "policy.algo.critic_warmup_iters=1",
                           f"policy.algo.compile={str(compile).lower()}", "train.video=false", "train.progress=false"])
    runner = Runner(cfg, tmp_path / str(compile))
    return [runner.loop.iterate(i / 4)[1] for i in range(2)]


@pytest.mark.parametrize("policy", ["ppo", "fpo", "dppo"])
def test_compiled_minibatch_loss_updates_as_eager_does(policy, tmp_path, monkeypatch):
    eager = first_updates(tmp_path, policy, False)
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    compiled = first_updates(tmp_path, policy, True)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # warm-up and actor graphs were captured
    assert "approx_kl" not in eager[0] and "approx_kl" in eager[1]  # the critic warmed up first
    for e, c in zip(eager, compiled):
        assert e.keys() == c.keys()
        for key in e:
            assert c[key] == pytest.approx(e[key], rel=1e-4, abs=1e-6), key
