"""Behaviour cloning: training windows, `pretrain` on a tiny generated PushT dataset, its checkpoint
as a policy and as the start of a DPPO fine-tune, and the errors a user meets first."""

import csv

import numpy as np
import pytest
import torch

from robopol.checkpoint import load_checkpoint, load_policy
from robopol.config import load_run_config
from robopol.data.episodes import Episode
from robopol.data.robomimic_hdf5 import read_robomimic_hdf5, write_robomimic_hdf5
from robopol.data.windows import make_windows, window_indices
from robopol.errors import ConfigError, DataError
from robopol.sim import pusht
from robopol.runner import Runner, train

SMALL = ["policy.n_obs_steps=1", "policy.horizon=2", "policy.n_action_steps=2", "policy.actor.hidden=[64,64]",
         "task.env_kwargs.max_episode_steps=8", "train.eval_episodes=2", "train.video=false", "train.progress=false"]
DIFFUSION = [*SMALL, "policy.actor.denoising_steps=4"]


def test_windows_repeat_the_first_frame_and_the_last_action():
    obs_index, action_index = window_indices([3, 2], n_obs_steps=2, horizon=3)
    np.testing.assert_array_equal(obs_index, [[0, 0], [0, 1], [1, 2], [3, 3], [3, 4]])
    np.testing.assert_array_equal(action_index, [[0, 1, 2], [1, 2, 2], [2, 2, 2], [3, 4, 4], [4, 4, 4]])
    obs = [np.arange(3.0)[:, None] * [1, 10], 100 + np.arange(2.0)[:, None] * [1, 10]]
    actions = [-np.arange(3.0)[:, None], -100 - np.arange(2.0)[:, None]]
    o, a = make_windows(obs, actions, 2, 3).batch(torch.tensor([3, 1]))
    assert o.shape == (2, 2, 2) and a.shape == (2, 3, 1)
    np.testing.assert_array_equal(o[0], [[100, 100], [100, 100]])  # episode start: first frame repeated
    np.testing.assert_array_equal(a[1].flatten(), [-1, -2, -2])  # episode end: last action repeated


def _pusht_episode(rng: np.random.Generator, steps: int = 12) -> Episode:
    """State-observation PushT episode whose action is a fixed function of the state."""
    state = np.column_stack([rng.uniform(100, 400, (steps, 4)), rng.uniform(0, 2 * np.pi, steps)]).astype(np.float32)
    actions = (state[:, :2] + [30.0, -20.0] + 0.2 * (state[:, 2:4] - 250)).astype(np.float32)
    return Episode(obs={"state": state}, actions=actions, rewards=np.zeros(steps, np.float32),
                   dones=np.eye(steps, dtype=bool)[-1])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    rng = np.random.default_rng(0)
    env_args = {"env_name": pusht.ENV_ID, "type": 2, "env_kwargs": {"obs_type": "state"}}
    path = tmp_path_factory.mktemp("demos") / "pusht.hdf5"
    return write_robomimic_hdf5(path, [_pusht_episode(rng) for _ in range(10)], env_args, valid_fraction=0.2)


@pytest.fixture(scope="module")
def bc_run(dataset, tmp_path_factory):
    cfg = load_run_config(["task=pusht", "policy=bc_diffusion", f"policy.algo.dataset={dataset}", *DIFFUSION,
                           "policy.algo.num_steps=400", "policy.algo.batch_size=64", "policy.algo.lr=3e-3",
                           "policy.algo.warmup_steps=20", "policy.algo.val_every=100"])
    return train(cfg, tmp_path_factory.mktemp("bc"))


def test_pretrain_lowers_the_loss_and_reproduces_a_demonstrated_action(bc_run, dataset):
    run_dir, result = bc_run
    with open(run_dir / "offline.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["loss"]) < 0.5 * float(rows[0]["loss"])
    assert result["val_loss"] < 0.5 and (run_dir / "offline_loss.png").exists()
    # evaluated with PushT's protocol on the fixed seeds
    assert result["episodes"] == 2 and 0.0 <= result["mean_max_reward"] <= 1.0
    # the checkpoint alone acts like the demonstrator on a seen observation (env units, pixels)
    policy = load_policy(run_dir)
    (episode, *_) = read_robomimic_hdf5(dataset, "pusht").episodes
    obs = torch.as_tensor(episode.obs["state"][5:6])[:, None]
    with torch.no_grad():
        action = policy(obs, torch.zeros(policy.noise_shape(1)))[0, 0].numpy()
    spread = episode.actions.max(0) - episode.actions.min(0)
    assert np.all(np.abs(action - episode.actions[5]) < 0.1 * spread), (action, episode.actions[5])
    assert load_checkpoint(run_dir).env_steps == 0


def test_bc_checkpoint_exports_with_parity(bc_run, tmp_path):
    from robopol.export import export_checkpoint

    run_dir, _ = bc_run
    spec = export_checkpoint(run_dir, tmp_path, formats=("torchscript",))
    assert spec["horizon"] == 2 and (tmp_path / "policy.ts").exists()


def test_dppo_finetunes_the_bc_checkpoint_on_its_frozen_copy(bc_run, tmp_path):
    run_dir, _ = bc_run
    cfg = load_run_config(["task=pusht", "policy=dppo_finetune", f"train.pretrained={run_dir}", *DIFFUSION,
                           "policy.critic.hidden=[32]", "policy.actor.ft_denoising_steps=2", "sim.num_envs=2",
                           "train.rollout_steps=16", "train.total_env_steps=256", "policy.algo.critic_warmup_iters=1",
                           "policy.algo.minibatch_size=16", "train.eval_every=0"])
    trainer = Runner(cfg, tmp_path)
    bc = load_checkpoint(run_dir)
    actor = trainer.algo.actor
    assert actor.ft_model is not None and actor.ft_denoising_steps == 2
    assert all(not p.requires_grad for p in actor.model.parameters())
    trainer.run()
    pretrained = bc.module_weights("actor")
    for name, value in actor.model.state_dict().items():
        torch.testing.assert_close(value, pretrained[f"model.{name}"])  # the frozen network is untouched
    moved = [not torch.equal(v, pretrained[f"model.{n}"]) for n, v in actor.ft_model.state_dict().items()]
    assert any(moved)  # the fine-tuned copy learned
    for name, value in trainer.normalizer.state_dict().items():
        torch.testing.assert_close(value, bc.module_weights("normalizer")[name])  # the BC normaliser is kept
    assert load_checkpoint(tmp_path).env_steps >= 256
    with open(tmp_path / "eval.csv", newline="") as f:
        steps = [float(row["env_steps"]) for row in csv.DictReader(f)]
    assert steps[0] == 0 and steps[-1] >= 256  # the curve starts at the pretrained policy
    assert load_policy(tmp_path).actor.ft_model is not None  # the fine-tuned chain is what gets evaluated


def test_bc_continued_from_a_checkpoint_on_other_data_keeps_its_normaliser(bc_run, tmp_path):
    """The loaded weights were trained on the first dataset's statistics; refitting them to the second
    (here every state shifted by 50 px) would move every input under those weights."""
    run_dir, _ = bc_run
    rng = np.random.default_rng(1)
    shifted = []
    for _ in range(10):
        ep = _pusht_episode(rng)
        shifted.append(Episode(obs={"state": ep.obs["state"] + 50}, actions=ep.actions, rewards=ep.rewards,
                               dones=ep.dones))
    env_args = {"env_name": pusht.ENV_ID, "type": 2, "env_kwargs": {"obs_type": "state"}}
    data = write_robomimic_hdf5(tmp_path / "shifted.hdf5", shifted, env_args, valid_fraction=0.2)
    cfg = load_run_config(["task=pusht", "policy=bc_diffusion", f"policy.algo.dataset={data}", *DIFFUSION,
                           f"train.pretrained={run_dir}", "policy.algo.num_steps=20", "policy.algo.batch_size=16",
                           "policy.algo.val_every=10"])
    out, _ = train(cfg, tmp_path / "continued")
    before, after = load_checkpoint(run_dir), load_checkpoint(out)
    for name, value in after.module_weights("normalizer").items():
        torch.testing.assert_close(value, before.module_weights("normalizer")[name])
    moved = [not torch.equal(v, before.module_weights("actor")[n]) for n, v in after.module_weights("actor").items()]
    assert any(moved)  # it did train on the new data


def test_bad_dataset_and_wrong_task_give_one_clear_error(dataset, tmp_path):
    missing = load_run_config(["task=pusht", "policy=bc_flow", f"policy.algo.dataset={tmp_path / 'nope.hdf5'}", *SMALL])
    with pytest.raises(DataError, match=r"policy.algo.dataset: .*nope.hdf5 does not exist"):
        train(missing, tmp_path / "a")
    wrong = load_run_config(["task=lift", "policy=bc_flow", f"policy.algo.dataset={dataset}", *SMALL[:4]])
    with pytest.raises(DataError, match="expects 'Lift'; the file was made for another task"):
        train(wrong, tmp_path / "b")
    with pytest.raises(ConfigError, match="policy.algo.dataset: not set"):
        train(load_run_config(["task=pusht", "policy=bc_flow", *SMALL]), tmp_path / "c")


def test_bc_config_is_validated_and_refused_by_the_rl_trainer(tmp_path, capsys):
    from robopol.cli import main

    with pytest.raises(ConfigError, match="policy.algo.batch_size: 0 is out of range"):
        load_run_config(["task=pusht", "policy=bc_diffusion", "policy.algo.batch_size=0"])
    with pytest.raises(ConfigError, match="policy.algo.ema_decay"):
        load_run_config(["task=pusht", "policy=bc_diffusion", "policy.algo.ema_decay=1.5"])
    assert main(["train", "task=pusht", "policy=bc_diffusion", *DIFFUSION, f"train.run_dir={tmp_path / 'r'}"]) == 2
    assert "policy.algo.name=bc trains offline: run it with `robopol pretrain`" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert main(["pretrain", "task=reach", "policy=ppo"]) == 2
    assert "trains online: run it with `robopol train`" in capsys.readouterr().err


def test_the_unet_recipe_pretrains_reloads_and_exports_with_parity(dataset, tmp_path):
    """policies/bc_flow_unet.yaml, shrunk: BC lowers the loss, the checkpoint rebuilds the U-Net from its
    config alone, and the ONNX graph of the whole sampler matches PyTorch."""
    from robopol.export import export_checkpoint
    from robopol.policies.unet import TemporalUnet

    cfg = load_run_config(["task=pusht", "policy=bc_flow_unet", f"policy.algo.dataset={dataset}", *SMALL[4:],
                           "policy.horizon=4", "policy.n_action_steps=2", "policy.actor.down_dims=[16,32]",
                           "policy.actor.time_dim=16", "policy.algo.num_steps=150", "policy.algo.batch_size=32",
                           "policy.algo.lr=3e-3", "policy.algo.warmup_steps=10", "policy.algo.val_every=0"])
    run_dir, _ = train(cfg, tmp_path / "run")
    with open(run_dir / "offline.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["loss"]) < 0.7 * float(rows[0]["loss"])
    policy = load_policy(run_dir)
    assert isinstance(policy.actor.velocity_net, TemporalUnet) and policy.n_obs_steps == 2 and policy.horizon == 4
    spec = export_checkpoint(run_dir, tmp_path / "export", formats=("onnx",))
    assert spec["files"]["onnx"]["max_abs_diff"] <= 1e-4


def test_action_bounds_env_keeps_the_env_action_range_instead_of_the_demos(dataset, tmp_path):
    """policy.algo.action_bounds=env: policies trained on different demos share one normalisation (GPC)."""
    cfg = load_run_config(["task=pusht", "policy=bc_flow", f"policy.algo.dataset={dataset}", *SMALL,
                           "policy.algo.num_steps=2", "policy.algo.batch_size=8", "policy.algo.warmup_steps=1",
                           "policy.algo.val_every=0", "policy.algo.action_bounds=env", "train.eval_episodes=1"])
    run_dir, _ = train(cfg, tmp_path / "run")
    policy = load_policy(run_dir)
    np.testing.assert_array_equal(policy.action_low, [0.0, 0.0])  # PushT's action space, not the demos' min/max
    np.testing.assert_array_equal(policy.action_high, [512.0, 512.0])
