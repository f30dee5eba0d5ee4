"""The step-level generative contract (robopol.policies.generative) against the samplers it replaced.

The `_old_*` functions are the diffusion and flow samplers and chain log-probs as they were before
the contract (copied from the actors' code, reading only their networks), the reference the generic
loops must reproduce bit for bit: same samples, chains, log-probs and gradients for the same noise."""

from __future__ import annotations

import math

import pytest
import torch

from robopol.algos.dppo import DPPO, DPPOConfig
from robopol.config import ActorConfig, PolicyConfig
from robopol.errors import ConfigError
from robopol.policies.base import ChunkSpec
from robopol.policies.diffusion import DiffusionActor, cosine_alphas_cumprod
from robopol.policies.flow import FlowActor
from robopol.policies.generative import eps_from_velocity, velocity_from_eps, vp_flow_grid

SPEC = ChunkSpec(obs_dim=3, act_dim=2, n_obs_steps=2, horizon=4, n_action_steps=2)
LOG_2PI = math.log(2 * math.pi)


# --- the old code: diffusion ---
def _old_schedule(K: int, ddim_steps: int, eta: float) -> dict[str, torch.Tensor]:
    abar = cosine_alphas_cumprod(K)
    if ddim_steps:
        stride = K // ddim_steps
        ks = torch.arange(K - 1, -1, -stride)[:ddim_steps]
    else:
        ks = torch.arange(K - 1, -1, -1)
    ab = abar[ks]
    ab_prev = torch.cat([abar[ks[1:]], torch.ones(1, dtype=abar.dtype)])
    if ddim_steps:
        std = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()
        coef_x0, coef_eps = ab_prev.sqrt(), (1 - ab_prev - std**2).clamp(min=0).sqrt()
        coef_xt = torch.zeros_like(ab)
    else:
        alpha = ab / ab_prev
        coef_x0 = ab_prev.sqrt() * (1 - alpha) / (1 - ab)
        coef_xt = alpha.sqrt() * (1 - ab_prev) / (1 - ab)
        coef_eps = torch.zeros_like(ab)
        std = ((1 - alpha) * (1 - ab_prev) / (1 - ab)).clamp(min=1e-20).sqrt()
    out = {"k_frac": ks.double() / K, "abar": ab, "coef_x0": coef_x0, "coef_xt": coef_xt, "coef_eps": coef_eps, "std": std}
    return {name: value.float() for name, value in out.items()} | {"ddim": bool(ddim_steps), "steps": len(ks)}


def _old_net_for_step(actor, s, i):
    first_ft = s["steps"] - actor.ft_denoising_steps
    return actor.ft_model if actor.ft_model is not None and i >= first_ft else actor.model


def _old_denoise_step(s, x, i, obs, net):
    def at(coef):
        return coef[i].view(-1, 1, 1)

    eps = net(x, s["k_frac"][i], obs)
    ab = at(s["abar"])
    x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1.0, 1.0)
    if s["ddim"]:
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
    return at(s["coef_x0"]) * x0 + at(s["coef_xt"]) * x + at(s["coef_eps"]) * eps, at(s["std"])


def _old_diffusion_sample_chain(actor, s, obs, noise):
    x = noise[:, 0]
    first_ft = s["steps"] - actor.ft_denoising_steps
    chain = [x] if first_ft == 0 else []
    for i in range(s["steps"]):
        mean, std = _old_denoise_step(s, x, torch.full((x.shape[0],), i), obs, _old_net_for_step(actor, s, i))
        x = mean + std.clamp(min=actor.min_sampling_std) * noise[:, i + 1].clamp(-actor.noise_clip, actor.noise_clip)
        if i + 1 >= first_ft:
            chain.append(x)
    return torch.stack(chain, dim=1)


def _old_diffusion_chain_log_prob(actor, s, obs, chain):
    batch, steps = chain.shape[0], actor.ft_denoising_steps
    first_ft = s["steps"] - steps
    x = chain[:, :-1].reshape(batch * steps, *chain.shape[2:])
    i = torch.arange(first_ft, first_ft + steps).repeat(batch)
    mean, std = _old_denoise_step(s, x, i, obs.repeat_interleave(steps, dim=0), _old_net_for_step(actor, s, first_ft))
    std = std.clamp(min=actor.min_logprob_std)
    z = (chain[:, 1:].reshape(x.shape) - mean) / std
    logp = (-0.5 * z.pow(2) - std.log() - 0.5 * LOG_2PI).clamp(-5.0, 2.0)
    return logp[:, : actor.spec.n_action_steps].mean(dim=(1, 2)).reshape(batch, steps)


# --- the old code: flow ---
def _old_flow_sample(actor, obs, noise):
    K = actor.num_sampling_steps
    x, dt = noise, 1.0 / K
    for i in range(K):
        x = x - dt * actor.velocity(x, torch.tensor(1.0 - i * dt), obs)
    return x


def _old_step_std(K, i, sigma_scale):
    return 0.0 if i == K - 1 else sigma_scale * math.sqrt(1.0 - i / K)


def _old_flow_sample_chain(actor, obs, noise, sigma_scale):
    K = actor.num_sampling_steps
    x, dt = noise[:, 0], 1.0 / K
    chain = [x]
    for i in range(K):
        x = x - dt * actor.velocity(x, torch.tensor(1.0 - i * dt), obs) + _old_step_std(K, i, sigma_scale) * noise[:, i + 1]
        chain.append(x)
    return torch.stack(chain, dim=1)


def _old_flow_chain_log_prob(actor, obs, chain, sigma_scale):
    K = actor.num_sampling_steps
    batch, dt = chain.shape[0], 1.0 / K
    steps = K - 1
    x = chain[:, :steps].reshape(batch * steps, *chain.shape[2:])
    t = torch.tensor([1.0 - i * dt for i in range(steps)]).repeat(batch)
    mean = (x - dt * actor.velocity(x, t, obs.repeat_interleave(steps, dim=0))).reshape(batch, steps, *chain.shape[2:])
    std = torch.tensor([_old_step_std(K, i, sigma_scale) for i in range(steps)]).view(1, steps, 1, 1)
    z = (chain[:, 1:steps + 1] - mean) / std
    return (-0.5 * z.pow(2) - std.log() - 0.5 * LOG_2PI).sum(dim=(2, 3))


def _grads(module: torch.nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    params = [p for p in module.parameters() if p.requires_grad]
    return list(torch.autograd.grad(loss, params))


def _assert_identical(new: list[torch.Tensor], old: list[torch.Tensor]) -> None:
    assert len(new) == len(old)
    for a, b in zip(new, old):
        assert torch.equal(a, b), (a - b).abs().max()


DIFFUSION_CASES = {"ddpm": {"denoising_steps": 10}, "ddim_eta1": {"denoising_steps": 20, "ddim_steps": 5},
                   "ddim_eta0": {"denoising_steps": 20, "ddim_steps": 5, "ddim_eta": 0.0}}


@pytest.mark.parametrize("ft_steps", [0, 3])
@pytest.mark.parametrize("case", sorted(DIFFUSION_CASES))
def test_diffusion_sampling_and_dppo_log_probs_reproduce_the_old_code_bit_for_bit(case, ft_steps):
    kwargs = DIFFUSION_CASES[case]
    actor = DiffusionActor(SPEC, hidden=(32, 32), **kwargs)
    if ft_steps:
        actor.finetune_last(ft_steps)
        with torch.no_grad():  # the copy must differ, so a wrong choice of network shows
            for p in actor.ft_model.parameters():
                p.add_(0.1 * torch.randn_like(p))
    s = _old_schedule(kwargs["denoising_steps"], kwargs.get("ddim_steps", 0), kwargs.get("ddim_eta", 1.0))
    obs = torch.randn(16, 2, 3)
    noise = torch.randn(actor.noise_shape(16)) * 1.5  # some draws past noise_clip
    with torch.no_grad():
        old_chain = _old_diffusion_sample_chain(actor, s, obs, noise)
        assert torch.equal(actor.sample_chain(obs, noise), old_chain)
        assert torch.equal(actor.sample(obs, noise), old_chain[:, -1])
        zero = torch.zeros_like(noise)
        zero[:, 0] = noise[:, 0]
        assert torch.equal(actor.sample(obs, zero), _old_diffusion_sample_chain(actor, s, obs, zero)[:, -1])
    spec = actor.spec
    dppo = DPPO(PolicyConfig(n_obs_steps=spec.n_obs_steps, horizon=spec.horizon, n_action_steps=spec.n_action_steps,
                             actor=ActorConfig.variants()["diffusion"](), algo=DPPOConfig()), actor)
    new_logp, old_logp = dppo.log_prob(obs, old_chain), _old_diffusion_chain_log_prob(actor, s, obs, old_chain)
    assert torch.equal(new_logp, old_logp)
    weights = torch.randn_like(old_logp)
    _assert_identical(_grads(actor, (new_logp * weights).sum()), _grads(actor, (old_logp * weights).sum()))


@pytest.mark.parametrize("sigma_scale", [0.05, 0.3])
def test_flow_sampling_and_chain_log_probs_reproduce_the_old_code_bit_for_bit(sigma_scale):
    actor = FlowActor(SPEC, hidden=(32, 32), num_steps=10, sigma_scale=sigma_scale)
    obs, noise = torch.randn(16, 2, 3), torch.randn(16, 4, 2)
    with torch.no_grad():
        assert torch.equal(actor.sample(obs, noise), _old_flow_sample(actor, obs, noise))
        assert torch.equal(actor.sample(obs, torch.zeros_like(noise)), _old_flow_sample(actor, obs, torch.zeros_like(noise)))
    chain_noise = torch.randn(actor.chain_noise_shape(16))
    with torch.no_grad():
        old_chain = _old_flow_sample_chain(actor, obs, chain_noise, sigma_scale)
        assert torch.equal(actor.sample_chain(obs, chain_noise), old_chain)
    new_logp, old_logp = actor.chain_log_prob(obs, old_chain), _old_flow_chain_log_prob(actor, obs, old_chain, sigma_scale)
    assert torch.equal(new_logp, old_logp)
    weights = torch.randn_like(old_logp)
    _assert_identical(_grads(actor, (new_logp * weights).sum()), _grads(actor, (old_logp * weights).sum()))


def _actors() -> list:
    return [FlowActor(SPEC, hidden=(16,), num_steps=5), DiffusionActor(SPEC, hidden=(16,), denoising_steps=6),
            DiffusionActor(SPEC, hidden=(16,), denoising_steps=20, ddim_steps=4)]


@pytest.mark.parametrize("actor", _actors(), ids=["flow", "ddpm", "ddim"])
def test_a_hook_that_returns_its_input_changes_nothing(actor):
    seen: list = []

    def identity(i, x, pred, obs):
        seen.append(i)
        return pred

    obs = torch.randn(5, 2, 3)
    noise, chain_noise = torch.randn(actor.noise_shape(5)), torch.randn(actor.chain_noise_shape(5))
    assert torch.equal(actor.sample(obs, noise, hook=identity), actor.sample(obs, noise))
    assert seen == list(range(actor.num_sampling_steps))
    chain = actor.sample_chain(obs, chain_noise)
    assert torch.equal(actor.sample_chain(obs, chain_noise, hook=identity), chain)
    seen.clear()
    assert torch.equal(actor.chain_log_prob(obs, chain, hook=identity), actor.chain_log_prob(obs, chain))
    steps = actor.scored_steps  # the batched log-prob hands the hook one step index per row
    assert torch.equal(seen[0], torch.arange(steps.start, steps.stop).repeat(5))


def test_a_hook_rewrites_the_prediction_every_step_uses():
    """A hook that swaps the network's velocity for the exact one towards a point target a*,
    v = (x - a*) / t, makes the Euler sampler land on a* whatever the network says."""
    actor = FlowActor(SPEC, hidden=(16,), num_steps=4)
    target = torch.full((1, 4, 2), 0.5)

    def towards_target(i, x, pred, obs):
        return (x - target) / actor.flow_t[i]

    out = actor.sample(torch.zeros(1, 2, 3), torch.randn(1, 4, 2), hook=towards_target)
    torch.testing.assert_close(out, target, rtol=1e-5, atol=1e-5)


def test_eps_velocity_conversion_round_trips_and_matches_the_rectified_path():
    a, eps = torch.randn(64, 4, 2), torch.randn(64, 4, 2)
    t = torch.rand(64, 1, 1) * 0.98 + 0.01
    x_t = t * eps + (1 - t) * a
    v = velocity_from_eps(x_t, eps, t)
    torch.testing.assert_close(v, eps - a, rtol=1e-4, atol=1e-4)  # the path's velocity
    torch.testing.assert_close(eps_from_velocity(x_t, v, t), eps, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(velocity_from_eps(x_t, eps_from_velocity(x_t, eps - a, t), t), eps - a, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(x_t - t * v, a, rtol=1e-4, atol=1e-4)  # a = x_t - t v


def test_vp_states_lie_on_the_rectified_path_at_the_grid_times():
    abar = cosine_alphas_cumprod(20)
    t, scale = vp_flow_grid(abar)
    a, eps = torch.randn(20, 4, 2, dtype=torch.float64), torch.randn(20, 4, 2, dtype=torch.float64)
    x_k = abar.sqrt().view(-1, 1, 1) * a + (1 - abar).sqrt().view(-1, 1, 1) * eps
    t3 = t.view(-1, 1, 1)
    torch.testing.assert_close(x_k / scale.view(-1, 1, 1), t3 * eps + (1 - t3) * a)
    assert torch.all(t[1:] > t[:-1]) and 0 < t[0] and t[-1] < 1  # noisier k, later t
    t_clean, scale_clean = vp_flow_grid(torch.ones(1))
    assert t_clean.item() == 0.0 and scale_clean.item() == 1.0  # abar = 1 is the action itself


@pytest.mark.parametrize("actor", _actors()[1:], ids=["ddpm", "ddim"])
def test_the_actors_conversions_agree_with_each_other_on_the_shared_frame(actor):
    obs, x = torch.randn(8, 2, 3), torch.randn(8, 4, 2) * 2
    for i in range(actor.num_sampling_steps):
        eps = actor.predict(x, i, obs)
        t, scale = actor.flow_t[i], actor.flow_scale[i]
        v = actor.to_velocity(x, eps, i)
        torch.testing.assert_close(eps_from_velocity(x / scale, v, t), actor.to_eps(x, eps, i), rtol=1e-4, atol=1e-4)
        x0 = actor.denoised(x, eps, i)  # the step's estimate of the action, a = x_t - t v
        torch.testing.assert_close(x / scale - t * v, x0, rtol=1e-4, atol=1e-4)
        inside = ((x - (1 - actor.abar[i]).sqrt() * eps) / actor.abar[i].sqrt()).abs() <= 1
        torch.testing.assert_close(actor.to_eps(x, eps, i)[inside], eps[inside], rtol=1e-4, atol=1e-4)
    flow = FlowActor(SPEC, hidden=(16,), num_steps=5)
    v = flow.predict(x, 2, obs)
    torch.testing.assert_close(velocity_from_eps(x, flow.to_eps(x, v, 2), flow.flow_t[2]), flow.to_velocity(x, v, 2))


@pytest.mark.parametrize("ddim_steps", [5, 20])
def test_a_ddim_actor_converted_to_velocity_samples_its_own_actions(ddim_steps):
    """DDIM (eta = 0) is Euler on the flow frame (derivation in robopol.policies.generative): integrate
    the actor's velocity by Euler over its own flow times and it lands on its own deterministic sample,
    x0 clipping included (the clip is active here: a random network's early x0 estimates are large)."""
    actor = DiffusionActor(SPEC, hidden=(32, 32), denoising_steps=20, ddim_steps=ddim_steps, ddim_eta=0.0)
    obs = torch.randn(8, 2, 3)
    noise = torch.zeros(actor.noise_shape(8))
    noise[:, 0] = torch.randn(8, 4, 2)
    with torch.no_grad():
        y, clipped = noise[:, 0] / actor.flow_scale[0], False
        for i in range(actor.num_sampling_steps):
            x = y * actor.flow_scale[i]
            eps = actor.predict(x, i, obs)
            clipped |= bool((actor.to_eps(x, eps, i) != eps).any())
            y = y - (actor.flow_t[i] - actor.flow_t[i + 1]) * actor.to_velocity(x, eps, i)
        assert clipped
        torch.testing.assert_close(y, actor.sample(obs, noise), rtol=1e-5, atol=1e-5)


def test_dppo_log_prob_bounds_are_validated():
    with pytest.raises(ConfigError, match="logprob_min"):
        DPPOConfig(logprob_min=2.0, logprob_max=-5.0)
