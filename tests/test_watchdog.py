"""The watchdog holds within 2 cycles of the observation stream stopping, then stops the robot; an
unusable observation holds at once and, if it lasts, stops naming the robot and the dimension."""

from __future__ import annotations

import numpy as np
import pytest
from deploy_fixtures import ScriptedRobot, pendulum_config, tiny_policy

from robopol.hardware.config import WatchdogConfig
from robopol.hardware.deploy import load_backend
from robopol.hardware.loop import ControlLoop, DeployAborted
from robopol.hardware.watchdog import State, Watchdog


def test_state_machine_hold_recover_stop():
    dog = Watchdog(WatchdogConfig(obs_timeout_s=0.015, max_deadline_misses=3, hold_timeout_s=0.1))
    assert dog.update(1.000, 0.995, False) is State.RUN
    assert dog.update(1.020, 1.000, False) is State.HOLD      # 20 ms old
    assert dog.update(1.030, 1.025, False) is State.RUN       # fresh again: recovers
    for _ in range(2):
        assert dog.update(1.04, 1.04, True) is State.RUN
    assert dog.update(1.05, 1.05, True) is State.HOLD          # 3rd miss in a row
    assert "deadline misses" in dog.reason
    assert dog.update(1.10, 1.05, True) is State.HOLD
    assert dog.update(1.16, 1.05, True) is State.STOP          # held > 0.1 s
    assert dog.update(2.00, 2.00, False) is State.STOP         # STOP latches
    assert (dog.holds, dog.recoveries) == (2, 1)


def test_an_unusable_observation_holds_at_once_however_fresh():
    dog = Watchdog(WatchdogConfig(obs_timeout_s=0.015, max_deadline_misses=3, hold_timeout_s=0.1))
    assert dog.update(1.00, 1.00, False, "state[1]=nan is not finite") is State.HOLD
    assert dog.update(1.01, 1.01, False) is State.RUN
    assert dog.update(1.02, 1.02, False, "state[1]=nan is not finite") is State.HOLD
    assert dog.update(1.13, 1.13, False, "state[1]=nan is not finite") is State.STOP
    assert dog.reason == "held for more than hold_timeout_s=0.1: unusable observation: state[1]=nan is not finite"


def test_loop_holds_within_two_cycles_after_stream_stops(tmp_path):
    stop_after = 30
    cfg = pendulum_config(**{"watchdog.obs_timeout_s": 0.015, "watchdog.hold_timeout_s": 0.1,
                             "inference.backend": "onnx"})
    robot = ScriptedRobot(cfg.obs_dim, cfg.act_dim, stop_after=stop_after)
    loop = ControlLoop(robot, load_backend("onnx", tiny_policy()), cfg, tmp_path / "log.csv")
    with pytest.raises(DeployAborted, match="watchdog STOP") as info:
        loop.run(cycles=200)
    rows = np.genfromtxt(tmp_path / "log.csv", delimiter=",", names=True, dtype=None, encoding=None)
    states = list(rows["state"])
    first_hold = states.index("hold")
    assert stop_after <= first_hold <= stop_after + 2  # the last fresh frame came at cycle stop_after - 1
    assert all(s == "hold" for s in states[first_hold:-1]) and states[-1] == "stop"  # the aborting cycle is logged
    hold = np.asarray(cfg.hold_action, np.float32)
    assert all(np.allclose(a, hold) for a in robot.sent[first_hold:])  # HOLD commands, and the final one
    assert info.value.summary["hold_cycles"] == len(states) - first_hold - 1
    assert info.value.summary["cycles"] == len(states)
    assert info.value.summary["stop_reason"].startswith("watchdog STOP")
