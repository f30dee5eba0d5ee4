"""`robopol deploy`: hardware config + checkpoint -> backend -> robot -> control loop -> summary.

Everything that can be checked without the robot (config, checkpoint, export parity, specs) is
checked before connecting. A simulated robot (config with a `sim` block) is started here and
stopped afterwards; SIGINT ends the loop with a final safe command. Rates that disagree (the
policy's training rate from policy.json vs control_rate_hz, or a robot whose SPEC streams slower
than the loop) are warned about, or refused with `rate_mismatch: refuse`; the warnings travel in the
summary. Once the robot is connected, every ending sends STOP (UdpRobot's context)."""

from __future__ import annotations

import contextlib
import logging
import signal
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from robopol.errors import ConfigError
from robopol.hardware.backend import SPEC_FILE, EagerBackend, InferenceBackend, PolicySpec, load_exported, read_export
from robopol.hardware.config import HardwareConfig, load_hardware_config
from robopol.hardware.loop import ControlLoop, DeployAborted
from robopol.hardware.sim_server import SimRobotServer, SimServerConfig
from robopol.hardware.udp_robot import UdpRobot

PolicySource = str | Path | torch.nn.Module
RATE_TOLERANCE = 0.01  # relative
log = logging.getLogger(__name__)


def run_deploy(hardware_cfg: HardwareConfig | str | Path | Mapping[str, Any], checkpoint: PolicySource, *,
               duration_s: float | None = None, cycles: int | None = None,
               log_path: str | Path = "deploy_log.csv", echo: bool = True) -> dict[str, Any]:
    """Drive the robot with the policy for `cycles` or `duration_s`; returns the summary dict.

    `checkpoint` is a run / checkpoint dir, an export dir (with policy.json) or an InferencePolicy.
    Raises ConfigError / CheckpointError before touching the robot, RobopolError if the robot does
    not answer, DeployAborted (with `.summary`) if the loop had to stop the robot."""
    cfg = hardware_cfg if isinstance(hardware_cfg, HardwareConfig) else load_hardware_config(hardware_cfg)
    backend = load_backend(cfg.inference.backend, checkpoint)
    check_spec(backend.spec, cfg)
    warnings = check_rates(cfg, policy_rate_hz=policy_rate_hz(checkpoint))
    server: SimRobotServer | None = None
    try:
        with contextlib.ExitStack() as stack:
            port = cfg.robot.port
            if cfg.sim is not None:
                server = stack.enter_context(SimRobotServer(SimServerConfig(
                    cfg.sim.env_id, cfg.sim.rate_hz, cfg.robot.host, cfg.robot.port, cfg.sim.max_episode_steps,
                    cfg.sim.seed, cfg.sim.command_timeout_s)))
                port = server.port
            robot = stack.enter_context(UdpRobot(cfg.robot.host, port, cfg.obs_dim, cfg.act_dim,
                                                 cfg.robot.connect_timeout_s))
            assert robot.spec is not None  # connect() checked it
            warnings += check_rates(cfg, robot_rate_hz=robot.spec.rate_hz)
            loop = ControlLoop(robot, backend, cfg, log_path)
            with _sigint_sets(loop.stop_requested):
                summary = loop.run(cycles, duration_s)
    except DeployAborted as exc:
        _finish(exc.summary, warnings, server, echo)
        raise
    _finish(summary, warnings, server, echo)
    return summary


def check_rates(cfg: HardwareConfig, policy_rate_hz: float | None = None,
                robot_rate_hz: float | None = None) -> list[str]:
    """The rate disagreements between the policy, the hardware file and the robot's SPEC, logged as
    warnings; ConfigError instead if the file says `rate_mismatch: refuse`."""
    rate, found = cfg.control_rate_hz, []
    if policy_rate_hz and abs(policy_rate_hz - rate) > RATE_TOLERANCE * rate:
        found.append(f"the policy was trained at {policy_rate_hz:g} Hz (policy.json control_rate_hz) but "
                     f"hardware '{cfg.name}' runs the loop at control_rate_hz={rate:g}")
    if robot_rate_hz is not None and robot_rate_hz < rate * (1 - RATE_TOLERANCE):
        found.append(f"the robot streams at {robot_rate_hz:g} Hz (its SPEC rate_hz), slower than "
                     f"control_rate_hz={rate:g}: cycles will repeat observations and hold whenever one is older "
                     f"than watchdog.obs_timeout_s={cfg.watchdog.obs_timeout_s:g}")
    if found and cfg.rate_mismatch == "refuse":
        raise ConfigError(f"{found[0]} (rate_mismatch=refuse; set it to warn to run anyway)")
    for message in found:
        log.warning(f"warning: {message}")
    return found


def policy_rate_hz(source: PolicySource) -> float | None:
    """The control rate an exported policy was trained at (policy.json); None if not recorded."""
    if isinstance(source, torch.nn.Module) or not (Path(source) / SPEC_FILE).is_file():
        return None
    rate = read_export(Path(source)).get("control_rate_hz")
    return float(rate) if rate else None


def load_backend(kind: str, source: PolicySource) -> InferenceBackend:
    """The single-threaded backend `kind` for a policy module, a checkpoint or an export dir.

    A checkpoint is exported (parity-checked) to a temporary dir for torchscript / onnx."""
    from robopol.export import export_policy, verify_export

    if isinstance(source, torch.nn.Module):
        policy = source
    elif (Path(source) / SPEC_FILE).is_file():
        if kind != "eager":
            verify_export(Path(source), (kind,))
            return load_exported(Path(source), kind)
        policy = _load_policy(read_export(Path(source))["source_checkpoint"])
    else:
        policy = _load_policy(source)
    if kind == "eager":
        return EagerBackend(policy)
    with tempfile.TemporaryDirectory(prefix="robopol-export-") as tmp:
        export_policy(policy, tmp, (kind,))
        return load_exported(Path(tmp), kind)  # both runtimes hold the model in memory once loaded


def check_spec(spec: PolicySpec, cfg: HardwareConfig) -> None:
    """Refuse a policy whose observation / action sizes differ from the robot's."""
    wrong = [f"{key}: policy {getattr(spec, key)} vs hardware {getattr(cfg, key)}"
             for key in ("obs_dim", "act_dim") if getattr(spec, key) != getattr(cfg, key)]
    if wrong:
        raise ConfigError(f"checkpoint does not fit hardware config '{cfg.name}' ({'; '.join(wrong)})")


def format_summary(summary: dict[str, Any]) -> str:
    lat, jit = summary["inference_latency_ms"], summary["jitter_ms"]
    ep = summary["episodes"]
    lines = [
        f"deploy: {summary['stop_reason']} after {summary['cycles']} cycles in {summary['duration_s']:.2f}s "
        f"({summary['rate_hz_achieved']:.1f} Hz of {summary['rate_hz_target']:g}, backend {summary['backend']})",
        f"  inference latency p50 {lat['p50']:.3f} ms  p99 {lat['p99']:.3f} ms;  "
        f"jitter p50 {jit['p50']:.3f} ms  p99 {jit['p99']:.3f} ms  max {jit['max']:.3f} ms",
        f"  deadline misses {summary['deadline_misses']}, skipped ticks {summary['skipped_ticks']}, "
        f"starved cycles {summary['starved_cycles']}, hold cycles {summary['hold_cycles']}, "
        f"stale chunks {summary['stale_chunks']}",
        "  clamps: " + ", ".join(f"{k} {v}" for k, v in summary["clamps"].items()),
        "  observations refused: " + ", ".join(f"{k} {v}" for k, v in summary["invalid_observations"].items()),
        "  dropped packets: " + (", ".join(f"{k} {v}" for k, v in summary["dropped_packets"].items() if v) or "none")
        + f";  lost {summary['lost_packets']}, robot sequence restarts {summary['seq_restarts']}, "
          f"handshakes {summary['handshakes']}",
    ]
    lines += [f"  warning: {w}" for w in summary.get("warnings", [])]
    if ep["count"]:
        lines.append(f"  episodes {ep['count']}: mean return {ep['mean_return']:.2f}, mean length {ep['mean_length']:.1f}")
    lines.append(f"  per-cycle log: {summary['log_path']}")
    return "\n".join(lines)


def _load_policy(checkpoint: str | Path) -> torch.nn.Module:
    from robopol.checkpoint import load_policy

    return load_policy(checkpoint)


def _finish(summary: dict[str, Any], warnings: list[str], server: SimRobotServer | None, echo: bool) -> None:
    summary["warnings"] = warnings
    if server is not None:
        summary["robot_server"] = server.stats
    if echo:
        print(format_summary(summary))


@contextlib.contextmanager
def _sigint_sets(event: threading.Event) -> Iterator[None]:
    """While inside, Ctrl-C asks the loop to stop (it then sends a final safe command) instead of
    raising KeyboardInterrupt at an arbitrary point."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: event.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
