"""Actors against closed forms: Gaussian and per-step log-probs vs torch.distributions, CFM losses by hand."""

import math

import pytest
import torch
from torch.distributions import Normal

from robopol.policies.base import ChunkSpec
from robopol.policies.diffusion import DiffusionActor, cosine_alphas_cumprod
from robopol.policies.flow import FlowActor
from robopol.policies.gaussian import GaussianActor

SPEC = ChunkSpec(obs_dim=3, act_dim=2, n_obs_steps=2, horizon=4, n_action_steps=2)


def test_gaussian_log_prob_matches_torch_distributions_on_executed_actions():
    actor = GaussianActor(SPEC, init_log_std=-0.5)
    with torch.no_grad():
        actor.log_std.copy_(torch.randn(4, 2) * 0.3)
    obs, actions = torch.randn(5, 2, 3), torch.randn(5, 4, 2)
    expected = Normal(actor.mean(obs)[:, :2], actor.log_std[:2].exp()).log_prob(actions[:, :2]).sum(dim=(1, 2))
    torch.testing.assert_close(actor.log_prob(obs, actions), expected)
    noise = torch.randn(5, 4, 2)
    torch.testing.assert_close(actor.noise_log_prob(noise), actor.log_prob(obs, actor.sample(obs, noise)))
    entropy = Normal(torch.zeros(2, 2), actor.log_std[:2].exp()).entropy().sum()
    torch.testing.assert_close(actor.entropy(), entropy)


def test_cosine_schedule_is_decreasing_and_starts_near_one():
    abar = cosine_alphas_cumprod(20)
    assert abar[0] > 0.99 and abar[-1] < 0.01
    assert torch.all(abar[1:] < abar[:-1])


def _ddpm_step_reference(actor: DiffusionActor, x, k, obs):
    """DDPM posterior mean/std from the textbook formulas (Ho et al. 2020, eq. 6-7)."""
    abar = cosine_alphas_cumprod(actor.denoising_steps).float()
    ab, ab_prev = abar[k], abar[k - 1] if k > 0 else torch.tensor(1.0)
    beta = 1 - ab / ab_prev
    eps = actor.model(x, torch.tensor(k / actor.denoising_steps), obs)
    x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1, 1)
    mean = ab_prev.sqrt() * beta / (1 - ab) * x0 + (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab) * x
    var = beta * (1 - ab_prev) / (1 - ab)
    return mean, var.clamp(min=1e-20).sqrt()


def test_ddpm_step_log_prob_matches_torch_distributions():
    actor = DiffusionActor(SPEC, hidden=(32,), denoising_steps=10, min_logprob_std=0.1)
    obs = torch.randn(6, 2, 3)
    chain = actor.sample_chain(obs, torch.randn(actor.noise_shape(6)))
    logp = actor.chain_log_prob(obs, chain)
    assert logp.shape == (6, 10)
    for i in (0, 4, 9):  # sampling step i denoises timestep k = 9 - i
        mean, std = _ddpm_step_reference(actor, chain[:, i], 9 - i, obs)
        ref = Normal(mean, std.clamp(min=0.1)).log_prob(chain[:, i + 1]).sum(dim=(1, 2))
        torch.testing.assert_close(logp[:, i], ref, rtol=1e-4, atol=1e-4)


def test_ddim_sampling_uses_a_subset_of_steps_and_is_deterministic_with_zero_noise():
    actor = DiffusionActor(SPEC, hidden=(32,), denoising_steps=20, ddim_steps=5, ddim_eta=0.0)
    assert actor.num_sampling_steps == 5
    obs = torch.randn(3, 2, 3)
    zero = torch.zeros(actor.noise_shape(3))
    torch.testing.assert_close(actor.sample(obs, zero), actor.sample(obs, zero))
    assert actor.sample(obs, zero).abs().max() <= 1.0 + 1e-6  # eta=0, x0 clamped: stays in range


def test_finetune_last_freezes_the_pretrained_network_and_uses_the_copy_only_late():
    actor = DiffusionActor(SPEC, hidden=(32,), denoising_steps=10)
    actor.finetune_last(3)
    assert not any(p.requires_grad for p in actor.model.parameters())
    assert all(p.requires_grad for p in actor.ft_model.parameters())
    assert [actor.net_for_step(i) is actor.ft_model for i in range(10)] == [False] * 7 + [True] * 3
    chain = actor.sample_chain(torch.randn(2, 2, 3), torch.randn(actor.noise_shape(2)))
    assert chain.shape == (2, 4, 4, 2)


def test_flow_cfm_losses_match_hand_computation():
    actor = FlowActor(SPEC, hidden=(32,))
    obs, actions = torch.randn(4, 2, 3), torch.randn(4, 4, 2)
    t, eps = torch.rand(4, 3), torch.randn(4, 3, 4, 2)
    losses = actor.cfm_losses(obs, actions, t, eps, steps=2)
    for b in range(4):
        for n in range(3):
            x_t = t[b, n] * eps[b, n] + (1 - t[b, n]) * actions[b]
            v = actor.velocity(x_t[None], t[b, n].reshape(1), obs[b:b + 1])[0]
            expected = (v - (eps[b, n] - actions[b]))[:2].pow(2).mean()
            torch.testing.assert_close(losses[b, n], expected, rtol=1e-5, atol=1e-6)


def test_flow_euler_sampler_integrates_a_known_velocity():
    """For a point target a*, the rectified path's exact velocity is v(x, t) = (x - a*) / t; Euler
    steps x_{t-dt} = x_t - dt * v shrink x - a* by (t - dt) / t, reaching a* exactly at t = 0."""
    actor = FlowActor(SPEC, hidden=(32,), num_steps=4)
    target = torch.full((1, 4, 2), 0.5)
    actor.velocity = lambda x, t, obs: (x - target) / t.clamp(min=1e-6)  # type: ignore[method-assign]
    out = actor.sample(torch.zeros(1, 2, 3), torch.randn(1, 4, 2))
    torch.testing.assert_close(out, target, rtol=1e-5, atol=1e-5)


def test_flow_stochastic_chain_log_prob_matches_torch_distributions():
    actor = FlowActor(SPEC, hidden=(32,), num_steps=5, sigma_scale=0.05)
    obs = torch.randn(3, 2, 3)
    chain = actor.sample_chain(obs, torch.randn(3, 6, 4, 2))
    logp = actor.chain_log_prob(obs, chain)
    assert logp.shape == (3, 4)
    for i in range(4):
        t = 1.0 - i / 5
        mean = chain[:, i] - 0.2 * actor.velocity(chain[:, i], torch.tensor(t), obs)
        ref = Normal(mean, 0.05 * math.sqrt(t)).log_prob(chain[:, i + 1]).sum(dim=(1, 2))
        torch.testing.assert_close(logp[:, i], ref, rtol=1e-4, atol=1e-4)
    # the last step is deterministic: no noise enters it
    last = chain[:, 4] - 0.2 * actor.velocity(chain[:, 4], torch.tensor(0.2), obs)
    torch.testing.assert_close(chain[:, 5], last)


@pytest.mark.parametrize("drift, scale", [("marginal", 1.0), ("official", 0.2)])
def test_flow_score_drift_moves_the_chain_mean_by_half_the_variance_times_eps_hat(drift, scale):
    """With score_drift, step i's mean is x - dt v - c (x + (1 - t) v), c = sigma^2 / 2 (times dt for
    "official"), on every noisy step; the chain's log-prob scores that mean; the last step stays Euler."""
    actor = FlowActor(SPEC, hidden=(32,), num_steps=5, sigma_scale=0.3, score_drift=drift)
    obs = torch.randn(3, 2, 3)
    chain = actor.sample_chain(obs, torch.randn(3, 6, 4, 2))
    logp = actor.chain_log_prob(obs, chain)
    c = 0.5 * 0.3 ** 2 * scale
    for i in range(4):
        t = 1.0 - i / 5
        v = actor.velocity(chain[:, i], torch.tensor(t), obs)
        mean = chain[:, i] - 0.2 * v - c * (chain[:, i] + (1 - t) * v)
        ref = Normal(mean, 0.3 * math.sqrt(t)).log_prob(chain[:, i + 1]).sum(dim=(1, 2))
        torch.testing.assert_close(logp[:, i], ref, rtol=1e-4, atol=1e-4)
    last = chain[:, 4] - 0.2 * actor.velocity(chain[:, 4], torch.tensor(0.2), obs)
    torch.testing.assert_close(chain[:, 5], last)
    deterministic = FlowActor(SPEC, hidden=(32,), num_steps=5)
    deterministic.load_state_dict(actor.state_dict())
    noise = torch.randn(3, 4, 2)
    torch.testing.assert_close(actor.sample(obs, noise), deterministic.sample(obs, noise))  # evaluation unchanged


def test_flow_marginal_score_drift_keeps_a_gaussian_targets_variance():
    """Actions a ~ N(0, 0.25) per element: the exact velocity on x_t = t eps + (1 - t) a is
    x (t - (1 - t) 0.25) / (t^2 + (1 - t)^2 0.25). With sigma_scale 0.6 the uncorrected chain ends
    with about 5x the variance; the marginal drift keeps it near 0.25 (Euler at K = 10 alone: 0.19)."""
    var_a = 0.25
    ends = {}
    for drift in ("off", "marginal", "official"):
        actor = FlowActor(SPEC, hidden=(8,), num_steps=10, sigma_scale=0.6, score_drift=drift)
        actor.velocity = lambda x, t, obs: x * (t - (1 - t) * var_a) / (t ** 2 + (1 - t) ** 2 * var_a)  # type: ignore[method-assign]
        chain = actor.sample_chain(torch.zeros(5000, 2, 3), torch.randn(5000, 11, 4, 2, generator=torch.Generator().manual_seed(0)))
        ends[drift] = chain[:, -1].var().item()
    assert ends["off"] > 4 * var_a
    assert abs(ends["marginal"] - var_a) < 0.04
    assert var_a < ends["official"] < ends["off"]


@pytest.mark.parametrize("make", [lambda: GaussianActor(SPEC), lambda: FlowActor(SPEC, hidden=(16,)),
                                  lambda: DiffusionActor(SPEC, hidden=(16,), denoising_steps=5)])
def test_every_actor_follows_the_contract(make):
    actor = make()
    obs = torch.randn(7, 2, 3)
    out = actor.predict_action(obs, deterministic=True)
    assert out.shape == (7, 4, 2)
    torch.testing.assert_close(out, actor.predict_action(obs, deterministic=True))
    loss = actor.loss(obs, torch.rand(7, 4, 2) * 2 - 1)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
