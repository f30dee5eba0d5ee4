"""Whatever the policy outputs (NaN and inf included), and whatever the robot reports, no command leaves
the configured limits, and no unusable observation reaches the policy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy_fixtures import RecordingBackend, ScriptedRobot, pendulum_config, tiny_policy

from robopol.errors import ConfigError
from robopol.hardware.config import LimitsConfig, ObsBoundsConfig, WorkspaceConfig, load_hardware_config
from robopol.hardware.deploy import load_backend
from robopol.hardware.loop import ControlLoop, DeployAborted
from robopol.hardware.safety import SafetyLayer

finite = st.floats(-50, 50, allow_nan=False, width=32)
anything = st.one_of(st.floats(allow_nan=True, allow_infinity=True), finite, st.sampled_from([1e30, -1e30, 0.1, -0.1]))


@st.composite
def limits_and_commands(draw):
    n = draw(st.integers(1, 4))
    low = [draw(st.floats(-10, 9, allow_nan=False)) for _ in range(n)]
    high = [lo + draw(st.floats(0.01, 10)) for lo in low]
    ws = None
    if draw(st.booleans()):
        dims = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
        ws_low, ws_high = [], []
        for d in dims:  # a box that overlaps the position range of its dim
            a = draw(st.floats(low[d], high[d] - 0.005))
            ws_low.append(a - draw(st.floats(0, 5)))
            ws_high.append(draw(st.floats(a + 0.001, high[d] + 5)))
        ws = WorkspaceConfig(dims=dims, low=ws_low, high=ws_high)
    limits = LimitsConfig(position_low=low, position_high=high,
                          velocity_max=[draw(st.floats(1e-3, 1e3)) for _ in range(n)],
                          delta_max=[draw(st.floats(1e-4, 20)) for _ in range(n)], workspace=ws)
    dt = draw(st.sampled_from([0.001, 0.01, 0.04]))
    commands = draw(st.lists(st.lists(anything, min_size=n, max_size=n), min_size=1, max_size=30))
    return limits, dt, commands


@settings(max_examples=300, deadline=None)
@given(limits_and_commands())
def test_no_command_leaves_the_limits(case):
    limits, dt, commands = case
    safety = SafetyLayer(limits, dt)
    prev = safety.last.astype(float)
    step = np.minimum(np.asarray(limits.velocity_max) * dt, limits.delta_max)
    for raw in commands:
        out = safety(np.asarray(raw))
        assert out.dtype == np.float32 and np.all(np.isfinite(out))
        cmd = out.astype(float)
        assert np.all(cmd >= limits.position_low) and np.all(cmd <= limits.position_high)
        if limits.workspace is not None:
            sub = cmd[limits.workspace.dims]
            assert np.all(sub >= limits.workspace.low) and np.all(sub <= limits.workspace.high)
        assert np.all(np.abs(cmd - prev) <= step * (1 + 1e-9) + 1e-12)
        prev = cmd
    assert safety.clamps["nonfinite"] == sum(not np.all(np.isfinite(np.asarray(c, float))) for c in commands)


OBS_BOUND = 5.0
reading = st.one_of(st.floats(-OBS_BOUND, OBS_BOUND, width=32), st.floats(width=32),
                    st.sampled_from([np.inf, -np.inf, np.nan, 1e30, -1e30, OBS_BOUND * 1.01]))


@pytest.fixture(scope="module")
def eager_policy_backend():
    return load_backend("eager", tiny_policy())


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(reading, min_size=4, max_size=4), min_size=1, max_size=30))
def test_no_command_leaves_the_limits_whatever_the_robot_reports(tmp_path_factory, eager_policy_backend, frames):
    cfg = pendulum_config(obs_bounds=ObsBoundsConfig(low=[-OBS_BOUND] * 4, high=[OBS_BOUND] * 4),
                          **{"control_rate_hz": 500.0, "clock_spin_s": 0.0005, "watchdog.hold_timeout_s": 0.01,
                             "limits.delta_max": [0.5]})
    robot = ScriptedRobot(cfg.obs_dim, cfg.act_dim, frames={i: np.asarray(f) for i, f in enumerate(frames)})
    backend = RecordingBackend(eager_policy_backend)
    loop = ControlLoop(robot, backend, cfg, tmp_path_factory.mktemp("log") / "log.csv")
    try:
        summary = loop.run(cycles=len(frames) + 5)
    except DeployAborted as exc:  # a lasting run of bad frames stops the robot: also a safe ending
        summary = exc.summary
    sent = np.asarray(robot.sent, dtype=float)[:, 0]
    assert np.all(np.isfinite(sent)) and np.all(np.abs(sent) <= 3.0)
    assert np.all(np.abs(np.diff(np.concatenate([[0.0], sent]))) <= 0.5 + 1e-6)  # the hold command starts at 0
    seen = np.concatenate([obs.reshape(-1, 4) for obs in backend.seen[6:]] or [np.zeros((0, 4))])
    assert np.all(np.isfinite(seen)) and np.all(np.abs(seen) <= OBS_BOUND)
    fetched = [np.asarray(f, np.float32) for f in frames[:robot.calls]]  # a STOP ends the stream early
    bad = sum(not (np.all(np.isfinite(f)) and np.all(np.abs(f) <= OBS_BOUND)) for f in fetched)
    assert sum(summary["invalid_observations"].values()) == bad


def test_each_clamp_kind_is_counted():
    limits = LimitsConfig(position_low=[-1.0, -1.0], position_high=[1.0, 1.0], velocity_max=[10.0, 10.0],
                          delta_max=[0.05, 1.0], workspace=WorkspaceConfig(dims=[1], low=[-0.5], high=[0.5]))
    safety = SafetyLayer(limits, dt=0.01)  # velocity step 0.1 per cycle
    safety(np.array([5.0, 0.0]))            # position (and delta on dim 0)
    safety(np.array([0.0, 0.9]))            # workspace, velocity
    safety(np.array([np.nan, 0.0]))         # nonfinite
    assert safety.clamps["position"] == 1 and safety.clamps["workspace"] == 1
    assert safety.clamps["velocity"] >= 1 and safety.clamps["delta"] >= 1 and safety.clamps["nonfinite"] == 1


def test_limits_are_validated_naming_the_key():
    cfg = load_hardware_config("sim_hopper")
    data = {"name": "x", "control_rate_hz": 100, "obs_dim": 11, "act_dim": 3,
            "limits": {**cfg.limits.__dict__, "workspace": None, "delta_max": [1.0, -1.0, 1.0]}}
    with pytest.raises(ConfigError, match=r"limits.delta_max\[1\]=-1.0 .* must be > 0"):
        load_hardware_config(data)
    data["limits"]["delta_max"] = [1.0, 1.0, 1.0]
    data["limits"]["workspace"] = {"dims": [5], "low": [0.0], "high": [1.0]}
    with pytest.raises(ConfigError, match=r"limits.workspace.dims\[0\]=5 .* \[0, act_dim=3\)"):
        load_hardware_config(data)
    data["limits"]["workspace"] = None
    data["watchdog"] = {"obs_timeout": 1.0}
    with pytest.raises(ConfigError, match="unknown config key 'watchdog.obs_timeout'"):
        load_hardware_config(data)
