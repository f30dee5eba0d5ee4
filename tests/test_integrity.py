"""Checkpoints and exports carry the sha256 of each file they hold; a damaged file is named, one line,
exit 2, instead of loading, evaluating, exporting or deploying wrong weights without a word."""

import hashlib
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from robopol.checkpoint import MANIFEST, load_checkpoint
from robopol.cli import main
from robopol.config import load_run_config
from robopol.errors import CheckpointError
from robopol.export import ExportError, export_checkpoint, verify_export
from robopol.runner import train

FAST = ["task=reach", "policy=ppo", "sim.num_envs=4", "train.rollout_steps=16", "train.total_env_steps=128",
        "train.eval_episodes=1", "train.progress=false", "train.video=false", "train.checkpoint_every=1"]


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    run_dir, _ = train(load_run_config(FAST), tmp_path_factory.mktemp("run") / "run")
    export_checkpoint(run_dir, run_dir.parent / "export", formats=("onnx", "torchscript"))
    return run_dir


@pytest.fixture
def run(original, tmp_path):
    """A fresh copy of the run (and its export beside it) to damage."""
    shutil.copytree(original, tmp_path / "run")
    shutil.copytree(original.parent / "export", tmp_path / "export")
    return tmp_path / "run"


def _flip_byte(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_every_checkpoint_records_the_sha256_of_each_file(original):
    folder = load_checkpoint(original).path
    digests = json.loads((folder / MANIFEST).read_text())["sha256"]
    files = sorted(p.name for p in folder.iterdir() if p.name != MANIFEST)
    assert sorted(digests) == files == ["config.json", "model.safetensors", "trainer_state.json", "trainer_state.safetensors"]
    for name, digest in digests.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest


def test_a_flipped_weight_is_caught_by_eval_export_and_resume(run, tmp_path, capsys):
    weights = load_checkpoint(run).path / "model.safetensors"
    before = {k: v.clone() for k, v in load_file(weights).items()}
    _flip_byte(weights, -2)  # inside the last tensor's data: the file still parses
    after = load_file(weights)
    assert any(not torch.equal(before[k], after[k]) for k in before), "the flip must change a weight silently"
    for argv in (["eval", str(run), "--episodes", "1", "--no-video"], ["export", str(run), str(tmp_path / "exported")],
                 ["resume", str(run), "--total-env-steps", "256"]):
        assert main(argv) == 2
        err = _one_error_line(capsys)
        assert "corrupt checkpoint" in err and "model.safetensors does not match its sha256 in manifest.json" in err
    assert not (tmp_path / "exported").exists()
    assert not (run / "eval").exists() and (run / "checkpoints" / "LATEST").read_text() == weights.parent.name


def test_a_truncated_trainer_state_is_named_on_resume(run, capsys):
    state = load_checkpoint(run).path / "trainer_state.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    load_checkpoint(run)  # weights and config are intact: eval and export still work
    assert main(["resume", str(run), "--total-env-steps", "256"]) == 2
    assert "trainer_state.safetensors does not match its sha256" in _one_error_line(capsys)
    (state.parent / MANIFEST).unlink()  # a checkpoint from before manifests: the reader's own error, still one line
    assert main(["resume", str(run), "--total-env-steps", "256"]) == 2
    assert "unreadable trainer state" in _one_error_line(capsys)


def test_a_corrupt_or_missing_file_is_named(run, capsys):
    folder = load_checkpoint(run).path
    (folder / "config.json").write_text('{"format_version": 1')
    with pytest.raises(CheckpointError, match="config.json does not match its sha256"):
        load_checkpoint(run)
    (folder / MANIFEST).unlink()
    assert main(["eval", str(run), "--no-video"]) == 2
    err = _one_error_line(capsys)
    assert f"{folder}: config.json is not readable JSON" in err
    (folder / MANIFEST).write_text(json.dumps({"sha256": {"model.safetensors": "0" * 64}}))
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        load_checkpoint(run)


def test_a_state_dict_mismatch_names_the_keys_and_shapes(original):
    ckpt = load_checkpoint(original)
    smaller = load_run_config([*FAST, "policy.actor.hidden=[32]"]).policy.actor.build(ckpt.spec)
    with pytest.raises(CheckpointError) as info:
        ckpt.load_into("actor", smaller, "train.pretrained")
    message = str(info.value)
    assert message.startswith("train.pretrained: actor weights of ")
    assert "mean_net.0.weight is (64, 4) in the checkpoint, (32, 4) here" in message
    assert "unexpected mean_net.4.weight" in message


def test_a_flipped_or_truncated_export_is_refused_before_deploy_loads_it(run, capsys):
    export = run.parent / "export"
    verify_export(export)  # as written: both files match policy.json
    onnx = export / "policy.onnx"
    _flip_byte(onnx, len(onnx.read_bytes()) // 2)
    assert main(["deploy", str(export), "--cycles", "1"]) == 2
    assert f"{onnx} does not match its sha256 in policy.json" in _one_error_line(capsys)
    verify_export(export, ("torchscript",))  # the other file is still good
    ts = export / "policy.ts"
    ts.write_bytes(ts.read_bytes()[:64])
    with pytest.raises(ExportError, match="policy.ts does not match its sha256"):
        verify_export(export, ("torchscript",))
    ts.unlink()
    with pytest.raises(ExportError, match="policy.ts is missing"):
        verify_export(export, ("torchscript",))
