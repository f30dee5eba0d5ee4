"""The hardware config (hardware/*.yaml): how to reach the robot and what it may be commanded.

Validated at load: an unknown key, a wrong type or a value outside what is allowed raises
ConfigError naming the key, the value and what is allowed, before anything talks to the robot.
A file with a `sim` block describes a simulated robot, which deploy starts itself on a free port
(robot.port 0); a file without one describes a real robot at robot.host:robot.port."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from robopol.config_search import find_file
from robopol.errors import ConfigError
from robopol.typed_config import build, field

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(kw_only=True)
class RobotConfig:
    host: str = "127.0.0.1"
    port: int = field(50007, ge=0, le=65535, doc="0 = the port the simulated robot picks (simulated robots only)")
    connect_timeout_s: float = field(2.0, gt=0.0)


@dataclass(kw_only=True)
class WorkspaceConfig:
    """A box over the command dimensions `dims` (e.g. the x, y, z of a Cartesian target)."""

    dims: list[int]
    low: list[float]
    high: list[float]


@dataclass(kw_only=True)
class LimitsConfig:
    position_low: list[float]
    position_high: list[float]
    velocity_max: list[float] = field(doc="command units per second")
    delta_max: list[float] = field(doc="command units per control cycle")
    workspace: WorkspaceConfig | None = None


@dataclass(kw_only=True)
class ObsBoundsConfig:
    """Per-dimension bounds of a plausible observation (.inf for none); a frame outside them, like a
    frame holding NaN or inf, never reaches the policy: the loop holds instead."""

    low: list[float]
    high: list[float]


@dataclass(kw_only=True)
class WatchdogConfig:
    obs_timeout_s: float = field(0.05, gt=0.0, doc="an observation older than this is stale -> HOLD")
    max_deadline_misses: int = field(5, ge=1, doc="this many consecutive missed cycles -> HOLD")
    hold_timeout_s: float = field(0.5, gt=0.0, doc="HOLD lasting longer than this -> STOP")


@dataclass(kw_only=True)
class ChunkingConfig:
    queue_threshold: int = field(1, ge=0, doc="request the next chunk when this many actions are left")
    temporal_ensemble: bool = False
    ensemble_decay: float = field(0.01, ge=0.0, doc="ACT's m: older predictions weigh exp(m * age) more")


@dataclass(kw_only=True)
class InferenceConfig:
    backend: str = field("onnx", choices=("eager", "torchscript", "onnx"))
    deterministic: bool = field(True, doc="zero noise; false draws seeded Gaussian noise per chunk")
    seed: int = 0


@dataclass(kw_only=True)
class SimConfig:
    """Present only for simulated robots: deploy starts this server and connects to it."""

    env_id: str
    rate_hz: float = field(gt=0.0)
    max_episode_steps: int | None = None
    seed: int = 0
    command_timeout_s: float = field(0.25, gt=0.0, doc="the robot's own watchdog: no ACTION this long -> safe state")


@dataclass(kw_only=True)
class HardwareConfig:
    name: str
    control_rate_hz: float = field(gt=0.0, le=2000.0)
    obs_dim: int = field(ge=1)
    act_dim: int = field(ge=1)
    clock_spin_s: float = field(0.002, ge=0.0, doc="busy-wait this long before each tick (precision vs CPU)")
    robot: RobotConfig = field(default_factory=RobotConfig)
    limits: LimitsConfig
    hold_action: list[float] | None = field(None, doc="HOLD command; null repeats the last safe command")
    obs_bounds: ObsBoundsConfig | None = None
    rate_mismatch: str = field("warn", choices=("warn", "refuse"),
                               doc="policy vs control_rate_hz, or a robot streaming slower than the loop")
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    sim: SimConfig | None = None

    def __post_init__(self) -> None:
        if self.clock_spin_s >= 1.0 / self.control_rate_hz:
            raise ConfigError(f"clock_spin_s={self.clock_spin_s} is not allowed; must be shorter than one cycle "
                              f"(1 / control_rate_hz = {1.0 / self.control_rate_hz:g} s)")
        self._check_port()
        if self.obs_bounds is not None:
            _check_obs_bounds(self.obs_bounds, self.obs_dim)
        lim, n = self.limits, self.act_dim
        for key in ("position_low", "position_high", "velocity_max", "delta_max"):
            _check_len(f"limits.{key}", getattr(lim, key), n)
        for i, (lo, hi) in enumerate(zip(lim.position_low, lim.position_high)):
            if not lo < hi:
                raise ConfigError(f"limits.position_low[{i}]={lo} must be < limits.position_high[{i}]={hi}")
        for key in ("velocity_max", "delta_max"):
            for i, v in enumerate(getattr(lim, key)):
                if not v > 0:
                    raise ConfigError(f"limits.{key}[{i}]={v} is not allowed; must be > 0")
        if lim.workspace is not None:
            _check_workspace(lim.workspace, lim, n)
        if self.hold_action is not None:
            _check_len("hold_action", self.hold_action, n)
            if not self.contains(self.hold_action):
                raise ConfigError(f"hold_action={self.hold_action} lies outside the position limits / workspace")

    def _check_port(self) -> None:
        port = self.robot.port
        if self.sim is not None and port != 0:
            raise ConfigError(f"robot.port={port} is not allowed with a `sim` block: the simulated robot binds a "
                              f"free port itself (robot.port: 0); for a real robot use a hardware file without "
                              f"`sim`, or override hardware.sim=null")
        if self.sim is None and port == 0:
            raise ConfigError("robot.port=0 is only allowed for a simulated robot (a `sim` block); set the real "
                              "robot's UDP port, 1-65535")

    def contains(self, command: list[float]) -> bool:
        """Whether a command satisfies the position limits and the workspace box."""
        lim = self.limits
        ok = all(lo <= c <= hi for c, lo, hi in zip(command, lim.position_low, lim.position_high))
        ws = lim.workspace
        return ok and (ws is None or all(lo <= command[d] <= hi for d, lo, hi in zip(ws.dims, ws.low, ws.high)))


def _check_len(key: str, values: list[Any], n: int) -> None:
    if len(values) != n:
        raise ConfigError(f"{key}={values} has {len(values)} values; must have act_dim={n}")


def _check_obs_bounds(bounds: ObsBoundsConfig, n: int) -> None:
    for key in ("low", "high"):
        values = getattr(bounds, key)
        if len(values) != n:
            raise ConfigError(f"obs_bounds.{key}={values} has {len(values)} values; must have obs_dim={n}")
    for i, (lo, hi) in enumerate(zip(bounds.low, bounds.high)):
        if not lo < hi:
            raise ConfigError(f"obs_bounds.low[{i}]={lo} must be < obs_bounds.high[{i}]={hi}")


def _check_workspace(ws: WorkspaceConfig, lim: LimitsConfig, n: int) -> None:
    for i, d in enumerate(ws.dims):
        if not 0 <= d < n:
            raise ConfigError(f"limits.workspace.dims[{i}]={d} is not allowed; must be in [0, act_dim={n})")
    if len(set(ws.dims)) != len(ws.dims):
        raise ConfigError(f"limits.workspace.dims={ws.dims} repeats a dimension; each may appear once")
    for key in ("low", "high"):
        if len(getattr(ws, key)) != len(ws.dims):
            raise ConfigError(f"limits.workspace.{key}={getattr(ws, key)} must have one value per dim "
                              f"({len(ws.dims)})")
    for i, (d, lo, hi) in enumerate(zip(ws.dims, ws.low, ws.high)):
        if not max(lo, lim.position_low[d]) < min(hi, lim.position_high[d]):
            raise ConfigError(f"limits.workspace [{lo}, {hi}] on dim {d} does not overlap the position limits "
                              f"[{lim.position_low[d]}, {lim.position_high[d]}]; the box must leave room to move")


def find_hardware_file(name_or_path: str | Path) -> Path:
    """`hardware=NAME` -> hardware/NAME.yaml on the config search path (robopol.config_search); a value ending in .yaml / .yml or
    holding a '/' is a path to a YAML file (absolute, or relative to the working directory)."""
    text = str(name_or_path)
    if text.endswith(YAML_SUFFIXES) or "/" in text:
        path = Path(text).expanduser()
        if not path.is_file():
            raise ConfigError(f"hardware={text!r}: no such file; give NAME (a file in the hardware/ config folder) "
                              f"or the path of a hardware YAML file")
        return path
    return find_file("hardware", text)


def load_hardware_config(source: str | Path | Mapping[str, Any]) -> HardwareConfig:
    """From a mapping (e.g. a Hydra node as a dict), or a name / path resolved by `find_hardware_file`."""
    if isinstance(source, Mapping):
        return build(HardwareConfig, dict(source))
    path = find_hardware_file(source)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    return build(HardwareConfig, data)
