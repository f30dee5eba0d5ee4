"""policy.algo.compile: the on-policy minibatch step (loss, torch.func gradient, clip, Adam on flat tensors)
runs through torch.compile (dynamo capture; the aot_eager backend here, so the test needs no C++ compile)
and its updates match the eager ones — metrics, weights and Adam's state — including through critic
warm-up, where the frozen actor's weights and moments must not move. The rollout step (observation
statistics, normalising, acting, valuing) is built ahead of time as one call (robopol.loops.ahead_of_time)
and must see what eager sees."""

import copy

import pytest
import torch
from torch.utils import _pytree as pytree

from robopol.config import load_run_config
from robopol.loops import ahead_of_time
from robopol.runner import Runner


def exported_module(program: torch.export.ExportedProgram):
    """The exported rollout step run by torch.export's own module instead of an AOTInductor package (no
    C++ build): a function of the flat input list, as robopol.loops.ahead_of_time's packages are."""
    module, spec = program.module(), program.call_spec.in_spec
    return lambda flat: list(module(*pytree.tree_unflatten(flat, spec)[0]))


@pytest.fixture
def aot_eager(monkeypatch):
    """torch.compile on the aot_eager backend and the rollout step's exported program unbuilt (no C++
    build), whatever options robopol passes."""
    compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **options: compile(fn, backend="aot_eager"))
    monkeypatch.setattr(ahead_of_time, "build_package", exported_module)


def first_updates(tmp_path, policy: str, compile: bool, unroll: int = 1) -> tuple[list[dict[str, float]], Runner]:
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    cfg = load_run_config(["task=point_mass", f"policy={policy}", "sim.num_envs=8", "train.rollout_steps=16",
                           "policy.actor.hidden=[16]", "policy.critic.hidden=[16]", "policy.algo.update_epochs=2",
                           "policy.algo.minibatch_size=32", "policy.algo.critic_warmup_iters=1",
                           f"policy.algo.compile={str(compile).lower()}", f"policy.algo.compile_unroll={unroll}",
                           "train.video=false", "train.progress=false"])
    runner = Runner(cfg, tmp_path / str(compile))
    return [runner.loop.iterate(i / 4)[1] for i in range(2)], runner


@pytest.mark.parametrize("policy, unroll", [("ppo", 1), ("fpo", 1), ("dppo", 1), ("gorl", 1), ("ppo", 3), ("dppo", 3)])
def test_compiled_minibatch_loss_updates_as_eager_does(policy, unroll, tmp_path, aot_eager):
    """unroll 3 over an epoch's 4 minibatches: a group of 3 steps in one graph, then one alone."""
    eager, eager_run = first_updates(tmp_path, policy, False)
    compiled, compiled_run = first_updates(tmp_path, policy, True, unroll)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # warm-up and actor graphs were captured
    assert "approx_kl" not in eager[0] and "approx_kl" in eager[1]  # the critic warmed up first
    for e, c in zip(eager, compiled):
        assert e.keys() == c.keys()
        for key in e:
            assert c[key] == pytest.approx(e[key], rel=1e-4, abs=1e-6), key
    # The rollout step's observation statistics, computed in the compiled call and committed eagerly:
    # every observation of both rollouts (2 x 16 steps x 8 envs) counted, mean and variance as eager's.
    assert float(compiled_run.normalizer.count) == pytest.approx(256) == float(eager_run.normalizer.count)
    for key in ("obs_mean", "obs_var"):
        torch.testing.assert_close(getattr(compiled_run.normalizer, key), getattr(eager_run.normalizer, key),
                                   rtol=1e-5, atol=1e-6, msg=key)
    for name in ("actor", "critic"):
        for (key, e), c in zip(eager_run.algo.modules()[name].state_dict().items(),
                               compiled_run.algo.modules()[name].state_dict().values()):
            torch.testing.assert_close(c, e, rtol=1e-4, atol=1e-6, msg=key)
    eager_state = eager_run.algo.optimizer.state_dict()["state"]
    compiled_state = compiled_run.algo.optimizer.state_dict()["state"]
    assert eager_state.keys() == compiled_state.keys()  # the same parameters were stepped
    for index, state in eager_state.items():
        assert float(compiled_state[index]["step"]) == float(state["step"])
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(compiled_state[index][key], state[key], rtol=1e-3, atol=1e-8)


def test_the_rollout_step_is_built_once_a_run(tmp_path, aot_eager, monkeypatch):
    """On a CPU learner the rollout step is an ahead-of-time package: exported and built on the first
    rollout, then only bound to the current weights; the reset's observations and later ones (made under
    inference mode) are the same input to it."""
    programs = []
    monkeypatch.setattr(ahead_of_time, "build_package", lambda program: programs.append(program) or exported_module(program))
    _, runner = first_updates(tmp_path, "ppo", True)
    assert len(programs) == 1
    assert runner.loop.policy_step == runner.loop._policy_step  # torch.compile is the GPU path only


def test_compiled_gorl_follows_its_stage_switch_as_eager_does(tmp_path, aot_eager):
    """GoRL's loss reads its stage (clip and regulariser change at a switch, which also drops the latent
    policy's Adam state): the compiled step must pick the new stage up, not keep the first one's graph,
    and must read it without a graph break (an int() of the stage buffer split the step in two)."""
    def three_iterations(compile: bool) -> list[dict[str, float]]:
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        cfg = load_run_config(["task=point_mass", "policy=gorl", "sim.num_envs=8", "train.rollout_steps=16",
                               "policy.actor.hidden=[16]", "policy.critic.hidden=[16]", "policy.algo.update_epochs=2",
                               "policy.algo.minibatch_size=32", "policy.algo.stage_env_steps=[128]",
                               "policy.algo.decoder_steps=20", "policy.algo.eval_at_switch=false",
                               f"policy.algo.compile={str(compile).lower()}", "train.video=false", "train.progress=false"])
        runner = Runner(cfg, tmp_path / f"gorl-{compile}")
        return [runner.loop.iterate(i / 4)[1] for i in range(3)]

    eager = three_iterations(False)
    compiled = three_iterations(True)
    assert not torch._dynamo.utils.counters["graph_break"], dict(torch._dynamo.utils.counters["graph_break"])
    assert [row["latent_reg"] for row in eager] == pytest.approx([5e-4, 1e-3, 1e-3], rel=0.2)  # stage 0, then 1
    for e, c in zip(eager, compiled):
        for key in ("stage", "latent_reg", "policy_loss", "value_loss", "approx_kl"):
            assert c[key] == pytest.approx(e[key], rel=1e-4, abs=1e-6), key


def test_the_inductor_build_updates_as_eager_does(tmp_path):
    """The same comparison through Inductor's C++ kernels (what policy.algo.compile runs; needs the C
    compiler scripts/setup.sh installs): fused kernels round differently, nothing more."""
    eager, _ = first_updates(tmp_path, "ppo", False)
    compiled, _ = first_updates(tmp_path, "ppo", True)
    for e, c in zip(eager, compiled):
        assert e.keys() == c.keys()
        for key in e:
            assert c[key] == pytest.approx(e[key], rel=1e-3, abs=1e-5), key


def test_compiled_adam_steps_as_torch_adam_with_uneven_step_counts(aot_eager):
    """Adam's bias corrections are per parameter in the compiled step: parameters Adam has stepped a
    different number of times (here 0, 2 and 3) must each get torch Adam's update, weights, moments and
    step counts alike; the frozen actor (train_actor=False) keeps all three."""
    from torch import nn

    from robopol.algos.compiled_step import CompiledStep

    torch.manual_seed(0)
    actor, critic = nn.Linear(3, 2), nn.Linear(3, 1)

    optimizer = torch.optim.Adam([{"params": list(actor.parameters()), "lr": 1e-2},
                                  {"params": list(critic.parameters()), "lr": 3e-2}], eps=1e-5)
    for stepped in ([critic.weight, critic.bias, actor.weight], [critic.weight, critic.bias], [critic.weight]):
        for p in actor.parameters():
            p.grad = None
        for p in critic.parameters():
            p.grad = None
        for p in stepped:  # only these get a gradient, so Adam steps only these
            p.grad = torch.randn_like(p)
        optimizer.step()
    counts = [float(optimizer.state[p]["step"]) if p in optimizer.state else 0.0
              for p in (*actor.parameters(), *critic.parameters())]
    assert counts == [1.0, 0.0, 3.0, 2.0]  # actor weight, actor bias, critic weight, critic bias

    def clone() -> tuple[nn.Module, nn.Module, torch.optim.Optimizer]:
        a, c = copy.deepcopy(actor), copy.deepcopy(critic)
        opt = torch.optim.Adam([{"params": list(a.parameters()), "lr": 1e-2},
                                {"params": list(c.parameters()), "lr": 3e-2}], eps=1e-5)
        mapping = dict(zip((*actor.parameters(), *critic.parameters()), (*a.parameters(), *c.parameters())))
        for p, state in optimizer.state.items():
            opt.state[mapping[p]] = {k: v.clone() for k, v in state.items()}
        return a, c, opt

    batch = {"x": torch.randn(16, 3), "y": torch.randn(16)}
    for train_actor in (True, False):
        a_eager, c_eager, opt_eager = clone()
        a_comp, c_comp, opt_comp = clone()
        total = (c_eager(batch["x"]).squeeze(1) - batch["y"]).pow(2).mean()
        if train_actor:
            total = total + a_eager(batch["x"]).pow(2).mean()
        total.backward()
        nn.utils.clip_grad_norm_([p for p in (*a_eager.parameters(), *c_eager.parameters()) if p.grad is not None], 0.5)
        opt_eager.step()

        def comp_loss(b: dict[str, torch.Tensor], t: bool):
            value = (c_comp(b["x"]).squeeze(1) - b["y"]).pow(2).mean()
            policy = {"loss": a_comp(b["x"]).pow(2).mean()} if t else {}
            return value + policy.get("loss", 0.0), value, policy

        torch._dynamo.reset()
        step = CompiledStep({"actor": a_comp, "critic": c_comp}, comp_loss, opt_comp, max_grad_norm=0.5)
        step.begin()
        step.steps({key: v[None] for key, v in batch.items()}, train_actor)
        step.end()
        for e, c in zip((*a_eager.parameters(), *c_eager.parameters()), (*a_comp.parameters(), *c_comp.parameters())):
            torch.testing.assert_close(c, e, rtol=1e-5, atol=1e-7)
            if e in opt_eager.state:
                assert float(opt_comp.state[c]["step"]) == float(opt_eager.state[e]["step"])
                for key in ("exp_avg", "exp_avg_sq"):
                    torch.testing.assert_close(opt_comp.state[c][key], opt_eager.state[e][key], rtol=1e-5, atol=1e-9)
            else:
                assert c not in opt_comp.state
        moved = [not torch.equal(e, p) for e, p in zip(a_eager.parameters(), actor.parameters())]
        assert moved == [train_actor, train_actor]  # the frozen actor did not move


def test_unrolling_needs_the_compiled_step():
    from robopol.errors import ConfigError

    with pytest.raises(ConfigError, match="policy.algo.compile_unroll: 4 .*policy.algo.compile=true"):
        load_run_config(["policy=ppo", "policy.algo.compile_unroll=4"])
