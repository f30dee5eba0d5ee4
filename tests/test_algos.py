"""Importance ratios are exactly 1 before the policy moves; DPPO's clip schedule and discounting."""

import pytest
import torch

from robopol.algos.dppo import DPPO, DPPOConfig, denoising_clip_schedule
from robopol.algos.fpo import FPO, FPOConfig
from robopol.algos.ppo import PPO, PPOConfig
from robopol.config import ActorConfig, PolicyConfig
from robopol.policies.base import ChunkSpec
from robopol.policies.diffusion import DiffusionActor
from robopol.policies.flow import FlowActor
from robopol.policies.gaussian import GaussianActor

SPEC = ChunkSpec(obs_dim=3, act_dim=2, n_obs_steps=1, horizon=2, n_action_steps=2)


def policy(algo_cfg) -> PolicyConfig:
    """A policy config for `algo_cfg`, with its actor type and the default 64x64 tanh V critic."""
    actor = ActorConfig.variants()[algo_cfg.actor_types[0]]()
    return PolicyConfig(horizon=2, n_action_steps=2, actor=actor, algo=algo_cfg)


def _batch(algo, n=16):
    obs = torch.randn(n, 1, 3)
    with torch.no_grad():  # as in collection, which runs under inference mode
        actions, extras = algo.act(obs)
    return {"obs": obs, "actions": actions, **extras}


@pytest.mark.parametrize("per_sample", [False, True])
def test_fpo_ratio_is_one_when_the_policy_has_not_moved(per_sample):
    algo = FPO(policy(FPOConfig(per_sample_ratio=per_sample)), FlowActor(SPEC, hidden=(16,)))
    batch = _batch(algo)
    log_ratio = algo.log_ratio(batch)
    assert log_ratio.shape == ((16, 8) if per_sample else (16,))
    torch.testing.assert_close(log_ratio, torch.zeros_like(log_ratio))
    stats = algo.policy_loss(batch, torch.randn(16))
    assert stats["clip_fraction"].item() == 0.0 and abs(stats["approx_kl"].item()) < 1e-10


def test_fpo_ratio_moves_with_the_flow_matching_loss():
    """Lowering the CFM loss of the stored action raises its ratio above 1 (FPO's likelihood proxy)."""
    algo = FPO(policy(FPOConfig()), FlowActor(SPEC, hidden=(32,)))
    batch = _batch(algo)
    opt = torch.optim.Adam(algo.actor.parameters(), lr=1e-3)
    for _ in range(20):
        opt.zero_grad()
        algo.actor.cfm_losses(batch["obs"], batch["actions"], batch["fpo_t"], batch["fpo_eps"]).mean().backward()
        opt.step()
    assert algo.log_ratio(batch).mean() > 0


def test_ppo_and_dppo_ratios_are_one_before_an_update():
    ppo = PPO(policy(PPOConfig()), GaussianActor(SPEC))
    batch = _batch(ppo)
    torch.testing.assert_close(ppo.actor.log_prob(batch["obs"], batch["actions"]), batch["log_prob"])
    dppo = DPPO(policy(DPPOConfig()), DiffusionActor(SPEC, hidden=(16,), denoising_steps=6))
    batch = _batch(dppo)
    torch.testing.assert_close(dppo.log_prob(batch["obs"], batch["chain"]), batch["log_prob"])
    assert batch["chain"].shape == (16, 7, 2, 2)
    torch.testing.assert_close(batch["chain"][:, -1], batch["actions"])


def test_dppo_clip_grows_from_base_to_last():
    clip = denoising_clip_schedule(5, base=1e-3, last=1e-2, rate=3.0)
    assert clip[0].item() == pytest.approx(1e-3) and clip[-1].item() == pytest.approx(1e-2)
    assert torch.all(clip[1:] > clip[:-1])


def test_critic_warmup_leaves_the_actor_untouched():
    from robopol.data.rollout import RolloutBuffer

    algo = DPPO(policy(DPPOConfig(critic_warmup_iters=1, update_epochs=1)), DiffusionActor(SPEC, hidden=(16,), denoising_steps=4))
    buf = RolloutBuffer(4, 2, (1, 3), (2, 2), algo.extras_spec())
    for _ in range(4):
        obs = torch.randn(2, 1, 3)
        with torch.no_grad():
            actions, extras = algo.act(obs)
        buf.add(obs, actions, torch.randn(2), torch.zeros(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool),
                torch.zeros(2), **extras)
    buf.compute_gae(torch.zeros(2), 0.99, 0.95)
    before = [p.clone() for p in algo.actor.parameters()]
    critic_before = [p.clone() for p in algo.critic.parameters()]
    algo.update(buf, progress=0.0)
    assert all(torch.equal(b, p) for b, p in zip(before, algo.actor.parameters()))
    assert not all(torch.equal(b, p) for b, p in zip(critic_before, algo.critic.parameters()))
    algo.update(buf, progress=0.0)
    assert not all(torch.equal(b, p) for b, p in zip(before, algo.actor.parameters()))


def test_spo_loss_is_optimal_one_clip_from_one_and_pulls_back_past_it():
    from robopol.algos.fpo import spo_losses

    clip = 0.1
    ratio = torch.linspace(0.5, 1.5, 10001, requires_grad=True)
    for sign in (1.0, -1.0):
        adv = torch.full_like(ratio, 2.0 * sign)
        losses = spo_losses(ratio, adv, clip)
        assert ratio[losses.argmin()].item() == pytest.approx(1 + sign * clip, abs=1e-4)
        grad, = torch.autograd.grad(losses.sum(), ratio)
        past = (ratio - 1) * sign > clip
        assert torch.all(grad[past] * sign > 0)  # descending the loss moves the ratio back towards 1 + sign * clip
    torch.testing.assert_close(spo_losses(torch.tensor([1.0]), torch.tensor([-3.0]), clip), torch.tensor([3.0]))


def test_fpo_aspo_uses_the_clip_for_positive_and_spo_for_negative_advantages():
    from robopol.algos.fpo import spo_losses
    from robopol.algos.on_policy import clipped_losses

    algo = FPO(policy(FPOConfig(per_sample_ratio=True, trust_region="aspo", clip=0.05)), FlowActor(SPEC, hidden=(16,)))
    batch = _batch(algo)
    with torch.no_grad():
        for p in algo.actor.parameters():
            p.add_(0.05 * torch.randn_like(p))  # move the policy so ratios leave the trust region
    adv = torch.randn(16)
    ratio = algo.log_ratio(batch).exp()
    a = adv.unsqueeze(1).expand_as(ratio)
    expected = torch.where(a >= 0, clipped_losses(ratio, a, 0.05), spo_losses(ratio, a, 0.05)).mean()
    torch.testing.assert_close(algo.policy_loss(batch, adv)["loss"], expected)
    assert not torch.allclose(expected, clipped_losses(ratio, a, 0.05).mean())  # negative samples are scored differently
