"""`robopol deploy`: hardware config + checkpoint -> backend -> robot -> control loop -> summary.

Everything that can be checked without the robot (config, checkpoint, export parity, specs) is
checked before connecting. A simulated robot (config with a `sim` block) is started here and
stopped afterwards; SIGINT ends the loop with a final safe command."""

from __future__ import annotations

import contextlib
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
    server: SimRobotServer | None = None
    try:
        with contextlib.ExitStack() as stack:
            port = cfg.robot.port
            if cfg.sim is not None:
                server = stack.enter_context(SimRobotServer(SimServerConfig(
                    cfg.sim.env_id, cfg.sim.rate_hz, cfg.robot.host, cfg.robot.port, cfg.sim.max_episode_steps,
                    cfg.sim.seed)))
                port = server.port
            robot = stack.enter_context(UdpRobot(cfg.robot.host, port, cfg.obs_dim, cfg.act_dim,
                                                 cfg.robot.connect_timeout_s))
            loop = ControlLoop(robot, backend, cfg, log_path)
            with _sigint_sets(loop.stop_requested):
                summary = loop.run(cycles, duration_s)
    except DeployAborted as exc:
        _attach_server_stats(exc.summary, server)
        if echo:
            print(format_summary(exc.summary))
        raise
    _attach_server_stats(summary, server)
    if echo:
        print(format_summary(summary))
    return summary


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
        "  dropped packets: " + (", ".join(f"{k} {v}" for k, v in summary["dropped_packets"].items()) or "n/a"),
    ]
    if ep["count"]:
        lines.append(f"  episodes {ep['count']}: mean return {ep['mean_return']:.2f}, mean length {ep['mean_length']:.1f}")
    lines.append(f"  per-cycle log: {summary['log_path']}")
    return "\n".join(lines)


def _load_policy(checkpoint: str | Path) -> torch.nn.Module:
    from robopol.checkpoint import load_policy

    return load_policy(checkpoint)


def _attach_server_stats(summary: dict[str, Any], server: SimRobotServer | None) -> None:
    if server is not None:
        summary["robot_server"] = server.stats


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
