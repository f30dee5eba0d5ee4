"""End to end on the CLI with 2 gloo ranks: torchrun trains and resumes a run (another world size is
refused in one line), 2 ranks raise the return on Reach, and a rank that dies makes the other stop with
an error, not hang."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robopol.config import load_run_config
from robopol.runner import Runner

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")
ARGS = ["task=reach", "policy=ppo", "train.rollout_steps=32", "train.eval_every=0", "train.eval_episodes=2",
        "train.video=false", "train.progress=false", "train.checkpoint_every=1"]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MUJOCO_GL": "osmesa", **extra}


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(TORCHRUN), "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "robopol",
                           *args], env=_env(), capture_output=True, text=True, timeout=180, check=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_train_and_resume_and_another_world_size_is_refused(tmp_path):
    run = tmp_path / "run"
    done = _torchrun("train", *ARGS, "train.total_env_steps=1024", f"train.run_dir={run}")
    assert done.returncode == 0, done.stderr[-2000:]
    steps = [int(r["env_steps"]) for r in csv.DictReader((run / "train.csv").read_text().splitlines())]
    assert steps == [512, 1024]  # 2 ranks x 8 envs x 32 steps an iteration, logged once (rank 0)
    alone = subprocess.run([sys.executable, "-m", "robopol", "resume", str(run), "--total-env-steps", "1536"],
                           env=_env(), capture_output=True, text=True, timeout=60, check=False)
    assert alone.returncode == 2
    assert alone.stderr.strip().splitlines()[-1].startswith(f"error: resume: {run} was trained by 2 process(es)")
    more = _torchrun("resume", str(run), "--total-env-steps", "1536")
    assert more.returncode == 0, more.stderr[-2000:]
    steps = [int(r["env_steps"]) for r in csv.DictReader((run / "train.csv").read_text().splitlines())]
    assert steps == [512, 1024, 1536]


@pytest.mark.slow
def test_two_ranks_raise_the_return_on_reach(tmp_path):
    """The learning test of tests/test_learning.py, on 2 ranks: the same number of updates (each rank's
    16k env steps), averaged gradients and merged statistics still learn to reach."""
    args = ["task=reach", "policy=ppo", "train.rollout_steps=64", "train.eval_every=0", "train.eval_episodes=16",
            "train.progress=false", "train.video=false", "train.seed=3"]
    before = Runner(load_run_config(args), tmp_path / "untrained").evaluate()["return_mean"]
    done = _torchrun("train", *args, "train.total_env_steps=32000", f"train.run_dir={tmp_path / 'run'}")
    assert done.returncode == 0, done.stderr[-2000:]
    after = json.loads(done.stdout.strip().splitlines()[-1])["return_mean"]
    print(f"2 ranks: evaluation return {before:.1f} -> {after:.1f}")
    assert after > before + 8, f"2 ranks: evaluation return {before:.1f} -> {after:.1f}"


def test_a_killed_rank_makes_the_other_stop_with_an_error_within_the_timeout(tmp_path):
    port, procs = str(_free_port()), []
    for rank in (0, 1):
        env = _env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(subprocess.Popen([sys.executable, "-m", "robopol", "train", *ARGS, "train.total_env_steps=10000000",
                                       "train.dist_timeout_s=20", f"train.run_dir={tmp_path / 'run'}"],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + 90
    while not (tmp_path / "run" / "train.csv").exists():  # both ranks are training
        assert time.monotonic() < deadline and procs[0].poll() is None, procs[0].communicate()[1][-2000:]
        time.sleep(0.5)
    procs[1].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    _, err = procs[0].communicate(timeout=60)
    assert procs[0].returncode != 0
    assert time.monotonic() - killed < 40
    assert err.strip().splitlines()[-1].startswith("error: rank 0 of 2: a collective failed"), err[-2000:]
