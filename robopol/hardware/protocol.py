"""The robopol UDP wire format: one self-checking datagram per message.

Layout (network byte order; header fields then payload then trailer)::

    offset size  field
    0      4     magic           b"RBPL"
    4      1     version         PROTOCOL_VERSION (1)
    5      1     message type    MsgType
    6      2     payload length  bytes of payload that follow the header (<= MAX_PAYLOAD)
    8      4     sequence number per sender, +1 per datagram, wraps at 2**32
    12     8     timestamp       sender's monotonic clock, seconds (float64)
    20     n     payload         message-specific, see the payload codecs below
    20+n   4     CRC32           zlib.crc32 of bytes [0, 20 + n)

`decode` checks, in this order: at least 24 bytes (`short`), the magic (`bad_magic`), the version
(`wrong_version`), the announced payload length against the datagram's size (`bad_length`), the
checksum (`bad_checksum`), the message type (`unknown_type`); the payload codecs then check the
payload's size for its type (`bad_payload`). Each failure raises `PacketError` whose `kind` names the
counter a receiver increments when it drops the datagram. docs/protocol.md is the full specification."""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from robopol.errors import RobopolError

MAGIC = b"RBPL"
PROTOCOL_VERSION = 1
HEADER = struct.Struct("!4sBBHId")
TRAILER = struct.Struct("!I")
MAX_PAYLOAD = 1400 - HEADER.size - TRAILER.size  # fits one Ethernet MTU with IP/UDP headers
SEQ_MODULUS = 2**32


class MsgType(enum.IntEnum):
    HELLO = 1        # client -> robot, empty: start a session (robot resets, replies SPEC, starts streaming)
    SPEC = 2         # robot -> client: obs_dim u16, act_dim u16, rate_hz f32
    OBSERVATION = 3  # robot -> client: obs_dim f32 state, then reward/episode trailer (OBS_TRAILER)
    ACTION = 4       # client -> robot: act_dim f32 command
    STOP = 5         # client -> robot, empty: end the session; the robot enters its own safe state


class PacketError(RobopolError):
    """A datagram that is not a valid packet; `kind` names the drop counter."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Packet:
    msg_type: MsgType
    seq: int
    timestamp: float
    payload: bytes


def encode(msg_type: MsgType, seq: int, timestamp: float, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds MAX_PAYLOAD={MAX_PAYLOAD}")
    body = HEADER.pack(MAGIC, PROTOCOL_VERSION, int(msg_type), len(payload), seq % SEQ_MODULUS, timestamp) + payload
    return body + TRAILER.pack(zlib.crc32(body))


def decode(data: bytes) -> Packet:
    """Parse one datagram or raise the PacketError whose `kind` says what is wrong with it."""
    if len(data) < HEADER.size + TRAILER.size:
        raise PacketError("short", f"{len(data)} bytes is shorter than the {HEADER.size + TRAILER.size}-byte minimum")
    magic, version, msg_type, length, seq, timestamp = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise PacketError("bad_magic", f"magic {magic!r} is not {MAGIC!r}")
    if version != PROTOCOL_VERSION:
        raise PacketError("wrong_version", f"protocol version {version}; this side speaks {PROTOCOL_VERSION}")
    expected = HEADER.size + length + TRAILER.size
    if len(data) != expected:
        raise PacketError("bad_length", f"{len(data)} bytes but the header announces {expected}")
    (crc,) = TRAILER.unpack_from(data, expected - TRAILER.size)
    if crc != zlib.crc32(data[: expected - TRAILER.size]):
        raise PacketError("bad_checksum", "CRC32 mismatch")
    try:
        kind = MsgType(msg_type)
    except ValueError:
        raise PacketError("unknown_type", f"unknown message type {msg_type}") from None
    return Packet(kind, seq, timestamp, bytes(data[HEADER.size: HEADER.size + length]))


# --- payload codecs ---------------------------------------------------------------------------
SPEC_PAYLOAD = struct.Struct("!HHf")
OBS_TRAILER = struct.Struct("!ffBII")  # reward, episode_return, flags, episode, episode step
FLAG_TERMINATED, FLAG_TRUNCATED = 1, 2
FLOATS = np.dtype(">f4")


@dataclass(frozen=True)
class Spec:
    obs_dim: int
    act_dim: int
    rate_hz: float


@dataclass(frozen=True)
class ObservationMsg:
    """One observation frame; reward and episode fields are zero for robots without episodes."""

    state: np.ndarray
    reward: float = 0.0
    episode_return: float = 0.0
    terminated: bool = False
    truncated: bool = False
    episode: int = 0
    step: int = 0


def encode_spec(spec: Spec) -> bytes:
    return SPEC_PAYLOAD.pack(spec.obs_dim, spec.act_dim, spec.rate_hz)


def decode_spec(payload: bytes) -> Spec:
    if len(payload) != SPEC_PAYLOAD.size:
        raise PacketError("bad_payload", f"SPEC payload of {len(payload)} bytes, expected {SPEC_PAYLOAD.size}")
    return Spec(*SPEC_PAYLOAD.unpack(payload))


def encode_vector(values: np.ndarray) -> bytes:
    return np.asarray(values, dtype=FLOATS).tobytes()


def decode_vector(payload: bytes, dim: int) -> np.ndarray:
    if len(payload) != 4 * dim:
        raise PacketError("bad_payload", f"vector payload of {len(payload)} bytes, expected {4 * dim} for dim {dim}")
    return np.frombuffer(payload, dtype=FLOATS).astype(np.float32)


def encode_observation(msg: ObservationMsg) -> bytes:
    flags = FLAG_TERMINATED * msg.terminated | FLAG_TRUNCATED * msg.truncated
    return encode_vector(msg.state) + OBS_TRAILER.pack(msg.reward, msg.episode_return, flags, msg.episode, msg.step)


def decode_observation(payload: bytes, obs_dim: int) -> ObservationMsg:
    split = 4 * obs_dim
    if len(payload) != split + OBS_TRAILER.size:
        raise PacketError("bad_payload", f"OBSERVATION payload of {len(payload)} bytes, expected {split + OBS_TRAILER.size}")
    reward, ret, flags, episode, step = OBS_TRAILER.unpack_from(payload, split)
    return ObservationMsg(decode_vector(payload[:split], obs_dim), reward, ret, bool(flags & FLAG_TERMINATED),
                          bool(flags & FLAG_TRUNCATED), episode, step)
