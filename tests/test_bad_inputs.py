"""Bad inputs a new user tries, family by family, through the real CLI in a subprocess: each ends with
exit code 2 and one `error:` line naming the key, file or value (no traceback, no third-party chatter
before it) and writes nothing; a bug ends with exit code 1 and one line naming its crash log."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_batch import assert_one_error_line, run_cli_batch

from robopol.config import load_run_config
from robopol.data.episodes import Episode
from robopol.data.pusht_zarr import write_pusht_zarr
from robopol.data.robomimic_hdf5 import write_robomimic_hdf5
from robopol.errors import ConfigError
from robopol.export import export_checkpoint
from robopol.runner import train
from robopol.sim import pusht

CKPT = "run/checkpoints/step_000000000128"
TINY = ["task=reach", "sim.num_envs=4", "train.rollout_steps=16", "train.total_env_steps=64", "train.eval_episodes=1",
        "train.progress=false", "train.video=false"]
BC = ["task=pusht", "policy=bc_flow", "policy.n_obs_steps=1", "policy.horizon=2", "policy.n_action_steps=2",
      "policy.actor.hidden=[32]", "task.env_kwargs.max_episode_steps=8", "train.eval_episodes=1", "train.video=false",
      "train.progress=false", "policy.algo.num_steps=10", "policy.algo.batch_size=8"]
HUGE = "100000000"  # far beyond any machine's memory, whatever one entry costs

FAMILIES = {
    "overrides": [
        (["train", "policy.actor.hidden=[64,"], ["'policy.actor.hidden=[64,'", "not valid YAML"]),
        (["train", "train.run_dir=${nope}"], ["train.run_dir", "Interpolation key 'nope' not found"]),
        (["train", "train.seed=${train.missing}"], ["train.seed", "'train.missing'"]),
        (["train", "policy.actor.hidden=[64,0]"], ["policy.actor.hidden[1]", "0 is out of range", "> 0"]),
        (["train", "policy.critic.hidden=[-8]"], ["policy.critic.hidden[0]", "-8"]),
        (["train", "policy=sac", "policy.actor.hidden=[0]"], ["policy.actor.hidden[0]"]),
        (["train", "policy=sac", "policy.actor.hidden=[]"], ["policy.actor.hidden", "at least one layer"]),
        (["train", "task.env_kwargs.bogus=1"], ["task.env_kwargs", "Hopper-v5", "'bogus'"]),
        (["train", "task=pusht", "task.env_kwargs.bogus=1"], ["task.env_kwargs.bogus"]),
    ],
    "numeric options": [
        (["eval", "run", "--episodes", "-3"], ["--episodes", "-3", ">= 1"]),
        (["eval", "run", "--episodes", "many"], ["--episodes", "expected an integer", "'many'"]),
        (["resume", "run", "--total-env-steps", "0"], ["--total-env-steps", ">= 1"]),
        (["deploy", "export", "--cycles", "-5"], ["--cycles", "-5", ">= 1"]),
        (["deploy", "export", "--duration", "-1"], ["--duration", "-1", "> 0"]),
        (["deploy", "export", "--duration", "nan"], ["--duration", "nan"]),
        (["demos", "pusht", "--out", "d.hdf5", "--n", "0"], ["--n", ">= 1"]),
        (["demos", "pusht", "--out", "d.hdf5", "--noise", "-1"], ["--noise", ">= 0"]),
        (["demos", "pusht", "--out", "d.hdf5", "--seed", "-2"], ["--seed", ">= 0"]),
    ],
    "output paths": [
        (["train", *TINY, "train.run_dir=/proc/robopol-run"], ["train.run_dir", "/proc", "not writable"]),
        (["train", *TINY, "train.run_dir=afile"], ["train.run_dir", "afile is an existing file"]),
        (["train", *TINY, f"train.run_dir={CKPT}/nested"], ["train.run_dir", "inside the checkpoint folder"]),
        (["pretrain", *BC, "policy.algo.dataset=good.hdf5", "train.run_dir=afile/run"], ["afile is a file"]),
        (["eval", "run", "--out", "/proc/robopol-eval"], ["--out", "not writable"]),
        (["eval", "run", "--out", "run/checkpoints"], ["--out", "inside the checkpoint folder"]),
        (["eval", CKPT, "--out", f"{CKPT}/eval"], ["--out", "inside the checkpoint folder"]),
        (["export", "run", "afile"], ["out_dir", "afile is an existing file"]),
        (["export", "run", "afile/export"], ["out_dir", "afile is a file"]),
        (["export", "run", f"{CKPT}/export"], ["out_dir", "inside the checkpoint folder"]),
        (["demos", "pusht", "--out", "/proc/robopol-demos.hdf5"], ["--out", "not writable"]),
        (["demos", "pusht", "--out", "adir.hdf5"], ["--out", "adir.hdf5 is an existing folder"]),
    ],
    "run and checkpoint folders": [
        (["resume", CKPT, "--total-env-steps", "999"], ["is a checkpoint folder, not a run folder", "robopol resume"]),
        (["resume", "run/checkpoints"], ["is a checkpoint folder"]),
        (["resume", "nowhere"], ["nowhere does not exist"]),
        (["resume", "afile"], ["afile is a file"]),
        (["resume", "run", "--total-env-steps", "64"], ["64 is not beyond the 128 env steps"]),
        (["resume", "bc", "--total-env-steps", "1000"], ["--total-env-steps", "trained offline", "policy.algo.num_steps"]),
        (["eval", "nowhere"], ["checkpoint not found", "nowhere"]),
        (["train", *TINY, "train.run_dir=run"], ["already holds a run", "robopol resume run"]),
        (["train", *TINY, "policy=fpo", "train.pretrained=bc", "train.run_dir=fresh"], ["train.pretrained", "was trained for"]),
    ],
    "datasets": [
        (["pretrain", *BC, "policy.algo.dataset=nan.hdf5"],
         ["nan.hdf5", "data/demo_1", "actions", "non-finite", "at 2 steps, the first at step 3", "drop_bad_episodes"]),
        (["pretrain", *BC, "policy.algo.dataset=inf_obs.hdf5"], ["data/demo_0", "obs/state", "non-finite"]),
        (["pretrain", *BC, "policy.algo.dataset=empty.hdf5"], ["data/demo_2", "has no steps"]),
        (["pretrain", *BC, "policy.algo.dataset=all_nan.hdf5"], ["3 of 3 episodes are unusable"]),
        (["pretrain", *BC, "policy.algo.dataset=nan.zarr"], ["nan.zarr", "episode 1", "obs/state", "non-finite"]),
        (["pretrain", *BC, "policy.algo.dataset=wide.hdf5"], ["data/demo_0/actions has shape (6, 3)", "(T, 2)"]),
        (["pretrain", *BC, "policy.algo.dataset=no_rewards.hdf5"], ["missing key 'data/demo_0/rewards'"]),
    ],
    "resources": [
        (["train", f"sim.num_envs={HUGE}"], [f"sim.num_envs: {HUGE} is too large", "available", "lower sim.num_envs"]),
        (["train", *TINY, f"train.eval_episodes={HUGE}"], ["train.eval_episodes", "too large"]),
        (["train", "policy=sac", f"policy.algo.buffer_size={HUGE}00"], ["policy.algo.buffer_size", "too large"]),
        (["eval", "run", "--episodes", HUGE], ["--episodes", "too large"]),
    ],
    "demos format": [
        (["demos", "pusht", "--out", "d.zarr", "--format", "hdf5"], ["--format", "conflicts", "d.zarr", "means zarr"]),
        (["demos", "pusht", "--out", "d.hdf5", "--format", "zarr"], ["--format", "conflicts", "means hdf5"]),
        (["demos", "pusht", "--out", "d.dat"], ["d.dat has no demonstration extension", ".hdf5", ".zarr"]),
        (["demos", "lift", "--out", "d.zarr"], ["'zarr' is not available for task 'lift'"]),
    ],
}


def _episode(rng: np.random.Generator, steps: int = 6, act_dim: int = 2) -> Episode:
    state = rng.uniform(100, 400, (steps, 5)).astype(np.float32)
    return Episode(obs={"state": state, "keypoint": np.zeros((steps, 16), np.float32)},
                   actions=rng.uniform(100, 400, (steps, act_dim)).astype(np.float32),
                   rewards=np.zeros(steps, np.float32), dones=np.arange(steps) == steps - 1)


def _with(ep: Episode, **arrays: np.ndarray) -> Episode:
    values = {**ep.__dict__, **arrays}
    return Episode(**values)


def _datasets(folder: Path) -> None:
    """good.hdf5 and one file per kind of bad data, in PushT's robomimic-layout HDF5 (and one zarr)."""
    rng = np.random.default_rng(0)
    env_args = {"env_name": pusht.ENV_ID, "type": 2, "env_kwargs": {"obs_type": "state"}}
    eps = [_episode(rng) for _ in range(3)]
    nan_actions = eps[1].actions.copy()
    nan_actions[[3, 5], 0] = [np.nan, np.inf]
    inf_state = eps[0].obs["state"].copy()
    inf_state[2, 4] = -np.inf
    write_robomimic_hdf5(folder / "good.hdf5", eps, env_args)
    write_robomimic_hdf5(folder / "nan.hdf5", [eps[0], _with(eps[1], actions=nan_actions), eps[2]], env_args)
    write_robomimic_hdf5(folder / "inf_obs.hdf5", [_with(eps[0], obs={"state": inf_state}), *eps[1:]], env_args)
    write_robomimic_hdf5(folder / "empty.hdf5", [*eps[:2], _episode(rng, steps=0)], env_args)
    write_robomimic_hdf5(folder / "all_nan.hdf5", [_with(ep, actions=nan_actions) for ep in eps], env_args)
    write_robomimic_hdf5(folder / "wide.hdf5", [_episode(rng, act_dim=3)], env_args)
    write_robomimic_hdf5(folder / "no_rewards.hdf5", eps, env_args)
    with h5py.File(folder / "no_rewards.hdf5", "a") as f:
        del f["data/demo_0/rewards"]
    write_pusht_zarr(folder / "nan.zarr", [eps[0], _with(eps[1], obs={**eps[1].obs, "state": inf_state}), eps[2]])


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A working folder with a finished run, its export, a BC run, datasets, a file and a folder."""
    root = tmp_path_factory.mktemp("world")
    train(load_run_config([*TINY, "policy=ppo", "train.total_env_steps=128", "train.checkpoint_every=1"]), root / "run")
    assert (root / CKPT).is_dir()
    export_checkpoint(root / "run", root / "export", formats=("onnx",))
    _datasets(root)
    train(load_run_config([*BC, f"policy.algo.dataset={root / 'good.hdf5'}"]), root / "bc")
    (root / "afile").write_text("a file, not a folder")
    (root / "adir.hdf5").mkdir()
    return root


@pytest.fixture(scope="module")
def outcomes(world) -> dict[tuple[str, ...], dict]:
    commands = [argv for cases in FAMILIES.values() for argv, _ in cases]
    return {tuple(r["argv"]): r for r in run_cli_batch(commands, world)}


def _cases(family: str):
    return pytest.mark.parametrize("argv, fragments", FAMILIES[family], ids=[" ".join(a)[:70] for a, _ in FAMILIES[family]])


@_cases("overrides")
def test_override_mistakes(outcomes, argv, fragments):
    assert_one_error_line(outcomes[tuple(argv)], fragments)


@_cases("numeric options")
def test_numeric_options_out_of_range(outcomes, argv, fragments):
    assert_one_error_line(outcomes[tuple(argv)], fragments)


@_cases("output paths")
def test_unwritable_output_paths_are_refused_before_any_work(outcomes, argv, fragments):
    assert_one_error_line(outcomes[tuple(argv)], fragments)


@_cases("run and checkpoint folders")
def test_wrong_run_and_checkpoint_folders(outcomes, argv, fragments, world):
    assert_one_error_line(outcomes[tuple(argv)], fragments)  # nothing written: the run is intact


@_cases("datasets")
def test_bad_demonstration_data_is_refused_with_episode_and_key(outcomes, argv, fragments):
    assert_one_error_line(outcomes[tuple(argv)], fragments)


@_cases("resources")
def test_settings_that_cannot_fit_in_memory_are_refused_up_front(outcomes, argv, fragments):
    assert_one_error_line(outcomes[tuple(argv)], fragments)


@_cases("demos format")
def test_demos_format_conflicts(outcomes, argv, fragments):
    assert_one_error_line(outcomes[tuple(argv)], fragments)


def test_third_party_noise_is_silenced_before_the_error_line(tmp_path):
    """robosuite's start-up notices and PyOpenGL's accelerate notice used to come first."""
    proc = subprocess.run([sys.executable, "-m", "robopol.cli", "train", "task=lift", "policy=dppo_finetune",
                           f"train.pretrained={tmp_path / 'nope'}"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: checkpoint not found: {tmp_path / 'nope'} does not exist"]
    assert list(tmp_path.iterdir()) == []


def test_a_bug_ends_in_one_line_naming_its_crash_log(world):
    """Inside a run the traceback goes to RUN/crash.log, before one to a temporary file; exit code 1."""
    prelude = ("import robopol.runner, robopol.export\n"
               "def bug(*a, **k): raise ValueError('injected bug\\nsecond line')\n"
               "robopol.runner.Runner.run = bug\nrobopol.export.export_policy = bug\n")
    in_run, outside = run_cli_batch([["train", *TINY, "train.run_dir=crashed"], ["export", "run", "exported"]], world,
                                    prelude)
    for result, log in ((in_run, world / "crashed" / "crash.log"), (outside, None)):
        line = result["stderr"].strip()
        assert result["rc"] == 1 and "\n" not in line and "Traceback" not in line, result["stderr"]
        assert line.startswith("error: robopol ") and "failed unexpectedly (ValueError: injected bug)" in line
        path = Path(line.rsplit("full traceback in ", 1)[1])
        path = path if path.is_absolute() else world / path
        assert log is None or path == log
        text = path.read_text()
        assert "Traceback (most recent call last)" in text and "second line" in text
        if log is None:
            path.unlink()
    assert not (world / "crashed" / "run.lock").exists()


def test_eval_of_a_checkpoint_folder_writes_beside_it_never_into_it(world, capsys):
    from robopol.cli import main

    before = sorted(p.name for p in (world / CKPT).iterdir())
    assert main(["eval", str(world / CKPT), "--episodes", "1", "--no-video"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["episodes"] == 1
    assert (world / "run" / "eval" / Path(CKPT).name / "result.json").is_file()
    assert sorted(p.name for p in (world / CKPT).iterdir()) == before


def test_demos_format_follows_the_extension(tmp_path):
    from robopol.demos import write_demonstrations

    assert write_demonstrations("pusht", 1, tmp_path / "d.zarr")["format"] == "zarr"
    assert (tmp_path / "d.zarr").is_dir() and (tmp_path / "d.zarr" / "zarr.json").is_file()
    assert write_demonstrations("pusht", 1, tmp_path / "d.h5")["format"] == "hdf5"
    assert h5py.is_hdf5(tmp_path / "d.h5")


def test_memory_estimate_is_silent_then_warns_then_refuses(caplog):
    from robopol.preflight import check_memory, estimate_memory

    uses = estimate_memory(load_run_config(["sim.num_envs=1000", "train.rollout_steps=1"]), obs_dim=11, act_dim=3)
    mb = {u.key: u.mb for u in uses}
    assert mb == {"sim.num_envs": 2000.0, "train.eval_episodes": 20.0,  # 2 MB per MuJoCo env
                  "train.rollout_steps": pytest.approx(1000 * 4 * (11 + 3 + 8) / 1e6)}
    total = sum(mb.values())
    with caplog.at_level(logging.WARNING, logger="robopol.preflight"):
        check_memory(uses, available_mb=2.5 * total)
        assert caplog.text == ""
        check_memory(uses, available_mb=1.5 * total)
        assert "warning: this needs about 2.0 GB of memory (sim.num_envs=1000: 2.0 GB" in caplog.text
    with pytest.raises(ConfigError, match="sim.num_envs: 1000 is too large.*lower sim.num_envs"):
        check_memory(uses, available_mb=0.9 * total)
    sac = estimate_memory(load_run_config(["policy=sac", "policy.algo.buffer_size=1000"]), obs_dim=11, act_dim=3)
    replay = next(u for u in sac if u.key == "policy.algo.buffer_size")  # 2 x 1000 x (4 x (2 x 11 + 3) + 25) bytes
    assert replay.mb == pytest.approx(0.25)


def test_dropping_bad_episodes_keeps_the_others_and_their_split(world):
    from robopol.data.datasets import load_demonstrations

    task = load_run_config(BC).task
    with pytest.warns(UserWarning, match=r"nan.hdf5: dropped 1 of 3 episodes .*the first, data/demo_1: actions"):
        demos = load_demonstrations(world / "nan.hdf5", task, drop_bad=True)
    assert [ep.name for ep in demos.episodes] == ["data/demo_0", "data/demo_2"]
    assert sorted(demos.train_names + demos.valid_names) == ["demo_0", "demo_2"]
