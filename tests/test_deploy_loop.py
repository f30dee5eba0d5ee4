"""End to end: a checkpoint trained by the core trainer, driven through the real-time loop against the
simulated robot process, scores close to its in-simulation evaluation; and the ways a deploy must
refuse or stop (unreachable or unresolvable robot, spec mismatch, NaN policy, unusable observations,
rate disagreements, Ctrl-C), with STOP, the aborting cycle logged and a JSON summary on every ending."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from deploy_fixtures import NanPolicy, RecordingBackend, ScriptedRobot, pendulum_config, tiny_policy

from robopol.cli import main
from robopol.errors import ConfigError, RobopolError
from robopol.hardware.config import ObsBoundsConfig, find_hardware_file, load_hardware_config
from robopol.hardware.deploy import check_rates, load_backend, run_deploy
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
    assert summary["lost_packets"] == 0 and not any(summary["dropped_packets"].values())
    assert summary["robot_server"]["command_timeouts"] == 0 and summary["robot_server"]["stops"] == 1
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


def test_nan_policy_holds_and_raises(tmp_path):  # the policy, not an observation, is what went wrong
    cfg = pendulum_config(**{"inference.backend": "eager"})
    robot = ScriptedRobot(cfg.obs_dim, cfg.act_dim)
    loop = ControlLoop(robot, load_backend("eager", NanPolicy(tiny_policy())), cfg, tmp_path / "log.csv")
    with pytest.raises(DeployAborted, match="NaN/inf"):
        loop.run(cycles=50)
    assert robot.sent and np.allclose(robot.sent[-1], cfg.hold_action) and np.all(np.isfinite(robot.sent))


@pytest.mark.parametrize("ensemble, backbone", [(False, "mlp"), (True, "mlp"), (False, "unet")])
def test_chunked_policy_runs_with_queue_and_ensembling(tmp_path, ensemble, backbone):
    # The U-Net's inference takes a few ms; at 100 Hz another process on the core can make it miss
    # its chunk's lead, which is load, not scheduling. 25 Hz leaves it 40 ms a cycle.
    rate = 25.0 if backbone == "unet" else 100.0
    cfg = pendulum_config(**{"chunking.temporal_ensemble": ensemble, "chunking.queue_threshold": 2,
                             "control_rate_hz": rate, "watchdog.obs_timeout_s": 2 / rate})
    robot = ScriptedRobot(cfg.obs_dim, cfg.act_dim)
    policy = tiny_policy(horizon=8, n_action_steps=4, backbone=backbone)
    loop = ControlLoop(robot, load_backend("onnx", policy), cfg, tmp_path / "l.csv")
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


BOUNDS = ObsBoundsConfig(low=[-10.0] * 4, high=[10.0] * 4)


def test_inf_huge_and_nan_observations_are_held_counted_and_never_reach_the_policy(tmp_path):
    cfg = pendulum_config(obs_bounds=BOUNDS, **{"inference.backend": "eager"})
    bad = {20: [0.0, np.inf, 0.0, 0.0], 35: [0.0, 0.0, 1e30, 0.0], 50: [np.nan, 0.0, 0.0, 0.0]}
    robot = ScriptedRobot(cfg.obs_dim, cfg.act_dim, frames={k: np.asarray(v) for k, v in bad.items()})
    backend = RecordingBackend(load_backend("eager", tiny_policy()))
    summary = ControlLoop(robot, backend, cfg, tmp_path / "log.csv").run(cycles=70)
    assert summary["invalid_observations"] == {"nonfinite": 2, "out_of_bounds": 1}
    assert summary["hold_cycles"] == 3 and summary["watchdog"] == {"holds": 3, "recoveries": 3}
    states = list(np.genfromtxt(tmp_path / "log.csv", delimiter=",", names=True, dtype=None, encoding=None)["state"])
    assert [i for i, s in enumerate(states) if s == "hold"] == list(bad)  # the very cycles that saw them
    seen = np.concatenate([obs.reshape(-1, 4) for obs in backend.seen[6:]])  # after the 6 warm-up calls
    assert len(seen) and np.all(np.isfinite(seen)) and np.all(np.abs(seen) <= 10.0)
    assert np.all(np.isfinite(robot.sent)) and np.all(np.abs(np.asarray(robot.sent)) <= 3.0)


def test_a_lasting_bad_observation_stops_naming_robot_and_dimension(tmp_path):
    cfg = pendulum_config(**{"inference.backend": "eager", "watchdog.hold_timeout_s": 0.05})
    robot = ScriptedRobot(cfg.obs_dim, cfg.act_dim, frames={k: np.array([0, 0, np.nan, 0]) for k in range(10, 200)})
    with pytest.raises(DeployAborted, match=r"unusable observation: state\[2\]=nan is not finite \(from "
                                            r"sim_inverted_pendulum, ScriptedRobot\)") as info:
        ControlLoop(robot, load_backend("eager", tiny_policy()), cfg, tmp_path / "log.csv").run(cycles=200)
    assert info.value.summary["invalid_observations"]["nonfinite"] >= 5
    assert np.allclose(robot.sent[10:], cfg.hold_action)


def test_rates_that_disagree_warn_or_are_refused():
    cfg = pendulum_config()
    cfg.control_rate_hz = 50.0
    assert check_rates(cfg, policy_rate_hz=50.0, robot_rate_hz=200.0) == []  # a faster robot is fine
    found = check_rates(cfg, policy_rate_hz=25.0, robot_rate_hz=10.0)
    assert found[0].startswith("the policy was trained at 25 Hz (policy.json control_rate_hz) but hardware "
                               "'sim_inverted_pendulum' runs the loop at control_rate_hz=50")
    assert found[1].startswith("the robot streams at 10 Hz (its SPEC rate_hz), slower than control_rate_hz=50")
    cfg.rate_mismatch = "refuse"
    with pytest.raises(ConfigError, match=r"trained at 25 Hz .*\(rate_mismatch=refuse"):
        check_rates(cfg, policy_rate_hz=25.0)


def test_hardware_by_name_or_path(tmp_path, monkeypatch):
    shipped = find_hardware_file("sim_hopper")
    assert shipped.name == "sim_hopper.yaml" and load_hardware_config(str(shipped.resolve())).name == "sim_hopper"
    (tmp_path / "arm.yml").write_text(shipped.read_text().replace("name: sim_hopper", "name: arm"))
    monkeypatch.chdir(tmp_path)
    assert load_hardware_config("arm.yml").name == "arm" and load_hardware_config("./arm.yml").name == "arm"
    with pytest.raises(ConfigError, match=r"hardware='/no/such/arm.yaml': no such file"):
        find_hardware_file("/no/such/arm.yaml")
    with pytest.raises(ConfigError, match=r"hardware='/no/such/arm': no such file"):  # a path, never a name
        find_hardware_file("/no/such/arm")
    with pytest.raises(ConfigError, match=r"unknown hardware 'nope'; allowed: .*sim_hopper, sim_inverted_pendulum "
                                          r"\(shipped with robopol in .*hardware\)"):
        find_hardware_file("nope")


def test_a_simulated_robot_starts_only_where_the_file_asks_and_port_0_only_for_it():
    data = dict(load_hardware_config("sim_inverted_pendulum").__dict__)  # a shallow copy is enough to rebuild
    with pytest.raises(ConfigError, match=r"robot.port=50007 is not allowed with a `sim` block.*hardware.sim=null"):
        load_hardware_config({**_plain(data), "robot": {"port": 50007}})
    with pytest.raises(ConfigError, match=r"robot.port=0 is only allowed for a simulated robot"):
        load_hardware_config({**_plain(data), "sim": None})
    real = load_hardware_config({**_plain(data), "sim": None, "robot": {"port": 50007}})
    assert real.sim is None and real.robot.port == 50007


def _plain(data: dict) -> dict:
    from robopol.typed_config import to_dict

    return {k: to_dict(v) for k, v in data.items()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    from robopol.export import export_policy

    out = tmp_path_factory.mktemp("export")
    export_policy(tiny_policy(), out, ("onnx",), control_rate_hz=100.0)
    return out


def test_cli_unresolvable_host_is_one_line_exit_2(exported, tmp_path, capsys):
    code = main(["deploy", str(exported), "hardware=sim_inverted_pendulum", "hardware.sim=null",
                 "hardware.robot.port=50007", "hardware.robot.host=nohost.invalid", "--cycles", "5",
                 "--log", str(tmp_path / "l.csv")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: robot.host='nohost.invalid' cannot be resolved")


def test_cli_aborted_run_prints_its_json_summary(exported, tmp_path, capsys):
    yaml_path = tmp_path / "pendulum_100hz.yaml"  # by path; every frame of the simulated robot is refused
    text = find_hardware_file("sim_inverted_pendulum").read_text()
    yaml_path.write_text(text.replace("control_rate_hz: 25.0", "control_rate_hz: 100.0")
                         .replace("obs_bounds: null", "obs_bounds: {low: [5, 5, 5, 5], high: [6, 6, 6, 6]}")
                         .replace("hold_timeout_s: 0.5", "hold_timeout_s: 0.1"))
    code = main(["deploy", str(exported), f"hardware={yaml_path}", "hardware.sim.rate_hz=100", "--cycles", "100",
                 "--log", str(tmp_path / "l.csv")])
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert code == 2 and "watchdog STOP" in err and "state[0]=" in err and "outside obs_bounds [5, 6]" in err
    assert summary["stop_reason"].startswith("watchdog STOP") and summary["invalid_observations"]["out_of_bounds"] > 0
    assert summary["robot_server"]["stops"] == 1  # STOP reached the robot
    assert summary["warnings"] == []  # policy.json says 100 Hz, the file says 100 Hz
    assert (tmp_path / "l.csv").read_text().splitlines()[-1].split(",")[6] == "stop"


class FailingRobot(ScriptedRobot):
    """Fails on its `fail_at`-th observation, as a robot whose re-handshake met a SPEC of other sizes."""

    def __init__(self, fail_at: int) -> None:
        super().__init__(4, 1)
        self.fail_at = fail_at

    def get_observation(self):
        if self.calls == self.fail_at:
            raise ConfigError("robot at 10.0.0.2:50007 reports obs_dim=5, act_dim=1")
        return super().get_observation()


def test_a_robot_failing_mid_run_ends_it_with_the_cycle_logged_and_a_safe_command(tmp_path):
    cfg = pendulum_config(**{"inference.backend": "eager"})
    robot = FailingRobot(fail_at=30)
    with pytest.raises(DeployAborted, match=r"robot error at cycle 30: robot at 10.0.0.2:50007 reports obs_dim=5"):
        ControlLoop(robot, load_backend("eager", tiny_policy()), cfg, tmp_path / "log.csv").run(cycles=100)
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert len(rows) == 1 + 31 and rows[-1].split(",")[6] == "stop" and rows[-1].split(",")[3] == ""
    assert len(robot.sent) == 32 and np.allclose(robot.sent[-2:], cfg.hold_action)
