"""The temporal U-Net backbone: shapes, conditioning, receptive field, fitting two modes, its place in
the actors (config, DPPO's fine-tuned copy)."""

from __future__ import annotations

import pytest
import torch

from robopol.config import load_run_config
from robopol.errors import ConfigError
from robopol.policies.base import ChunkSpec
from robopol.policies.diffusion import DiffusionActor
from robopol.policies.flow import FlowActor
from robopol.policies.unet import TemporalUnet


def small_unet(obs_dim: int = 3, n_obs_steps: int = 2, act_dim: int = 2, horizon: int = 16) -> TemporalUnet:
    torch.manual_seed(0)
    return TemporalUnet(obs_dim, n_obs_steps, act_dim, horizon, down_dims=(16, 32, 64), kernel_size=5, groups=8,
                        time_dim=16).eval()


@pytest.mark.parametrize("horizon", [1, 2, 5, 8, 16])
def test_output_has_the_chunks_shape_for_any_horizon(horizon):
    net = small_unet(horizon=horizon)
    out = net(torch.randn(4, horizon, 2), torch.rand(4), torch.randn(4, 2, 3))
    assert out.shape == (4, horizon, 2)
    assert torch.isfinite(out).all()


def test_observation_and_time_condition_the_output():
    net = small_unet()
    x, t, obs = torch.randn(3, 16, 2), torch.full((3,), 0.5), torch.randn(3, 2, 3)
    with torch.no_grad():
        base = net(x, t, obs)
        other_obs = obs.clone()
        other_obs[:, 0, 1] += 1.0  # the older frame of the history counts too
        assert (net(x, t, other_obs) - base).abs().amax(dim=(1, 2)).min() > 1e-4
        assert (net(x, torch.full((3,), 0.9), obs) - base).abs().amax(dim=(1, 2)).min() > 1e-4
        # a scalar time broadcasts over the batch like a per-row one
        torch.testing.assert_close(net(x, torch.tensor(0.5), obs), base)


def test_receptive_field_covers_the_whole_horizon():
    """Changing the chunk's last action moves the prediction at its first step, 15 steps away."""
    net = small_unet()
    x, t, obs = torch.randn(2, 16, 2), torch.rand(2), torch.randn(2, 2, 3)
    moved = x.clone()
    moved[:, -1] += 1.0
    with torch.no_grad():
        change = (net(moved, t, obs) - net(x, t, obs)).abs()
    assert change[:, 0].amax(dim=-1).min() > 1e-5
    # and rows are independent: the batch is not mixed
    moved_one = x.clone()
    moved_one[0] += 1.0
    with torch.no_grad():
        torch.testing.assert_close(net(moved_one, t, obs)[1], net(x, t, obs)[1])


@pytest.mark.parametrize("kind", ["flow", "diffusion"])
def test_bc_with_the_unet_samples_both_modes_of_a_bimodal_dataset(kind):
    """Actions are +0.8 or -0.8 for the whole chunk, half each, for the same observation: a policy
    that averages gives ~0; one that fits samples both modes, near their values."""
    torch.manual_seed(0)
    spec = ChunkSpec(obs_dim=2, act_dim=1, n_obs_steps=1, horizon=4, n_action_steps=4)
    net = TemporalUnet(2, 1, 1, 4, down_dims=(16, 32), kernel_size=3, groups=4, time_dim=16)
    actor = FlowActor(spec, num_steps=10, net=net) if kind == "flow" else DiffusionActor(
        spec, denoising_steps=20, ddim_steps=10, ddim_eta=0.0, min_sampling_std=0.0, net=net)
    optimizer = torch.optim.Adam(actor.parameters(), lr=3e-3)
    obs = torch.full((64, 1, 2), 0.3)
    for _ in range(200):
        modes = torch.where(torch.rand(64, 1, 1) < 0.5, 0.8, -0.8)
        loss = actor.loss(obs, modes.expand(64, 4, 1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        chunk_means = actor.sample(obs.repeat(4, 1, 1), torch.randn(actor.noise_shape(256))).mean(dim=(1, 2))
    upper = (chunk_means > 0).float().mean()
    assert 0.25 < upper < 0.75, f"one mode dominates: {upper:.2f} of samples above 0"
    assert (chunk_means.abs() - 0.8).abs().median() < 0.15, "samples are not at the modes"


def test_backbone_is_a_setting_of_both_generative_actors():
    spec = ChunkSpec(obs_dim=5, act_dim=2, n_obs_steps=2, horizon=16, n_action_steps=8)
    flow = load_run_config(["task=pusht", "policy=bc_flow_pusht", "policy.actor.backbone=unet"]).policy.actor.build(spec)
    diffusion = load_run_config(["task=pusht", "policy=bc_diffusion_pusht", "policy.actor.backbone=unet",
                                 "policy.actor.down_dims=[16,32]"]).policy.actor.build(spec)
    assert isinstance(flow.velocity_net, TemporalUnet) and isinstance(diffusion.model, TemporalUnet)
    with pytest.raises(ConfigError, match=r"policy.actor.down_dims: \[12, 32\].*n_groups=8"):
        load_run_config(["task=pusht", "policy=bc_flow_pusht", "policy.actor.backbone=unet",
                         "policy.actor.down_dims=[12,32]"])


def test_dppo_fine_tunes_a_copy_of_the_unet_for_the_last_steps():
    torch.manual_seed(0)
    spec = ChunkSpec(obs_dim=3, act_dim=2, n_obs_steps=1, horizon=4, n_action_steps=4)
    net = TemporalUnet(3, 1, 2, 4, down_dims=(8, 16), kernel_size=3, groups=4, time_dim=8)
    actor = DiffusionActor(spec, denoising_steps=20, ddim_steps=5, ft_denoising_steps=2, net=net)
    actor.prepare_finetuning()
    obs = torch.randn(6, 1, 3)
    chain = actor.sample_chain(obs, torch.randn(actor.chain_noise_shape(6)))
    actor.chain_log_prob(obs, chain).sum().backward()
    assert isinstance(actor.ft_model, TemporalUnet)
    assert all(p.grad is None for p in actor.model.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in actor.ft_model.parameters() if p.requires_grad)
