"""Packets round-trip; 10k random / mutated datagrams never crash a client, a server or the simulated
robot, and every kind of bad packet is counted."""

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

from robopol.hardware.protocol import (HEADER, MAGIC, BadChecksum, MalformedPacket, MsgType, ObservationMsg,
                                       PacketError, ShortPacket, WrongVersion, decode, decode_observation,
                                       encode, encode_observation, encode_vector)
from robopol.hardware.sim_server import SimRobotServer, SimServerConfig
from robopol.hardware.transport import UdpEndpoint
from robopol.hardware.udp_robot import UdpRobot


@given(st.sampled_from(list(MsgType)), st.integers(0, 2**32 - 1), st.floats(0, 1e9), st.binary(max_size=512))
def test_round_trip(msg_type, seq, timestamp, payload):
    packet = decode(encode(msg_type, seq, timestamp, payload))
    assert (packet.msg_type, packet.seq, packet.timestamp, packet.payload) == (msg_type, seq, timestamp, payload)


def test_observation_round_trip():
    msg = ObservationMsg(np.arange(4, dtype=np.float32), 1.0, 12.0, True, False, 3, 12)
    got = decode_observation(encode_observation(msg), 4)
    assert np.array_equal(got.state, msg.state) and (got.reward, got.episode_return, got.terminated, got.truncated,
                                                      got.episode, got.step) == (1.0, 12.0, True, False, 3, 12)
    with pytest.raises(MalformedPacket):
        decode_observation(encode_observation(msg), 5)


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


@pytest.mark.parametrize("name, error", [("short", ShortPacket), ("truncated", ShortPacket),
                                         ("bad_checksum", BadChecksum), ("wrong_version", WrongVersion),
                                         ("bad_magic", MalformedPacket), ("unknown_type", MalformedPacket),
                                         ("too_long", MalformedPacket)])
def test_decode_raises_a_specific_error(name, error):
    with pytest.raises(error):
        decode(bad_packets()[name])


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
        assert sum(server.drops[k] for k in ("short", "malformed", "bad_checksum", "wrong_version")) == expected
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
        assert dict(server.drops) == {"short": 2, "malformed": 3, "bad_checksum": 1, "wrong_version": 1,
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
