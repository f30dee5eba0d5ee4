"""QGF: the Q-gradient and the guided sampler (w = 0 is BC bit-for-bit, guidance raises Q, the
clipped endpoint keeps its gradient), IQL's expectile loss and chunk returns by hand, an IQL critic
ranking a good action above a bad one, the guided sampler's export parity, and `pretrain` -> a
checkpoint whose evaluation-time settings `robopol eval` changes."""

import dataclasses
import json

import h5py
import numpy as np
import pytest
import torch

from robopol.algos.qgf import QGF, QGFConfig, expectile_loss
from robopol.checkpoint import load_checkpoint, load_policy, restore_actor
from robopol.cli import main
from robopol.config import CriticConfig, PolicyConfig, load_run_config
from robopol.critics import QEnsemble
from robopol.data.chunk_returns import chunk_returns
from robopol.data.episodes import Episode
from robopol.data.normalizer import Normalizer
from robopol.data.robomimic_hdf5 import read_robomimic_hdf5, write_robomimic_hdf5
from robopol.demos import parse_mix, write_demonstrations
from robopol.errors import ConfigError, DataError
from robopol.export import export_policy
from robopol.policies.base import ChunkSpec
from robopol.policies.bundle import PolicyBundle
from robopol.policies.flow import FlowActor, FlowActorConfig
from robopol.policies.guidance import QGuidedFlow, min_q_gradient, q_and_action_gradient
from robopol.runner import train
from robopol.sim import pusht

SPEC = ChunkSpec(obs_dim=3, act_dim=2, n_obs_steps=1, horizon=4, n_action_steps=2)


def _flow_and_critic(layer_norm: bool = True, activation: str = "silu") -> tuple[FlowActor, QEnsemble]:
    flow = FlowActor(SPEC, (32, 32), num_steps=5)
    critic = QEnsemble(SPEC.obs_dim, 1, SPEC.act_dim, SPEC.horizon, 2, (32, 32), activation, layer_norm)
    return flow, critic


def test_zero_weight_samples_exactly_as_the_bc_flow():
    flow, critic = _flow_and_critic()
    obs, noise = torch.randn(16, 1, 3), torch.randn(16, 4, 2)
    assert torch.equal(QGuidedFlow(flow, critic, weight=0.0).sample(obs, noise), flow.sample(obs, noise))


def test_guidance_raises_the_critics_q_of_sampled_actions():
    flow, critic = _flow_and_critic()
    obs, noise = torch.randn(64, 1, 3), torch.randn(64, 4, 2)
    q = [critic(obs, QGuidedFlow(flow, critic, w).sample(obs, noise)).min(0).values.mean().item() for w in (0, 0.5, 2)]
    assert q[0] < q[1] < q[2]
    best = QGuidedFlow(flow, critic, 0.0, best_of_n=8).sample(obs, torch.randn(64, 8, 4, 2))
    assert critic(obs, best).min(0).values.mean().item() > q[0]  # best-of-8 by Q beats one draw


@pytest.mark.parametrize("activation", ["silu", "mish", "tanh", "relu"])
@pytest.mark.parametrize("layer_norm", [True, False])
def test_hand_written_q_gradient_is_autograds(activation, layer_norm):
    _, critic = _flow_and_critic(layer_norm, activation)
    obs, actions = torch.randn(7, 1, 3), torch.randn(7, 4, 2, requires_grad=True)
    values, grads = q_and_action_gradient(critic, obs, actions)
    torch.testing.assert_close(values, critic(obs, actions))
    for head in range(2):
        expected, = torch.autograd.grad(critic(obs, actions)[head].sum(), actions)
        torch.testing.assert_close(grads[head], expected)
    lowest = critic(obs, actions).argmin(0)
    torch.testing.assert_close(min_q_gradient(critic, obs, actions), grads[lowest, torch.arange(7)])


def test_the_clipped_endpoint_keeps_its_gradient_at_the_bounds():
    """Q = -(sum of actions): guidance should pull an endpoint beyond +1 back down. A hard clip's
    derivative is zero there; the straight-through clip passes Q's gradient at the bound (-1)."""
    flow, _ = _flow_and_critic()
    critic = QEnsemble(SPEC.obs_dim, 1, SPEC.act_dim, SPEC.horizon, 1, (), "relu")
    with torch.no_grad():
        critic.net[0].weight.copy_(torch.cat([torch.zeros(3), -torch.ones(8)]).view(1, 11, 1))
        critic.net[0].bias.zero_()
    obs, x = torch.zeros(1, 1, 3), torch.zeros(1, 4, 2)
    i, pred = 0, torch.full((1, 4, 2), -1.5)  # flow_t[0] = 1, so the endpoint x - t v is +1.5 everywhere
    endpoint = (x - flow.flow_t[i] * pred).requires_grad_(True)
    hard, = torch.autograd.grad(critic(obs, endpoint.clamp(-1, 1)).sum(), endpoint)
    assert torch.equal(hard, torch.zeros_like(hard))  # what a plain clip would silently do
    guided = QGuidedFlow(flow, critic, weight=0.1).guide(i, x, pred, obs)
    torch.testing.assert_close(guided, pred + 0.1)  # v - w g with g = -1 at the clipped endpoint


def test_expectile_loss_by_hand():
    diff = torch.tensor([2.0, -1.0, 0.5, -3.0])  # target - V
    # tau = 0.9 weighs positive differences 0.9 and negative ones 0.1
    expected = (0.9 * 4 + 0.1 * 1 + 0.9 * 0.25 + 0.1 * 9) / 4
    assert expectile_loss(diff, 0.9).item() == pytest.approx(expected)


def _episode(rewards, solved: bool, obs: np.ndarray | None = None, action: float = 0.0) -> Episode:
    steps = len(rewards)
    obs = np.arange(steps, dtype=np.float32)[:, None] if obs is None else obs
    return Episode(obs={"x": obs}, next_obs={"x": obs + 1}, actions=np.full((steps, 1), action, np.float32),
                   rewards=np.asarray(rewards, np.float32), dones=np.eye(steps, dtype=bool)[-1],
                   successes=np.eye(steps, dtype=bool)[-1] & solved)


def test_chunk_returns_by_hand():
    """2 executed actions, gamma 0.5: a solved episode is not bootstrapped at its end, a truncated one is."""
    solved, truncated = _episode([0, 0, 0, 1], True), _episode([0, 0, 2], False)
    frames = [np.concatenate([e.obs["x"], e.next_obs["x"][-1:]]) for e in (solved, truncated)]
    data = chunk_returns([solved, truncated], frames, [e.actions for e in (solved, truncated)],
                         [e.rewards for e in (solved, truncated)], 1, 3, 2, 0.5)
    np.testing.assert_allclose(data.reward, [0, 0, 0.5, 1, 0, 1, 2])
    np.testing.assert_allclose(data.bootstrap, [0.25, 0.25, 0, 0, 0.25, 0.25, 0.5])
    batch = data.batch(torch.arange(7))
    np.testing.assert_allclose(batch["next_obs"].flatten(), [2, 3, 4, 4, 2, 3, 3])  # frame 4 / 3: the final obs
    np.testing.assert_allclose(batch["obs"].flatten(), [0, 1, 2, 3, 0, 1, 2])


def test_iql_critic_ranks_a_good_action_above_a_bad_one():
    """From the same states, action +0.8 solves the task at once (reward 1), -0.8 wanders for 6 steps
    and is truncated without reward: Q(s, good) = 1 and Q(s, bad) = gamma V(s') <= gamma = 0.5."""
    rng = np.random.default_rng(0)
    episodes = []
    for _ in range(20):
        start = rng.normal(size=(1, 1)).astype(np.float32)
        episodes.append(_episode([1.0], True, start, 0.8))
        episodes.append(_episode([0.0] * 6, False, np.repeat(start, 6, 0), -0.8))
    spec = ChunkSpec(obs_dim=1, act_dim=1, n_obs_steps=1, horizon=1, n_action_steps=1)
    policy = PolicyConfig(name="qgf", n_obs_steps=1, horizon=1, n_action_steps=1, actor=FlowActorConfig(hidden=[16]),
                          critic=CriticConfig(hidden=[32, 32], activation="silu"),
                          algo=QGFConfig(train_actor=False, gamma=0.5, target_tau=0.05, critic_lr=3e-3))
    algo = QGF(policy, policy.actor.build(spec))
    data = chunk_returns(episodes, [np.concatenate([e.obs["x"], e.next_obs["x"][-1:]]) for e in episodes],
                         [e.actions for e in episodes], [e.rewards for e in episodes], 1, 1, 1, 0.5)
    for _ in range(300):
        algo.update(data.batch(torch.randint(len(data), (64,))))
    obs = torch.zeros(1, 1, 1)
    good, bad = (algo.q_target.target(obs, torch.full((1, 1, 1), a)).min(0).values.item() for a in (0.8, -0.8))
    assert good > 0.8 and bad < 0.6


def test_chunk_returns_sum_the_reward_the_config_names():
    spec = ChunkSpec(obs_dim=1, act_dim=1, n_obs_steps=1, horizon=1, n_action_steps=1)
    ep = _episode([0.3, 0.7, 0.9], True)
    rewards = {}
    for kind in ("file", "success", "ogbench"):
        policy = PolicyConfig(name="qgf", actor=FlowActorConfig(hidden=[8]), algo=QGFConfig(reward=kind))
        rewards[kind] = QGF(policy, policy.actor.build(spec)).step_rewards(ep).tolist()
    assert rewards == {"file": pytest.approx([0.3, 0.7, 0.9]), "success": [0, 0, 1], "ogbench": [-1, -1, 0]}
    with pytest.raises(DataError, match="policy.algo.reward=ogbench: .* records no per-step success"):
        QGF(policy, policy.actor.build(spec)).step_rewards(dataclasses.replace(ep, successes=None))


def test_guided_sampler_exports_with_parity(tmp_path):
    flow, critic = _flow_and_critic()
    normalizer = Normalizer(3, -np.ones(2), np.ones(2))
    for n in (1, 3):
        policy = PolicyBundle({"actor": QGuidedFlow(flow, critic, weight=0.1, best_of_n=n)}, normalizer).eval()
        meta = export_policy(policy, tmp_path / f"n{n}")  # raises ExportError when a backend is off by > 1e-4
        assert meta["files"]["onnx"]["max_abs_diff"] <= 1e-4 and meta["files"]["torchscript"]["max_abs_diff"] <= 1e-4
        assert meta["noise_shape"] == ([1, 4, 2] if n == 1 else [1, n, 4, 2])


def test_mix_parsing_and_a_mixed_file_records_success_and_its_mix(tmp_path):
    assert [(p.behaviour, p.noise, p.episodes) for p in parse_mix("0.15:2, random:1")] == [
        ("expert", 0.15, 2), ("random", 0.0, 1)]
    for bad in ("0.1", "x:2", "0.1:0", "-1:3"):
        with pytest.raises(ConfigError, match="--mix: .* is not NOISE:COUNT"):
            parse_mix(bad)
    stats = write_demonstrations("pusht", 0, tmp_path / "mix.hdf5", seed=1000, mix=parse_mix("2.0:1,random:1"))
    assert [p["behaviour"] for p in stats["mix"]] == ["expert", "random"] and stats["mix"][1]["seeds"] == [1001, 1001]
    with h5py.File(tmp_path / "mix.hdf5") as f:
        assert json.loads(f["data"].attrs["mix"]) == stats["mix"]
    expert, random = read_robomimic_hdf5(tmp_path / "mix.hdf5", "pusht").episodes
    assert expert.successes[-1] and expert.successes.sum() == 1  # the expert solved it, on its last step
    assert not random.successes.any() and len(random) == 300  # uniform actions fail and run to the horizon
    with pytest.raises(ConfigError, match="--mix: mixed-quality files are robomimic HDF5"):
        write_demonstrations("pusht", 0, tmp_path / "mix.zarr", mix=parse_mix("2.0:1"))


@pytest.fixture(scope="module")
def qgf_run(tmp_path_factory):
    rng = np.random.default_rng(0)
    episodes = []
    for i in range(8):  # PushT states; the action a fixed function of the state; every other episode solved
        state = np.column_stack([rng.uniform(100, 400, (12, 4)), rng.uniform(0, 6, 12)]).astype(np.float32)
        episodes.append(Episode(obs={"state": state}, actions=state[:, :2] + 30, rewards=np.zeros(12, np.float32),
                                dones=np.eye(12, dtype=bool)[-1], successes=np.eye(12, dtype=bool)[-1] & (i % 2 == 0)))
    env_args = {"env_name": pusht.ENV_ID, "type": 2, "env_kwargs": {"obs_type": "state"}}
    dataset = write_robomimic_hdf5(tmp_path_factory.mktemp("demos") / "pusht.hdf5", episodes, env_args)
    cfg = load_run_config(["task=pusht", "policy=qgf", f"policy.algo.dataset={dataset}", "policy.algo.reward=success",
                           "policy.n_obs_steps=1", "policy.horizon=2", "policy.n_action_steps=2",
                           "policy.actor.hidden=[32,32]", "policy.critic.hidden=[32,32]", "policy.algo.num_steps=40",
                           "policy.algo.batch_size=32", "task.env_kwargs.max_episode_steps=8", "train.eval_episodes=1",
                           "train.video=false", "train.progress=false"])
    return train(cfg, tmp_path_factory.mktemp("qgf"))[0]


def test_a_qgf_checkpoint_serves_bc_at_w0_and_guides_when_told(qgf_run, tmp_path, capsys):
    ckpt = load_checkpoint(qgf_run)
    assert {"q_loss", "v_loss"} <= set((qgf_run / "offline.csv").read_text().splitlines()[0].split(","))
    obs, noise = torch.randn(5, 1, 5) * 50 + 250, torch.randn(5, 2, 2)
    bc = PolicyBundle({"actor": restore_actor(ckpt)}, load_policy(ckpt).normalizer).eval()
    assert torch.equal(load_policy(ckpt)(obs, noise), bc(obs, noise))  # w = 0: the BC actor's samples, bit for bit
    from robopol.eval_settings import with_eval_settings

    guided = load_policy(with_eval_settings(ckpt, ["policy.algo.guidance_weight=0.5"]))
    assert not torch.equal(guided(obs, noise), bc(obs, noise))
    assert main(["eval", str(qgf_run), "policy.algo.guidance_weight=0.02", "--episodes", "1", "--no-video",
                 "--out", str(tmp_path / "e")]) == 0
    assert json.loads((tmp_path / "e" / "result.json").read_text())["episodes"] == 1
    assert main(["eval", str(qgf_run), "policy.algo.lr=1", "--no-video"]) == 2
    assert "error: policy.algo.lr: not an evaluation-time setting of qgf checkpoints" in capsys.readouterr().err
    assert main(["export", str(qgf_run), str(tmp_path / "x"), "policy.algo.guidance_weight=0.5", "--formats", "torchscript"]) == 0
    from robopol.hardware.backend import load_exported

    assert json.loads((tmp_path / "x" / "policy.json").read_text())["eval_settings"] == ["policy.algo.guidance_weight=0.5"]
    exported = load_exported(tmp_path / "x", "torchscript")  # the guided sampler, parity-checked on export
    np.testing.assert_allclose(exported(obs[:1].numpy(), noise[:1].numpy()), guided(obs[:1], noise[:1]).detach().numpy(), atol=1e-4)


def test_the_sweep_evaluates_bc_and_every_weight_for_each_best_of_n(qgf_run, tmp_path, capsys):
    args = ["--weights", "0.02", "0.5", "--best-of-n", "1", "2", "--episodes", "1", "--out", str(tmp_path)]
    assert main(["sweep", str(qgf_run), *args]) == 2  # best-of-2 from zero noise: refused before any episode
    assert "error: policy.algo.best_of_n: 2 candidates" in capsys.readouterr().err
    assert not (tmp_path / "sweep.json").exists()
    assert main(["sweep", str(qgf_run), "policy.eval_noise=random", *args]) == 0
    rows = json.loads((tmp_path / "sweep.json").read_text())["rows"]
    assert [(r["guidance_weight"], r["best_of_n"]) for r in rows] == [(0.0, 1), (0.02, 1), (0.5, 1), (0.0, 2), (0.02, 2), (0.5, 2)]
    assert all(r["episodes"] == 1 for r in rows) and (tmp_path / "sweep.png").stat().st_size > 0
    assert main(["eval", str(qgf_run), "policy.eval_noise=random", "--episodes", "1", "--no-video",
                 "--out", str(tmp_path / "bc")]) == 0
    bc = json.loads((tmp_path / "bc" / "result.json").read_text())  # w = 0, N = 1 is the plain checkpoint, same seeds
    assert rows[0]["return_mean"] == bc["return_mean"] and rows[0]["success_rate"] == bc["success_rate"]
