"""One process per run folder: a second train or resume is refused naming the holder; a lock left by a
killed process is taken over; a bug inside leaves its traceback in the run folder."""

import csv
import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest
from cli_batch import run_cli_batch

from robopol.errors import ConfigError
from robopol.run_lock import RunLock, RunLockedError

FAST = ["task=reach", "sim.num_envs=1", "train.rollout_steps=8", "train.eval_every=0", "train.eval_episodes=1",
        "train.progress=false", "train.video=false", "train.checkpoint_every=1"]


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    with RunLock(tmp_path / "run"):
        holder = json.loads((tmp_path / "run" / "run.lock").read_text())
        assert (holder["pid"], holder["host"]) == (os.getpid(), socket.gethostname())
        refused = f"run folder .*run is in use by pid {os.getpid()} on host {holder['host']}"
        with pytest.raises(RunLockedError, match=refused), RunLock(tmp_path / "run"):
            pass
    assert not (tmp_path / "run" / "run.lock").exists()
    with RunLock(tmp_path / "run"):  # released on exit: free again
        pass


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path, caplog):
    (tmp_path / "run.lock").write_text(json.dumps({"pid": 4_000_000, "host": "elsewhere", "command": "robopol train"}))
    with caplog.at_level(logging.WARNING, logger="robopol.run_lock"), RunLock(tmp_path):
        assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
    assert "took over a stale lock" in caplog.text and "pid 4000000 on host elsewhere" in caplog.text


def test_a_bug_inside_leaves_a_crash_log_and_a_user_mistake_does_not(tmp_path):
    with pytest.raises(ZeroDivisionError) as info, RunLock(tmp_path / "a"):
        1 / 0  # noqa: B018
    assert info.value.crash_log == tmp_path / "a" / "crash.log"
    assert "ZeroDivisionError: division by zero" in (tmp_path / "a" / "crash.log").read_text()
    with pytest.raises(ConfigError), RunLock(tmp_path / "b"):
        raise ConfigError("a user mistake")
    assert not (tmp_path / "b").exists()  # the folder the lock made is gone again with the lock file


def test_two_processes_on_one_run_folder(tmp_path):
    """A long train holds the folder: a second train and a resume are refused naming it; once it is
    killed, a resume takes over its stale lock and continues, and train.csv never interleaves."""
    first = subprocess.Popen([sys.executable, "-m", "robopol.cli", "train", *FAST, "train.total_env_steps=100000000",
                              "train.run_dir=run"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "run" / "checkpoints" / "LATEST").exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first train did not start"
            time.sleep(0.2)
        second, resume = run_cli_batch([["train", *FAST, "train.total_env_steps=64", "train.run_dir=run"],
                                        ["resume", "run", "--total-env-steps", "100000000"]], tmp_path)
        for result in (second, resume):
            lines = result["stderr"].strip().splitlines()
            assert result["rc"] == 2 and len(lines) == 1, result["stderr"]
            assert lines[0].startswith(f"error: run folder run is in use by pid {first.pid} on host ")
    finally:
        first.kill()
        first.wait()
    done = int((tmp_path / "run" / "checkpoints" / "LATEST").read_text().removeprefix("step_"))
    proc = subprocess.run([sys.executable, "-m", "robopol.cli", "resume", "run", "--total-env-steps", str(done + 16)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert f"took over a stale lock on run left by pid {first.pid}" in proc.stderr
    with open(tmp_path / "run" / "train.csv") as f:
        steps = [int(row["env_steps"]) for row in csv.DictReader(f)]
    assert steps == sorted(set(steps)) and steps[-1] == done + 16
    assert not (tmp_path / "run" / "run.lock").exists()
