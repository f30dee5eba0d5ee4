"""Whatever the policy outputs (NaN and inf included), no command leaves the configured limits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robopol.errors import ConfigError
from robopol.hardware.config import LimitsConfig, WorkspaceConfig, load_hardware_config
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
