"""Every user mistake gets one clear line naming what is wrong and what is allowed, exit code 2, no traceback."""

import subprocess
import sys

import pytest

from robopol.cli import main

CASES = [
    (["train", "task=nope"], ["unknown task 'nope'", "hopper", "Gymnasium env id"]),
    (["train", "policy=nope"], ["unknown policy 'nope'", "fpo", "dppo", "ppo"]),
    (["train", "policy.algo.cilp=0.1"], ["unknown config key 'policy.algo.cilp'", "clip"]),
    (["train", "train.total_env_steps=lots"], ["train.total_env_steps", "expected an integer", "'lots'"]),
    (["train", "policy=fpo", "policy.algo.clip=-1"], ["policy.algo.clip", "out of range", "> 0"]),
    (["train", "sim.vectorization=threads"], ["sim.vectorization", "'threads'", "sync, async"]),
    (["train", "policy=dppo", "policy.actor.type=gaussian"], ["policy.algo.name=dppo", "diffusion", "'gaussian'"]),
    (["train", "policy=ppo", "policy.n_action_steps=4"], ["policy.n_action_steps", "policy.horizon=1"]),
    (["train", "task=CartPole-v1"], ["CartPole-v1", "Box"]),
    (["train", "oops"], ["'oops'", "key=value"]),
    (["eval", "/no/such/run"], ["checkpoint not found", "/no/such/run"]),
    (["deploy", "/no/such/run", "hardware=mars_rover"], ["unknown hardware 'mars_rover'", "sim_inverted_pendulum"]),
]


@pytest.mark.parametrize("argv, fragments", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_gives_one_clear_error(argv, fragments, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert not (tmp_path / "runs").exists(), "a rejected command must not leave a run folder behind"
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} missing from: {err}"


def test_corrupt_checkpoint_is_named(tmp_path, capsys):
    ckpt = tmp_path / "checkpoints" / "step_000000000001"
    ckpt.mkdir(parents=True)
    (tmp_path / "checkpoints" / "LATEST").write_text(ckpt.name)
    (ckpt / "config.json").write_text('{"format_version": 1')
    (ckpt / "model.safetensors").write_bytes(b"\x00" * 16)
    assert main(["eval", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "corrupt checkpoint" in err and ckpt.name in err


def test_the_console_script_exits_2_without_a_traceback():
    proc = subprocess.run([sys.executable, "-m", "robopol.cli", "train", "policy.algo.lr=fast"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "policy.algo.lr: expected a number, got 'fast'" in proc.stderr
