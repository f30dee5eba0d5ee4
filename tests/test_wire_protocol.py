"""Packets round-trip; 10k random / mutated datagrams never crash a client, a server or the simulated
robot, and every kind of bad packet is counted under its own name; the sequence rules of
docs/protocol.md (lost, duplicate, late, restarted senders); every failed handshake sends STOP; a robot
whose sequence restarts mid-session is identified again and the loop carries on."""

from __future__ import annotations

import random
import socket
import struct
import time
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from deploy_fixtures import FakeRobot, pendulum_config, tiny_policy

from robopol.errors import ConfigError, RobopolError
from robopol.hardware.deploy import load_backend
from robopol.hardware.loop import ControlLoop
from robopol.hardware.protocol import (HEADER, MAGIC, MsgType, ObservationMsg, PacketError, decode, decode_observation,
                                       encode, encode_observation, encode_vector)
from robopol.hardware.sim_server import SimRobotServer, SimServerConfig
from robopol.hardware.transport import REORDER_WINDOW, UdpEndpoint
from robopol.hardware.udp_robot import STOP_REPEATS, UdpRobot


@given(st.sampled_from(list(MsgType)), st.integers(0, 2**32 - 1), st.floats(0, 1e9), st.binary(max_size=512))
def test_round_trip(msg_type, seq, timestamp, payload):
    packet = decode(encode(msg_type, seq, timestamp, payload))
    assert (packet.msg_type, packet.seq, packet.timestamp, packet.payload) == (msg_type, seq, timestamp, payload)


def test_observation_round_trip():
    msg = ObservationMsg(np.arange(4, dtype=np.float32), 1.0, 12.0, True, False, 3, 12)
    got = decode_observation(encode_observation(msg), 4)
    assert np.array_equal(got.state, msg.state) and (got.reward, got.episode_return, got.terminated, got.truncated,
                                                      got.episode, got.step) == (1.0, 12.0, True, False, 3, 12)
    with pytest.raises(PacketError) as info:
        decode_observation(encode_observation(msg), 5)
    assert info.value.kind == "bad_payload"


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("!I", zlib.crc32(body))


def bad_packets() -> dict[str, bytes]:
    good = encode(MsgType.ACTION, 7, 1.0, encode_vector(np.zeros(2)))
    return {
        "short": good[:10],
        "truncated": good[:-3],
        "bad_checksum": good[:-1] + bytes([good[-1] ^ 0xFF]),
        "wrong_version": _with_crc(HEADER.pack(MAGIC, 9, int(MsgType.ACTION), 0, 1, 0.0)),
        "bad_magic": _with_crc(HEADER.pack(b"XXXX", 1, int(MsgType.ACTION), 0, 1, 0.0)),
        "unknown_type": _with_crc(HEADER.pack(MAGIC, 1, 99, 0, 1, 0.0)),
        "too_long": good + b"\x00",
    }


@pytest.mark.parametrize("name, kind", [("short", "short"), ("truncated", "bad_length"),
                                        ("bad_checksum", "bad_checksum"), ("wrong_version", "wrong_version"),
                                        ("bad_magic", "bad_magic"), ("unknown_type", "unknown_type"),
                                        ("too_long", "bad_length")])
def test_decode_names_what_is_wrong(name, kind):
    with pytest.raises(PacketError) as info:
        decode(bad_packets()[name])
    assert info.value.kind == kind


def mutations(n: int, seed: int = 0) -> list[bytes]:
    """Random bytes, bit flips, truncations and extensions of valid packets (a flip may hit the same bit
    twice and leave a valid packet, which is then rightly accepted)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        good = encode(rng.choice(list(MsgType)), rng.randrange(2**32), rng.random(), rng.randbytes(rng.randrange(40)))
        mode = i % 4
        if mode == 0:
            out.append(rng.randbytes(rng.randrange(0, 80)))
        elif mode == 1:
            data = bytearray(good)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            out.append(bytes(data))
        elif mode == 2:
            out.append(good[: rng.randrange(len(good))])
        else:
            out.append(good + rng.randbytes(rng.randint(1, 8)))
    return out


def test_10k_mutated_datagrams_never_crash_and_are_counted():
    server = UdpEndpoint.server("127.0.0.1", 0)
    client = UdpEndpoint.client("127.0.0.1", server.address[1])
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        packets = mutations(10_000)
        expected = 0
        for start in range(0, len(packets), 200):  # in batches, so the kernel buffer never overflows
            for data in packets[start:start + 200]:
                raw.sendto(data, server.address)
                try:
                    decode(data)
                except PacketError:
                    expected += 1
            server.receive(0.05)
            server.drain()
        assert sum(server.drops[k] for k in ("short", "bad_magic", "wrong_version", "bad_length", "bad_checksum",
                                             "unknown_type")) == expected
        assert expected > 9_000
        # the client side: garbage from the server's address is dropped the same way
        for data in packets[:200]:
            server.sock.sendto(data, client.address)
        client.receive(0.05)
        client.drain()
        assert sum(client.drops.values()) == 200
        # and the link still works
        client.send(MsgType.HELLO)
        got = server.receive(1.0)
        assert got is not None and got[0].msg_type is MsgType.HELLO
    finally:
        for s in (server, client):
            s.close()
        raw.close()


def test_each_kind_is_counted_including_duplicates_and_reordering():
    server = UdpEndpoint.server("127.0.0.1", 0)
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for data in bad_packets().values():
            raw.sendto(data, server.address)
        for seq in (10, 11, 11, 9, 12, 2**32 - 1):  # a duplicate, a stale one, then a wrap-sized jump back
            raw.sendto(encode(MsgType.ACTION, seq, 0.0, b""), server.address)
        got = []
        while (p := server.receive(0.2)) is not None:
            got.append(p[0].seq)
        assert got == [10, 11, 12]
        assert {k: v for k, v in server.drops.items() if v} == {
            "short": 1, "bad_length": 2, "bad_magic": 1, "unknown_type": 1, "bad_checksum": 1, "wrong_version": 1,
            "duplicate": 1, "out_of_order": 2}
        raw.sendto(encode(MsgType.HELLO, 0, 0.0, b""), server.address)  # a new session restarts the count
        assert server.receive(0.5)[0].seq == 0
    finally:
        server.close()
        raw.close()


def test_simulated_robot_survives_garbage_and_keeps_serving():
    with SimRobotServer(SimServerConfig("InvertedPendulum-v5", rate_hz=200.0)) as server:
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i, data in enumerate(mutations(10_000, seed=1)):
            raw.sendto(data, ("127.0.0.1", server.port))
            if i % 200 == 0:
                time.sleep(0.005)  # one server tick: it drains its socket every tick
        raw.close()
        with UdpRobot("127.0.0.1", server.port, obs_dim=4, act_dim=1, connect_timeout_s=5.0) as robot:
            robot.send_action(np.array([0.1], np.float32))
            assert robot.get_observation().state.shape == (4,)
    assert sum(server.stats["drops"].values()) > 0


def test_sequence_rules_count_losses_and_take_a_restarted_sender():
    server = UdpEndpoint.server("127.0.0.1", 0)
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    late, far = 1003 - REORDER_WINDOW, 1003 - REORDER_WINDOW - 1
    # 1003 skips two (lost); 1002 is late; `late` is just inside the window; `far` is beyond it: the sender
    # restarted; 0 always starts a new count; 1 twice is a duplicate; 2**32 - 1 is two behind: late
    sent = [1000, 1003, 1002, late, far, far + 1, 0, 1, 1, 2**32 - 1, 2]
    try:
        for seq in sent:
            raw.sendto(encode(MsgType.ACTION, seq, 0.0, b""), server.address)
        got = []
        while (p := server.receive(0.2)) is not None:
            got.append(p[0].seq)
        assert got == [1000, 1003, far, far + 1, 0, 1, 2]
        assert (server.lost, server.restarts) == (2, 2)
        assert (server.drops["out_of_order"], server.drops["duplicate"]) == (3, 1)
    finally:
        server.close()
        raw.close()


@pytest.mark.parametrize("robot_kwargs, error, match", [
    ({"answer": False}, RobopolError, "did not answer within 0.3s"),
    ({"obs_dim": 5}, ConfigError, "reports obs_dim=5, act_dim=1"),
    ({"spec_payload": b"xx"}, RobopolError, "did not answer within 0.3s"),
    ({"stream": False}, RobopolError, "answered HELLO but sent no observation"),
])
def test_every_failed_handshake_sends_stop(robot_kwargs, error, match):
    with FakeRobot(**robot_kwargs) as fake:
        robot = UdpRobot("127.0.0.1", fake.port, obs_dim=4, act_dim=1, connect_timeout_s=0.3)
        with pytest.raises(error, match=match):
            robot.connect()
        assert not robot.is_connected
        deadline = time.monotonic() + 2.0
        while fake.received.count(MsgType.STOP) < STOP_REPEATS and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fake.received[0] is MsgType.HELLO and fake.received.count(MsgType.STOP) == STOP_REPEATS


def test_unresolvable_host_is_one_clear_error():
    with pytest.raises(RobopolError, match=r"robot.host='nohost.invalid' cannot be resolved"):
        UdpRobot("nohost.invalid", 50007, obs_dim=4, act_dim=1).connect()


def test_a_robot_restarting_its_sequence_mid_session_is_identified_again(tmp_path):
    cfg = pendulum_config(**{"inference.backend": "onnx"})
    with FakeRobot(rate_hz=100.0, restart_after=60) as fake:
        with UdpRobot("127.0.0.1", fake.port, obs_dim=4, act_dim=1, connect_timeout_s=2.0) as robot:
            loop = ControlLoop(robot, load_backend("onnx", tiny_policy()), cfg, tmp_path / "log.csv")
            summary = loop.run(cycles=150)
        assert fake.sent_obs > 60
    assert summary["stop_reason"] == "finished"
    assert (summary["seq_restarts"], summary["handshakes"]) == (1, 2)
    assert fake.received.count(MsgType.HELLO) >= 2  # the re-handshake
    assert summary["dropped_packets"]["out_of_order"] == 0  # the restarted count was not taken for late packets
