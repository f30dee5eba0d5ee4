"""The two robot sides, the simulated robot (Python) and the reference robot (C99), follow the same
robot-side rules of docs/protocol.md: a session opens with HELLO -> SPEC + observations, non-finite
ACTIONs are rejected, STOP ends the stream, their own command timeout ends it when ACTIONs cease, and
every malformed datagram is counted under the same name as robopol's decoder gives it. The C robot,
built here, is driven by the control loop through a hardware file given by path, with zero drops."""

from __future__ import annotations

import contextlib
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from deploy_fixtures import tiny_policy
from test_wire_protocol import bad_packets, mutations

from robopol.hardware.config import find_hardware_file, load_hardware_config
from robopol.hardware.deploy import run_deploy
from robopol.hardware.protocol import MsgType, PacketError, decode, decode_spec, encode_vector
from robopol.hardware.reference_robot import ReferenceRobot, build, find_compiler
from robopol.hardware.sim_server import SimRobotServer, SimServerConfig
from robopol.hardware.transport import UdpEndpoint

RATE_HZ, TIMEOUT_S = 100.0, 0.1
SIDES = ("python", "c")


@pytest.fixture(scope="module")
def reference_exe(tmp_path_factory) -> Path:
    if find_compiler() is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH, so the C reference robot cannot be built; "
                    "scripts/setup.sh installs gcc")
    return build(tmp_path_factory.mktemp("reference_robot"))


@contextlib.contextmanager
def robot_side(side: str, request: pytest.FixtureRequest, **extra: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    """(port, stats); stats is filled in when the block ends and the robot has stopped."""
    stats: dict[str, Any] = {}
    if side == "python":
        server = SimRobotServer(SimServerConfig("InvertedPendulum-v5", RATE_HZ, command_timeout_s=TIMEOUT_S, **extra))
    else:
        server = ReferenceRobot(request.getfixturevalue("reference_exe"), rate=RATE_HZ, command_timeout=TIMEOUT_S,
                                **extra)
    with server:
        yield server.port, stats
    stats.update(server.stats)


def open_session(port: int) -> UdpEndpoint:
    link = UdpEndpoint.client("127.0.0.1", port)
    link.send(MsgType.HELLO)
    got = link.receive(5.0)
    assert got is not None and got[0].msg_type is MsgType.SPEC
    spec = decode_spec(got[0].payload)
    assert (spec.obs_dim, spec.act_dim, spec.rate_hz) == (4, 1, RATE_HZ)
    return link


def observations_within(link: UdpEndpoint, seconds: float) -> list[float]:
    """Arrival times of the OBSERVATIONs received in the next `seconds`."""
    times, end = [], time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        got = link.receive(left)
        if got is not None and got[0].msg_type is MsgType.OBSERVATION:
            times.append(time.monotonic())
    return times


@pytest.mark.parametrize("side", SIDES)
def test_session_rejects_non_finite_actions_and_stop_ends_the_stream(side, request):
    with robot_side(side, request) as (port, stats):
        link = open_session(port)
        for value in (0.1, 0.2, np.nan, 0.3, np.inf, 0.4):
            link.send(MsgType.ACTION, encode_vector(np.array([value], np.float32)))
            time.sleep(0.005)
        assert len(observations_within(link, 0.05)) >= 3  # streaming at 100 Hz
        link.send(MsgType.STOP)
        link.send(MsgType.STOP)  # a repeated STOP changes nothing
        observations_within(link, 0.1)  # those sent before the robot read the STOP
        assert observations_within(link, 0.1) == []
        link.close()
    assert (stats["sessions"], stats["stops"], stats["rejected_actions"], stats["command_timeouts"]) == (1, 1, 2, 0)
    assert not any(stats["drops"].values()) and (stats["lost"], stats["seq_restarts"]) == (0, 0)


@pytest.mark.parametrize("side", SIDES)
def test_robot_stops_itself_when_actions_cease(side, request):
    with robot_side(side, request) as (port, stats):
        link = open_session(port)
        for _ in range(10):
            link.send(MsgType.ACTION, encode_vector(np.array([0.1], np.float32)))
            last_action = time.monotonic()
            time.sleep(0.01)
        arrivals = observations_within(link, 5 * TIMEOUT_S)
        link.close()
    assert arrivals, "the robot kept streaming until its timeout"
    # it streamed until its timeout (less one tick), then nothing: the session ended (slack for a busy machine)
    assert TIMEOUT_S - 1.5 / RATE_HZ <= arrivals[-1] - last_action <= 2 * TIMEOUT_S
    assert (stats["command_timeouts"], stats["stops"]) == (1, 0)


@pytest.mark.parametrize("side", SIDES)
def test_malformed_datagrams_are_counted_under_the_decoders_names(side, request):
    packets = mutations(3000, seed=7) + list(bad_packets().values())
    expected = Counter()
    for data in packets:
        try:
            decode(data)
        except PacketError as exc:
            expected[exc.kind] += 1
    with robot_side(side, request) as (port, stats):
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i, data in enumerate(packets):
            raw.sendto(data, ("127.0.0.1", port))
            if i % 100 == 99:
                time.sleep(0.005)  # the kernel buffer holds a few hundred datagrams
        raw.close()
        time.sleep(0.1)
        open_session(port).close()  # and it still serves
    assert {kind: stats["drops"][kind] for kind in expected} == dict(expected)
    assert len(expected) == 6  # every decode-level kind occurred


def test_the_loop_drives_the_c_robot_with_zero_drops(reference_exe, tmp_path):
    path = find_hardware_file(str(Path(__file__).parents[1] / "hardware" / "reference_robot.yaml"))  # by path
    cycles = 300
    with ReferenceRobot(reference_exe, rate=100, action_log=tmp_path / "actions.txt") as robot:
        data = load_hardware_config(path.resolve()).__dict__
        cfg = load_hardware_config({**_plain(data), "robot": {"port": robot.port, "host": "127.0.0.1"}})
        summary = run_deploy(cfg, tiny_policy(), cycles=cycles, log_path=tmp_path / "log.csv", echo=False)
    stats = robot.stats
    assert summary["stop_reason"] == "finished" and summary["cycles"] == cycles and summary["warnings"] == []
    assert not any(summary["dropped_packets"].values()) and summary["lost_packets"] == 0
    assert summary["hold_cycles"] == 0 and not any(summary["invalid_observations"].values())
    assert summary["deadline_misses"] <= 0.1 * cycles
    assert (stats["sessions"], stats["stops"], stats["command_timeouts"], stats["rejected_actions"]) == (1, 1, 0, 0)
    assert stats["actions"] == cycles + 1 and not any(stats["drops"].values()) and stats["lost"] == 0
    # end-to-end: each cycle's ACTION reached the robot after the observation it answered left the robot,
    # and after the loop sent it (the ACTION's header timestamp); all on this machine's monotonic clock
    received, action_sent = np.loadtxt(tmp_path / "actions.txt")[:cycles].T
    obs_sent = np.genfromtxt(tmp_path / "log.csv", delimiter=",", names=True)["obs_robot_time"]
    assert np.all(received > action_sent) and np.all(action_sent > obs_sent)
    assert np.median(received - obs_sent) < 2 / 100 and np.median(received - action_sent) < 0.005


def _plain(data: dict) -> dict:
    from robopol.typed_config import to_dict

    return {k: to_dict(v) for k, v in data.items()}
