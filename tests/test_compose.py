"""GPC composition (robopol.policies.composed, robopol.compose): weights (1, 0) are parent 1 to the bit,
the cross-family conversion is exact on the shared flow frame, mismatched parents are refused in one
line, and a composed checkpoint evaluates, exports with parity and runs in the deploy loop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from deploy_fixtures import pendulum_config, tiny_policy

from robopol.checkpoint import load_policy, save_checkpoint
from robopol.cli import main
from robopol.compose import weight_grid
from robopol.config import load_run_config
from robopol.data.normalizer import Normalizer
from robopol.policies.base import ChunkSpec
from robopol.policies.composed import ComposedPolicy, diffusion_velocity, timestep_at
from robopol.policies.diffusion import DiffusionActor
from robopol.policies.generative import eps_from_velocity, velocity_from_eps

PAIRS = [("ddim", "ddim"), ("flow", "flow"), ("ddim", "flow"), ("flow", "ddim"), ("ddpm", "ddpm")]


def _ddim_flow_same_k(kind: str, seed: int):
    """tiny_policy with 10 sampling steps for both families (DDIM 10 of 20), so any two compose."""
    p = tiny_policy(kind, seed=seed)
    if kind == "ddim":
        torch.manual_seed(seed)
        actor = DiffusionActor(p.actor.spec, hidden=(32, 32), denoising_steps=20, ddim_steps=10, ddim_eta=0.0)
        p = type(p)({"actor": actor}, p.normalizer).eval()
    return p


@pytest.mark.parametrize("first,second", PAIRS)
def test_weights_one_zero_reproduce_the_first_parent_bit_for_bit(first, second):
    make = (lambda kind, seed: tiny_policy(kind, seed=seed)) if first == "ddpm" else _ddim_flow_same_k
    a, b = make(first, 0), make(second, 1)
    composed = ComposedPolicy([a, b], [1.0, 0.0]).eval()
    obs = torch.randn(3, a.n_obs_steps, a.obs_dim)
    noise = torch.randn(a.noise_shape(3))
    with torch.no_grad():
        assert torch.equal(composed(obs, noise), a(obs, noise))
        assert not torch.equal(ComposedPolicy([a, b], [0.5, 0.5])(obs, noise), a(obs, noise))


@pytest.mark.parametrize("kind", ["ddim", "flow", "ddpm"])
def test_a_parent_composed_with_itself_is_itself_for_any_weights(kind):
    a = tiny_policy(kind) if kind == "ddpm" else _ddim_flow_same_k(kind, 0)
    obs, noise = torch.randn(2, a.n_obs_steps, a.obs_dim), torch.randn(a.noise_shape(2))
    with torch.no_grad():
        mixed = ComposedPolicy([a, a], [0.3, 0.7])(obs, noise)
        torch.testing.assert_close(mixed, a(obs, noise), atol=1e-5, rtol=0)


def test_eps_velocity_round_trip_and_a_flow_eps_is_the_vp_eps():
    x_t, v, t = torch.randn(4, 8, 2), torch.randn(4, 8, 2), torch.rand(4, 1, 1) * 0.98 + 0.01
    eps = eps_from_velocity(x_t, v, t)
    torch.testing.assert_close(velocity_from_eps(x_t, eps, t), v, atol=1e-4, rtol=1e-4)
    # the VP state of the same point, x_k = x_t / r, decodes with that eps to the flow's action a = x_t - t v
    r = ((1 - t) ** 2 + t**2).sqrt()
    abar = (1 - t) ** 2 / r**2
    torch.testing.assert_close((x_t / r - (1 - abar).sqrt() * eps) / abar.sqrt(), x_t - t * v, atol=1e-4, rtol=1e-4)


def test_a_diffusion_parent_converted_to_velocity_samples_its_own_actions():
    d = _ddim_flow_same_k("ddim", 0).actor
    torch.testing.assert_close(timestep_at(d, d.flow_t[:-1]), d.k_frac, atol=1e-5, rtol=0)
    obs, x = torch.randn(3, 2, 4), torch.randn(3, 8, 1)
    with torch.no_grad():
        own = d.sample(obs, torch.cat([x[:, None], torch.zeros(3, d.num_sampling_steps, 8, 1)], dim=1))
        x_t = x / d.flow_scale[0]
        for i in range(d.num_sampling_steps):  # Euler on the flow frame over the converted predictions
            t = d.flow_t[i]
            x_t = x_t - (t - d.flow_t[i + 1]) * diffusion_velocity(d, x_t, t, timestep_at(d, t).expand(3), obs)
    torch.testing.assert_close(x_t, own, atol=1e-4, rtol=0)


def test_weight_grid_is_convex_and_complete():
    two = weight_grid(2)
    assert len(two) == 11 and two[0] == (0.0, 1.0) and two[-1] == (1.0, 0.0) and (0.3, 0.7) in two
    three = weight_grid(3)
    assert len(three) == 66 and all(abs(sum(w) - 1) < 1e-9 and min(w) >= 0 for w in three)


def _checkpoint(root: Path, name: str, policy: str, *overrides: str, bound: float = 3.0) -> Path:
    """A checkpoint of an untrained tiny InvertedPendulum actor: no training, just the files."""
    cfg = load_run_config(["task=inverted_pendulum", f"policy={policy}", "policy.actor.hidden=[32,32]",
                           f"train.run_dir={root / name}", *overrides])
    pol = cfg.policy
    spec = ChunkSpec(4, 1, pol.n_obs_steps, pol.horizon, pol.n_action_steps)
    actor = pol.actor.build(spec)
    normalizer = Normalizer(4, -bound * np.ones(1), bound * np.ones(1))
    save_checkpoint(root / name, cfg, spec, 0, {"actor": actor, "normalizer": normalizer}, {})
    return root / name


@pytest.fixture(scope="module")
def parents(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gpc")
    return {"diffusion": _checkpoint(root, "d", "bc_diffusion", "policy.actor.ddim_steps=10", "policy.actor.ddim_eta=0"),
            "flow": _checkpoint(root, "f", "bc_flow", "policy.n_obs_steps=1"),
            "horizon16": _checkpoint(root, "h", "bc_flow", "policy.horizon=16"),
            "bounds": _checkpoint(root, "b", "bc_flow", bound=2.0),
            "ddpm": _checkpoint(root, "p", "bc_diffusion")}


@pytest.mark.parametrize("other,reason", [
    ("horizon16", r"horizon differs: 8 in \S+, 16 in \S+"),
    ("bounds", r"action normalisation differs: action_low \[-3.0\] in \S+, \[-2.0\] in \S+"),
    ("ddpm", r"step schedule differs: 10 sampling steps in \S+, 20 in \S+")])
def test_a_mismatched_pair_is_refused_in_one_line_naming_the_reason(parents, other, reason, tmp_path, capsys):
    code = main(["compose", str(parents["flow"]), str(parents[other]), "--weights", "0.5", "0.5", "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("error: cannot compose: ")
    assert __import__("re").search(reason, err), err
    assert not (tmp_path / "c").exists()


def test_weights_that_are_not_convex_are_refused(parents, tmp_path, capsys):
    code = main(["compose", str(parents["flow"]), str(parents["diffusion"]), "--weights", "0.5", "0.6", "--out", str(tmp_path / "c")])
    assert code == 2 and "--weights: [0.5, 0.6] must be >= 0 and sum to 1" in capsys.readouterr().err


@pytest.fixture(scope="module")
def composed(parents, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("composed") / "df"
    assert main(["compose", str(parents["diffusion"]), str(parents["flow"]), "--weights", "0.6", "0.4", "--out", str(out)]) == 0
    return out


def test_a_composed_checkpoint_loads_as_its_parents_mixed(composed, parents):
    policy = load_policy(composed)
    assert isinstance(policy, ComposedPolicy) and policy.weights.tolist() == pytest.approx([0.6, 0.4])
    assert policy.n_obs_steps == 2 and [p.n_obs_steps for p in policy.parents] == [2, 1]
    assert json.loads((composed / "config.json").read_text())["config"]["policy"]["n_obs_steps"] == 2
    policy.weights.copy_(torch.tensor([1.0, 0.0]))
    obs, noise = torch.randn(2, 2, 4), torch.randn(policy.noise_shape(2))
    with torch.no_grad():
        assert torch.equal(policy(obs, noise), load_policy(parents["diffusion"])(obs, noise))


def test_a_composed_checkpoint_evaluates_through_the_cli(composed, tmp_path, capsys):
    assert main(["eval", str(composed), "--episodes", "2", "--no-video", "--out", str(tmp_path)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["episodes"] == 2 and result["length_mean"] >= 1


def test_a_composed_checkpoint_exports_one_graph_with_parity(composed, tmp_path):
    from robopol.export import export_checkpoint

    meta = export_checkpoint(composed, tmp_path)
    assert set(meta["files"]) == {"onnx", "torchscript"} and meta["n_obs_steps"] == 2
    assert all(f["max_abs_diff"] <= 1e-4 for f in meta["files"].values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.json", "policy.onnx", "policy.ts"]


def test_a_composed_checkpoint_runs_in_the_deploy_loop(composed, tmp_path):
    from robopol.hardware.deploy import run_deploy

    summary = run_deploy(pendulum_config(), composed, cycles=30, log_path=tmp_path / "log.csv", echo=False)
    assert summary["cycles"] == 30 and summary["clamps"]["nonfinite"] == 0


def test_the_weight_search_scores_every_grid_point_and_keeps_the_best(parents, tmp_path, capsys):
    out = tmp_path / "searched"
    assert main(["compose", str(parents["diffusion"]), str(parents["flow"]), "--search-episodes", "2", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    search = json.loads(Path(f"{out}-search.json").read_text())
    assert [tuple(s["weights"]) for s in search["scores"]] == weight_grid(2)
    assert all(s["episodes"] == 2 for s in search["scores"]) and search["episodes"] == 2
    best = max(search["scores"], key=lambda s: (s["success_rate"], s["return_mean"]))
    assert search["chosen"] == best["weights"] == result["weights"]
    assert load_policy(out).weights.tolist() == pytest.approx(best["weights"])
    assert Path(f"{out}-search.png").stat().st_size > 0


def _pusht_checkpoint(root: Path, name: str, obs_type: str, obs_dim: int, seed: int) -> Path:
    """An untrained tiny PushT flow actor observing `obs_type`, with the env's action bounds."""
    cfg = load_run_config(["task=pusht", "policy=bc_flow", f"task.env_kwargs.obs_type={obs_type}",
                           "task.env_kwargs.max_episode_steps=6", "policy.actor.hidden=[32,32]", "policy.n_obs_steps=1",
                           f"train.run_dir={root / name}"])
    torch.manual_seed(seed)
    pol = cfg.policy
    spec = ChunkSpec(obs_dim, 2, pol.n_obs_steps, pol.horizon, pol.n_action_steps)
    normalizer = Normalizer(obs_dim, np.zeros(2), 512 * np.ones(2))
    normalizer.fit(torch.rand(64, obs_dim) * 512, None)
    save_checkpoint(root / name, cfg, spec, 0, {"actor": pol.actor.build(spec), "normalizer": normalizer}, {})
    return root / name


def test_parents_on_different_observation_keys_compose_on_an_env_that_observes_both(tmp_path, capsys):
    """PushT "state" and "keypoints" parents: the composition steps PushT's "state_keypoints" env and each
    parent reads its own keys from it, so weights (1, 0) and (0, 1) are each parent on its own observation."""
    from robopol.export import export_checkpoint
    from robopol.sim.pusht import make_pusht_env

    state, keys = _pusht_checkpoint(tmp_path, "s", "state", 5, 0), _pusht_checkpoint(tmp_path, "k", "keypoints", 18, 1)
    out = tmp_path / "sk"
    assert main(["compose", str(state), str(keys), "--weights", "1", "0", "--out", str(out)]) == 0
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["task"]["env_kwargs"]["obs_type"] == "state_keypoints" and meta["spec"]["obs_dim"] == 23
    policy, own = load_policy(out), [load_policy(state), load_policy(keys)]
    shared = torch.as_tensor(make_pusht_env({"obs_type": "state_keypoints"}, None).reset(seed=3)[0])[None, None]
    noise = torch.randn(policy.noise_shape(1))
    with torch.no_grad():
        assert torch.equal(policy(shared, noise), own[0](shared[..., :5], noise))
        policy.weights.copy_(torch.tensor([0.0, 1.0]))
        assert torch.equal(policy(shared, noise), own[1](shared[..., 5:], noise))
    assert main(["eval", str(out), "--episodes", "2", "--no-video", "--out", str(tmp_path / "eval")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["episodes"] == 2
    exported = export_checkpoint(out, tmp_path / "export", formats=("onnx",))
    assert exported["obs_dim"] == 23 and exported["files"]["onnx"]["max_abs_diff"] <= 1e-4


def test_observation_keys_no_task_setting_observes_together_are_refused_in_one_line():
    from robopol.config import TaskConfig
    from robopol.errors import ConfigError
    from robopol.sim.observation_keys import index_of, shared_observation

    assert index_of((("state", 5), ("keypoint", 16), ("agent_pos", 2)), (("keypoint", 16), ("agent_pos", 2))) == list(range(5, 23))
    same = TaskConfig(name="pusht", backend="pusht", env_kwargs={"obs_type": "state"})
    assert shared_observation([same, same], [5, 5], ["a", "b"]) == (same, 5, None)
    hopper = TaskConfig(name="hopper")
    with pytest.raises(ConfigError, match=r"^cannot compose: observation keys differ and no setting of task 'hopper' "
                                          r"observes them together: obs \(11\) in a; obs \(12\) in b$"):
        shared_observation([hopper, hopper], [11, 12], ["a", "b"])
