"""GoRL: the latent actor and its identity decoder, the decoder's flow matching, the latent PPO ratio,
the stage switch's hand-over, learning on Reach, and a switched checkpoint exporting with parity.

Distances are per-dimension Wasserstein-1 (scipy) between sample sets of a few thousand points; each
bound sits well below the distance the same check measures without the trained decoder, so a decoder
that learned nothing fails it."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

from robopol.algos.gorl import GoRL, GoRLConfig
from robopol.checkpoint import load_checkpoint, load_policy
from robopol.config import CriticConfig, PolicyConfig, load_run_config
from robopol.export import export_checkpoint
from robopol.hardware.backend import EagerBackend, load_exported
from robopol.policies.base import ChunkSpec
from robopol.policies.latent_flow import LatentFlowActorConfig
from robopol.runner import Runner

BOUND = {"flow": 0.1, "ddim": 0.15}  # W1 of the hand-over; DDIM (10 of 20 steps) decodes less exactly (~0.12)


def make_gorl(obs_dim: int = 2, act_dim: int = 2, horizon: int = 1, decoder: str = "flow", **algo) -> GoRL:
    actor = LatentFlowActorConfig(hidden=[32, 32], decoder_hidden=[64, 64], decoder=decoder)
    policy = PolicyConfig(name="gorl", horizon=horizon, n_action_steps=horizon, actor=actor,
                          critic=CriticConfig(hidden=[16]), algo=GoRLConfig(**algo))
    return GoRL(policy, actor.build(ChunkSpec(obs_dim, act_dim, 1, horizon, horizon)))


def w1_per_dim(x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Wasserstein-1 distance of each action dimension between two (N, ..., A) sample sets."""
    x, y = x.reshape(-1, x.shape[-1]).numpy(), y.reshape(-1, y.shape[-1]).numpy()
    return [wasserstein_distance(x[:, d], y[:, d]) for d in range(x.shape[1])]


def test_identity_decoder_at_initialisation():
    algo = make_gorl(horizon=3)
    actor = algo.actor
    obs, noise = torch.randn(5, 1, 2), torch.randn(5, 3, 2)
    z = actor.latent.sample(obs, noise)
    assert algo.stage == 0
    torch.testing.assert_close(actor.decode(obs, z), z, rtol=0, atol=0)
    torch.testing.assert_close(actor.sample(obs, noise), torch.tanh(z), rtol=0, atol=0)
    # A fresh latent policy is N(0, I) up to its 0.01-gain mean head.
    assert actor.latent.log_std.eq(0).all() and actor.latent.mean(obs).abs().max() < 0.1


def test_latent_log_prob_ratio_is_one_before_an_update():
    algo = make_gorl(horizon=2)
    algo.actor.stage.fill_(1)  # through a (random) decoder too: the ratio is the latent's, whatever decodes it
    obs = torch.randn(64, 1, 2)
    with torch.inference_mode():
        actions, extras = algo.act(obs)
    torch.testing.assert_close(algo.actor.latent_log_prob(algo.actor.latent.mean(obs), extras["latent"]), extras["log_prob"])
    batch = {"obs": obs, "actions": actions, **extras}
    out = algo.policy_loss(batch, torch.randn(64))
    assert out["approx_kl"].abs() < 1e-6 and out["clip_fraction"] == 0
    # Every latent element is scored, also those of chunk steps the env never executes.
    elements = 2 * 2
    assert extras["log_prob"].mean() == pytest.approx(-elements * 0.5 * (1 + math.log(2 * math.pi)), abs=0.5)


def test_stage_anneal_decays_the_learning_rates_to_zero_over_each_stage():
    """Stages of 100 and 50 env steps, then a last stage that decays over the last listed length (50)."""
    algo = make_gorl(stage_anneal=True, stage_env_steps=[100, 50])
    algo.between_iterations(50, collect=None, evaluate=None)  # no switch due: it only records the env steps
    assert algo.env_steps == 50 and algo.lr_scale(progress=0.9) == pytest.approx(0.5)
    for stage, env_steps, expected in [(0, 0, 1.0), (0, 100, 0.0), (1, 120, 0.6), (2, 175, 0.5), (2, 260, 0.0)]:
        algo.actor.stage.fill_(stage)
        algo.env_steps = env_steps
        assert algo.lr_scale(progress=0.9) == pytest.approx(expected), (stage, env_steps)
    # Without it GoRL keeps the on-policy rule: gorl.yaml's anneal_lr false is a constant rate.
    assert make_gorl(anneal_lr=False).lr_scale(progress=0.9) == 1.0
    # Resume restores the env steps the factor reads.
    algo.env_steps = 125
    restored = make_gorl(stage_anneal=True, stage_env_steps=[100, 50])
    restored.load_state_dict(algo.state_dict())
    restored.actor.stage.fill_(1)
    assert restored.lr_scale(progress=0.0) == pytest.approx(0.5)


def test_decoder_maps_standard_normal_onto_a_two_mode_mixture():
    torch.manual_seed(1)
    n = 4096
    mode = torch.randint(0, 2, (n, 1)).float() * 4 - 2  # +-2
    target = torch.cat([mode + 0.2 * torch.randn(n, 1), 0.5 + 0.3 * torch.randn(n, 1)], dim=1).unsqueeze(1)
    algo = make_gorl(decoder_steps=1000, decoder_batch=256, decoder_lr=1e-3)
    algo.decoder_data = {"obs": torch.randn(n, 1, 2), "actions": torch.tanh(target)}  # executed: tanh(pre-squash)
    algo.switch_stage()
    assert algo.stage == 1
    with torch.no_grad():
        decoded = algo.actor.decode(torch.randn(n, 1, 2), torch.randn(n, 1, 2))
    without = w1_per_dim(torch.randn(n, 1, 2), target)  # the identity decoder: about 1.2 and 0.67
    got = w1_per_dim(decoded, target)
    print(f"W1 per dimension: decoded {got}, identity {without}")
    assert got[0] < 0.25 and without[0] > 1.0
    assert got[1] < 0.1 and without[1] > 0.5
    # Both modes are populated, in about equal shares, and little mass is left between them (N(0, 1): 68%).
    assert 0.4 < (decoded[:, 0, 0] > 0).float().mean() < 0.6
    assert (decoded[:, 0, 0].abs() < 1).float().mean() < 0.2


@pytest.mark.parametrize("decoder", ["flow", "ddim"])
def test_stage_switch_hands_the_behaviour_to_a_fresh_latent_policy(decoder):
    torch.manual_seed(2)
    algo = make_gorl(decoder=decoder, decoder_steps=800, decoder_batch=256, decoder_lr=1e-3)
    actor = algo.actor
    with torch.no_grad():  # a previous policy whose actions depend on the state
        actor.latent.mean_net[-1].weight.normal_(0, 0.3)
        actor.latent.log_std.fill_(math.log(0.4))
    states = torch.tensor([[[-1.5, 0.0]], [[0.0, 1.5]], [[1.5, 0.0]], [[0.0, -1.5]]])
    obs = states.repeat_interleave(1024, dim=0)
    algo.optimizer.state[actor.latent.log_std] = {"step": torch.tensor(3.0)}  # stands for a trained policy's Adam state
    with torch.inference_mode():
        actions, _ = algo.act(obs)
    previous = copy.deepcopy(actor)
    algo.decoder_data = {"obs": obs, "actions": actions.clone()}
    algo.switch_stage()

    assert algo.stage == 1 and actor.latent.log_std.eq(0).all()
    assert not any(p in algo.optimizer.state for p in actor.latent.parameters())
    with torch.no_grad():
        for state in states:
            s = state.expand(2000, 1, 2)
            before = previous.sample(s, torch.randn(2000, 1, 2))
            after = actor.sample(s, torch.randn(2000, 1, 2))
            fresh_identity = torch.tanh(actor.latent.sample(s, torch.randn(2000, 1, 2)))
            got, without = w1_per_dim(after, before), w1_per_dim(fresh_identity, before)
            print(f"state {state.tolist()}: W1 {got} (fresh latent without the decoder: {without})")
            assert max(got) < BOUND[decoder] and max(without) > 0.25


def _reach_overrides(**extra: str) -> list[str]:
    settings = {"task": "reach", "policy": "gorl", "train.rollout_steps": "64", "train.eval_every": "0",
                "train.eval_episodes": "16", "train.progress": "false", "train.video": "false", "train.seed": "3",
                "policy.algo.decoder_steps": "150", "policy.algo.decoder_batch": "256",
                "policy.algo.eval_at_switch": "false", **extra}
    return [f"{k}={v}" for k, v in settings.items()]


@pytest.mark.slow
def test_gorl_improves_reach_across_a_stage_switch(tmp_path):
    cfg = load_run_config(_reach_overrides(**{"train.total_env_steps": "16000",
                                              "policy.algo.stage_env_steps": "[8000]"}))
    trainer = Runner(cfg, tmp_path)
    before = trainer.evaluate()["return_mean"]
    after = trainer.run()["return_mean"]
    print(f"gorl: evaluation return {before:.1f} -> {after:.1f}")
    assert trainer.algo.stage == 1
    assert after > before + 8, f"gorl: evaluation return {before:.1f} -> {after:.1f}"


@pytest.mark.parametrize("decoder", ["flow", "ddim"])
def test_switched_gorl_checkpoint_exports_with_parity(tmp_path, decoder):
    cfg = load_run_config(_reach_overrides(**{"train.total_env_steps": "1024", "policy.algo.stage_env_steps": "[512]",
                                              "policy.algo.decoder_steps": "20", "train.eval_episodes": "1",
                                              "sim.num_envs": "2", "policy.actor.decoder": decoder}))
    Runner(cfg, tmp_path / "run").run()
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.trainer_state()["algo"]["decoder_data"]["actions"].shape[1:] == (1, 2)
    policy = load_policy(ckpt)
    assert int(policy.actor.stage) == 1
    meta = export_checkpoint(tmp_path / "run", tmp_path / "export")
    assert all(meta["files"][fmt]["max_abs_diff"] <= 1e-4 for fmt in ("onnx", "torchscript"))
    obs = np.random.default_rng(0).normal(size=(1, 1, policy.obs_dim)).astype(np.float32)
    noise = np.random.default_rng(1).normal(size=policy.noise_shape(1)).astype(np.float32)
    np.testing.assert_allclose(load_exported(tmp_path / "export", "onnx")(obs, noise),
                               EagerBackend(policy)(obs, noise), atol=1e-4, rtol=0)
    # The graph holds the trained decoder, not the identity: the latent mean alone would give other actions.
    with torch.no_grad():
        t_obs = policy.normalizer.normalize_obs(torch.from_numpy(obs))
        identity = policy.normalizer.unnormalize_action(torch.tanh(policy.actor.latent.mean(t_obs))).numpy()
    assert np.abs(EagerBackend(policy)(obs, np.zeros_like(noise)) - identity).max() > 1e-3
