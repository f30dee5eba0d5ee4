"""End to end: a checkpoint trained by the core trainer, driven through the real-time loop against the
simulated robot process, scores close to its in-simulation evaluation; and the ways a deploy must
refuse or stop (unreachable robot, spec mismatch, NaN policy, Ctrl-C)."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from deploy_fixtures import NanPolicy, ScriptedRobot, pendulum_config, tiny_policy

from robopol.errors import ConfigError, RobopolError
from robopol.hardware.config import load_hardware_config
from robopol.hardware.deploy import load_backend, run_deploy
from robopol.hardware.loop import ControlLoop, DeployAborted
from robopol.hardware.udp_robot import UdpRobot

TRAIN_STEPS = 8192  # ~20 s of FPO: a policy that balances for tens of steps, deterministic enough to compare


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """ROBOPOL_DEPLOY_CHECKPOINT if set (a better policy), else a short FPO run on InvertedPendulum."""
    if os.environ.get("ROBOPOL_DEPLOY_CHECKPOINT"):
        return Path(os.environ["ROBOPOL_DEPLOY_CHECKPOINT"])
    from robopol.config import load_run_config
    from robopol.runner import train

    run_dir = tmp_path_factory.mktemp("ip_fpo")
    cfg = load_run_config(["task=inverted_pendulum", "policy=fpo", f"train.total_env_steps={TRAIN_STEPS}",
                           f"train.run_dir={run_dir}", "train.video=false", "train.progress=false",
                           "train.eval_every=0"])
    train(cfg)
    return run_dir


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_deploy_scores_close_to_sim_evaluation(checkpoint, tmp_path):
    from robopol.checkpoint import load_checkpoint, load_policy
    from robopol.evaluate import evaluate

    ckpt = load_checkpoint(checkpoint)
    expected = evaluate(load_policy(checkpoint), ckpt.config.task, ckpt.config.policy, 10)["return_mean"]
    summary = run_deploy(pendulum_config(), checkpoint, duration_s=5.0, log_path=tmp_path / "log.csv", echo=False)
    episodes = summary["episodes"]
    assert episodes["count"] >= 3
    assert abs(episodes["mean_return"] - expected) <= 0.25 * expected + 5.0, (episodes, expected)
    print(f"deploy mean return {episodes['mean_return']:.1f} over {episodes['count']} episodes; sim evaluation {expected:.1f}")
    # A shared vCPU is preempted in bursts: this idle CI-class VM gave 0 misses in one hour and 10-41 per
    # 500 cycles in the next. The test checks the loop keeps its rate; bench_deploy.py measures the jitter.
    assert summary["deadline_misses"] <= 0.1 * summary["cycles"]
    assert summary["rate_hz_achieved"] == pytest.approx(100.0, rel=0.02)
    assert summary["hold_cycles"] == 0 and summary["clamps"]["nonfinite"] == 0
    assert (tmp_path / "log.csv").read_text().count("\n") == summary["cycles"] + 1


def test_export_checkpoint_records_its_source(checkpoint, tmp_path):
    from robopol.checkpoint import load_checkpoint
    from robopol.export import export_checkpoint

    meta = export_checkpoint(checkpoint, tmp_path)
    assert meta["env_id"] == "InvertedPendulum-v5" and meta["control_rate_hz"] == pytest.approx(25.0)
    # the exact checkpoint folder (which step), not just the run folder it was found in
    assert meta["source_checkpoint"] == str(load_checkpoint(checkpoint).path.resolve())
    assert set(meta["files"]) == {"onnx", "torchscript"}


def test_unreachable_robot_names_host_and_port():
    port = free_port()
    start = time.monotonic()
    with pytest.raises(RobopolError, match=f"robot at 127.0.0.1:{port} did not answer within 0.5s"):
        UdpRobot("127.0.0.1", port, obs_dim=4, act_dim=1, connect_timeout_s=0.5).connect()
    assert time.monotonic() - start < 2.0


def test_unreachable_robot_through_run_deploy(tmp_path):
    cfg = pendulum_config(sim=None, **{"robot.port": free_port(), "robot.connect_timeout_s": 0.5,
                                       "inference.backend": "eager"})
    with pytest.raises(RobopolError, match=f"127.0.0.1:{cfg.robot.port}"):
        run_deploy(cfg, tiny_policy(), cycles=10, log_path=tmp_path / "log.csv", echo=False)


def test_spec_mismatch_is_refused_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=r"obs_dim: policy 4 vs hardware 11; act_dim: policy 1 vs hardware 3"):
        run_deploy(load_hardware_config("sim_hopper"), tiny_policy(), cycles=10, log_path=tmp_path / "l.csv")


def test_nan_policy_holds_and_raises(tmp_path):
    cfg = pendulum_config(**{"inference.backend": "eager"})
    robot = ScriptedRobot(cfg.obs_dim, cfg.act_dim)
    loop = ControlLoop(robot, load_backend("eager", NanPolicy(tiny_policy())), cfg, tmp_path / "log.csv")
    with pytest.raises(DeployAborted, match="NaN/inf"):
        loop.run(cycles=50)
    assert robot.sent and np.allclose(robot.sent[-1], cfg.hold_action) and np.all(np.isfinite(robot.sent))


@pytest.mark.parametrize("ensemble", [False, True])
def test_chunked_policy_runs_with_queue_and_ensembling(tmp_path, ensemble):
    cfg = pendulum_config(**{"chunking.temporal_ensemble": ensemble, "chunking.queue_threshold": 2})
    robot = ScriptedRobot(cfg.obs_dim, cfg.act_dim)
    loop = ControlLoop(robot, load_backend("onnx", tiny_policy(horizon=8, n_action_steps=4)), cfg, tmp_path / "l.csv")
    summary = loop.run(cycles=100)
    assert summary["starved_cycles"] <= 1 and summary["chunks"] >= 100 // 4
    assert len(robot.sent) == 101 and np.all(np.abs(np.asarray(robot.sent)) <= 3.0)


def test_sigint_sends_a_final_safe_command_and_returns(tmp_path):
    cfg = pendulum_config(**{"inference.backend": "onnx"})
    log = tmp_path / "l.csv"

    def interrupt_once_running() -> None:  # the log opens once the loop (and its SIGINT handler) runs
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and not log.exists():
            time.sleep(0.05)
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_once_running, daemon=True).start()
    start = time.monotonic()
    summary = run_deploy(cfg, tiny_policy(n_obs_steps=1), duration_s=60.0, log_path=log, echo=False)
    assert summary["stop_reason"] == "interrupted"
    assert time.monotonic() - start < 30.0
    assert summary["robot_server"]["sessions"] == 1
