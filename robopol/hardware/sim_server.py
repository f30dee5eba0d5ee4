"""A simulated robot: a Gymnasium MuJoCo env behind the UDP protocol, in its own process.

It follows the robot side of docs/protocol.md, as hardware/reference_robot/robot.c does. It runs at
its own fixed rate like real hardware: each tick it applies the latest action it has received,
steps the env and streams the observation with reward and episode bookkeeping, so a deploy run can
be scored like an evaluation. Between ticks it handles datagrams as they arrive. A HELLO starts a
session on a fresh episode; until the session's first ACTION the robot stands still (re-sending its
first observation every tick), so the controller's start-up time does not eat into the first
episode. Its own watchdog ends the session (zero action, no more stepping or streaming) when no
ACTION has come for `command_timeout_s`, or none at all within ARM_TIMEOUT_S of the HELLO; STOP
ends it at once. Episodes reset automatically; the terminal frame and the first frame of the next
episode are both sent."""

from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass
from pathlib import Path
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import Any

import numpy as np

from robopol.errors import RobopolError
from robopol.hardware.protocol import (MsgType, ObservationMsg, Packet, PacketError, Spec, decode_vector,
                                       encode_observation, encode_spec)
from robopol.hardware.transport import Address, UdpEndpoint

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
ARM_TIMEOUT_S = 5.0  # a session whose first ACTION does not come within this of its HELLO ends


@dataclass(frozen=True)
class SimServerConfig:
    env_id: str
    rate_hz: float
    host: str = "127.0.0.1"
    port: int = 0
    max_episode_steps: int | None = None
    seed: int = 0
    command_timeout_s: float = 0.25
    action_log: str | None = None  # if set: per accepted ACTION, its arrival time and the client's timestamp


class SimRobotServer:
    """Start / stop the simulated robot process; `port` is the bound port once started."""

    def __init__(self, cfg: SimServerConfig) -> None:
        self.cfg = cfg
        self.port: int | None = None
        self.stats: dict[str, Any] = {}
        ctx = mp.get_context("spawn")
        self._stop = ctx.Event()
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(cfg, child_conn, self._stop), daemon=True,
                                 name=f"robopol-sim-{cfg.env_id}")

    def start(self) -> int:
        self._proc.start()
        if not self._conn.poll(START_TIMEOUT_S):
            self._kill()
            raise RobopolError(f"simulated robot {self.cfg.env_id} did not start within {START_TIMEOUT_S:g}s")
        try:
            status, value = self._conn.recv()
        except EOFError:
            status, value = "error", f"the process exited with code {self._proc.exitcode}"
        if status != "ready":
            self._proc.join(STOP_TIMEOUT_S)
            raise RobopolError(f"simulated robot {self.cfg.env_id} failed to start: {value}")
        self.port = value
        return value

    def stop(self) -> dict[str, Any]:
        """Stop the process and return its counters (ticks, action repeats, drops per kind)."""
        if self._proc.is_alive():
            self._stop.set()
            if self._conn.poll(STOP_TIMEOUT_S):
                self.stats = self._conn.recv()[1]
            self._proc.join(STOP_TIMEOUT_S)
        self._kill()
        return self.stats

    def _kill(self) -> None:
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(STOP_TIMEOUT_S)

    def __enter__(self) -> SimRobotServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve(cfg: SimServerConfig, conn: Connection, stop: Event) -> None:
    try:
        import gymnasium as gym

        env = gym.make(cfg.env_id, max_episode_steps=cfg.max_episode_steps)
        link = UdpEndpoint.server(cfg.host, cfg.port)
    except Exception as exc:  # reported to the parent, which raises it as a RobopolError
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", link.address[1]))
    session = _Session(env, link, cfg)
    period, skipped = 1.0 / cfg.rate_hz, 0
    next_tick = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        if now < next_tick:
            if (got := link.receive(next_tick - now)) is not None:
                session.handle(got[0], got[1], time.monotonic())
            continue
        session.tick(now)
        next_tick += period
        if now - next_tick > period:  # fell behind: skip the ticks it cannot catch up (counted)
            behind = int((now - next_tick) / period)
            skipped, next_tick = skipped + behind, next_tick + behind * period
    for packet, addr in link.drain():  # a client's last packets (its STOP) may arrive just before the stop request
        session.handle(packet, addr, time.monotonic())
    link.close()
    env.close()
    if cfg.action_log:
        Path(cfg.action_log).write_text("".join(f"{t:.9f} {sent:.9f}\n" for t, sent in session.action_times))
    conn.send(("stats", {**session.stats, "skipped_ticks": skipped, "drops": dict(link.drops), "lost": link.lost,
                         "seq_restarts": link.restarts}))


class _Session:
    """The robot's state machine: idle until HELLO, then step every tick until STOP or its own timeout."""

    def __init__(self, env: Any, link: UdpEndpoint, cfg: SimServerConfig) -> None:
        self.env, self.link, self.cfg = env, link, cfg
        self.obs_dim = int(np.prod(env.observation_space.shape))
        self.act_dim = int(np.prod(env.action_space.shape))
        self.low, self.high = env.action_space.low, env.action_space.high
        self.client: Address | None = None
        self.action = np.zeros(self.act_dim, dtype=np.float32)
        self.fresh_action = False
        self.armed = False
        self.commanded_at = 0.0  # monotonic time of the HELLO or the last accepted ACTION
        self.action_times: list[tuple[float, float]] = []  # (arrival, client's header timestamp)
        self.obs = np.zeros(self.obs_dim, dtype=np.float32)
        self.episode = -1
        self.episode_return, self.step_count = 0.0, 0
        self.stats = {"ticks": 0, "steps": 0, "action_repeats": 0, "rejected_actions": 0, "sessions": 0, "stops": 0,
                      "command_timeouts": 0}

    def tick(self, now: float) -> None:
        self.stats["ticks"] += 1
        if self.client is None:
            return
        if now - self.commanded_at > (self.cfg.command_timeout_s if self.armed else ARM_TIMEOUT_S):
            self.stats["command_timeouts"] += 1
            self._end_session()
            return
        if not self.armed:
            self._send(self.obs, 0.0, False, False)
            return
        self.stats["action_repeats"] += not self.fresh_action
        self.fresh_action = False
        obs, reward, terminated, truncated, _ = self.env.step(self.action)
        self.obs = obs
        self.stats["steps"] += 1
        self.episode_return += float(reward)
        self.step_count += 1
        self._send(obs, float(reward), terminated, truncated)
        if terminated or truncated:
            self._reset()

    def handle(self, packet: Packet, addr: Address, now: float) -> None:
        msg_type, payload = packet.msg_type, packet.payload
        if msg_type == MsgType.HELLO:
            self.client = addr
            self.stats["sessions"] += 1
            self.link.send(MsgType.SPEC, encode_spec(Spec(self.obs_dim, self.act_dim, self.cfg.rate_hz)), addr)
            self.action[:] = 0.0
            self.armed = False
            self.commanded_at = now
            self._reset(seed=self.cfg.seed if self.stats["sessions"] == 1 else None)
        elif msg_type == MsgType.STOP:
            if addr == self.client:  # a repeated STOP, or one for a session already over, changes nothing
                self.stats["stops"] += 1
                self._end_session()
        elif addr != self.client or msg_type != MsgType.ACTION:
            self.link.drops["unexpected"] += 1
        else:
            try:
                action = decode_vector(payload, self.act_dim)
            except PacketError as exc:
                self.link.drops[exc.kind] += 1
                return
            if not np.all(np.isfinite(action)):
                self.stats["rejected_actions"] += 1
                return
            self.action = np.clip(action, self.low, self.high)
            self.fresh_action = self.armed = True
            self.commanded_at = now
            if self.cfg.action_log:
                self.action_times.append((now, packet.timestamp))

    def _end_session(self) -> None:
        """The safe state: no force, no stepping, no streaming, until the next HELLO."""
        self.client = None
        self.action[:] = 0.0
        self.armed = False

    def _reset(self, seed: int | None = None) -> None:
        obs, _ = self.env.reset(seed=seed)
        self.obs = obs
        self.episode += 1
        self.episode_return, self.step_count = 0.0, 0
        self._send(obs, 0.0, False, False)

    def _send(self, obs: np.ndarray, reward: float, terminated: bool, truncated: bool) -> None:
        if self.client is None:
            return
        msg = ObservationMsg(np.asarray(obs, dtype=np.float32), reward, self.episode_return, bool(terminated),
                             bool(truncated), self.episode, self.step_count)
        self.link.send(MsgType.OBSERVATION, encode_observation(msg), self.client)
