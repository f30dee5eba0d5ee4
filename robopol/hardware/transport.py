"""UDP endpoints that never crash on bad input: every dropped datagram is counted by kind.

Both sides use one `UdpEndpoint`; the client connects its socket to the robot (so datagrams from
anyone else are filtered by the kernel), the server binds and answers whoever spoke to it.
Sequence numbers are tracked per sender with serial-number arithmetic (RFC 1982), so a wrap at
2**32 is not mistaken for reordering. A packet ahead of the last accepted one is taken (the numbers
skipped count as `lost`); the same number again is a `duplicate`; up to REORDER_WINDOW behind is
`out_of_order`. HELLO and SPEC open a session and restart the count; so does a packet numbered 0 or
one further behind than the window: the sender restarted (rebooted), counted in `restarts`."""

from __future__ import annotations

import select
import socket
import time
from collections import Counter

from robopol.hardware.protocol import SEQ_MODULUS, MsgType, Packet, PacketError, decode, encode

DROP_KINDS = ("short", "bad_magic", "wrong_version", "bad_length", "bad_checksum", "unknown_type", "duplicate",
              "out_of_order", "bad_payload", "unexpected")
SESSION_TYPES = (MsgType.HELLO, MsgType.SPEC)
REORDER_WINDOW = 64  # a packet further behind than this is a restarted sender, not a late one
RECV_BYTES = 4096
Address = tuple[str, int]


class UdpEndpoint:
    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.drops: Counter[str] = Counter({kind: 0 for kind in DROP_KINDS})
        self.received = 0
        self.lost = 0
        self.restarts = 0
        self._next_seq = 0
        self._last_seq: dict[Address, int] = {}

    @classmethod
    def client(cls, host: str, port: int) -> UdpEndpoint:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.connect((host, port))  # resolves the host name: may raise socket.gaierror
        except OSError:
            sock.close()
            raise
        return cls(sock)

    @classmethod
    def server(cls, host: str, port: int) -> UdpEndpoint:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        return cls(sock)

    @property
    def address(self) -> Address:
        return self.sock.getsockname()

    def send(self, msg_type: MsgType, payload: bytes = b"", addr: Address | None = None) -> None:
        data = encode(msg_type, self._next_seq, time.monotonic(), payload)
        self._next_seq = (self._next_seq + 1) % SEQ_MODULUS
        try:
            if addr is None:
                self.sock.send(data)
            else:
                self.sock.sendto(data, addr)
        except (BlockingIOError, ConnectionRefusedError):
            pass  # UDP is best effort: a full buffer or an absent peer loses this datagram, like the wire would

    def receive(self, timeout: float) -> tuple[Packet, Address] | None:
        """The next valid, in-order packet within `timeout` seconds, or None."""
        deadline = time.monotonic() + timeout
        while True:
            got = self._read_one()
            if got is not None:
                return got
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.sock], [], [], remaining)[0]:
                return None

    def drain(self) -> list[tuple[Packet, Address]]:
        """Every valid, in-order packet already waiting, without blocking."""
        out = []
        while (got := self._read_one()) is not None:
            out.append(got)
        return out

    def close(self) -> None:
        self.sock.close()

    def _read_one(self) -> tuple[Packet, Address] | None:
        """Read datagrams until a valid one arrives or none is left; count the ones dropped."""
        while True:
            try:
                data, addr = self.sock.recvfrom(RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                return None
            except ConnectionRefusedError:  # ICMP port-unreachable for an earlier send: nobody listening yet
                return None
            try:
                packet = decode(data)
            except PacketError as exc:
                self.drops[exc.kind] += 1
                continue
            if self._in_order(packet, addr):
                self.received += 1
                return packet, addr

    def _in_order(self, packet: Packet, addr: Address) -> bool:
        last = self._last_seq.get(addr)
        ahead = None if last is None else (packet.seq - last) % SEQ_MODULUS
        if ahead == 0:
            self.drops["duplicate"] += 1
            return False
        if ahead is not None and packet.msg_type not in SESSION_TYPES:
            if ahead < SEQ_MODULUS // 2:
                self.lost += ahead - 1
            elif packet.seq != 0 and SEQ_MODULUS - ahead <= REORDER_WINDOW:
                self.drops["out_of_order"] += 1
                return False
            else:
                self.restarts += 1
        self._last_seq[addr] = packet.seq
        return True
