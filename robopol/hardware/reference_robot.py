"""Build and run the reference robot (hardware/reference_robot/robot.c): the robot side of
docs/protocol.md in C99, so the tests and bench/bench_deploy.py drive the loop against a robot that
shares no code with it, as a vendor's would."""

from __future__ import annotations

import json
import select
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from robopol.config_search import shipped_root
from robopol.errors import RobopolError

SOURCE = shipped_root() / "hardware" / "reference_robot" / "robot.c"  # shipped in the wheel beside the hardware files
CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic")
COMPILERS = ("cc", "gcc", "clang")
START_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 5.0


def find_compiler() -> str | None:
    return next((path for name in COMPILERS if (path := shutil.which(name))), None)


def build(out_dir: str | Path) -> Path:
    """Compile robot.c into out_dir; RobopolError if there is no compiler or the build fails."""
    cc = find_compiler()
    if cc is None:
        raise RobopolError(f"no C compiler ({', '.join(COMPILERS)}) on PATH; scripts/setup.sh installs gcc")
    exe = Path(out_dir) / "reference_robot"
    done = subprocess.run([cc, *CFLAGS, "-o", str(exe), str(SOURCE), "-lm"], capture_output=True, text=True)
    if done.returncode:
        raise RobopolError(f"building {SOURCE} with {cc} failed:\n{done.stderr}")
    return exe


class ReferenceRobot:
    """The compiled robot as a child process on a free port of 127.0.0.1: `port` once started, `stats`
    (its counters) once stopped. `args` are its options without the dashes, e.g. {"rate": 500}."""

    def __init__(self, exe: Path, **args: Any) -> None:
        self.argv = [str(exe), "--port", "0"]
        for key, value in args.items():
            self.argv += [f"--{key.replace('_', '-')}", str(value)]
        self.port: int | None = None
        self.stats: dict[str, Any] = {}
        self.stderr = ""
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> int:
        self._proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        ready = select.select([self._proc.stdout], [], [], START_TIMEOUT_S)[0]
        line = self._proc.stdout.readline() if ready else ""
        if not line.startswith("listening "):
            self.stop()
            raise RobopolError(f"the reference robot did not start ({' '.join(self.argv)}): {line}{self.stderr}")
        self.port = int(line.split()[-1])
        return self.port

    def stop(self) -> dict[str, Any]:
        """SIGTERM, then its JSON line of counters (ticks, sessions, actions, command_timeouts, drops...)."""
        if self._proc is None:
            return self.stats
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
        try:
            out, self.stderr = self._proc.communicate(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            out, self.stderr = self._proc.communicate()
        lines = out.strip().splitlines()
        if lines and lines[-1].startswith("{"):
            self.stats = json.loads(lines[-1])
        self._proc = None
        return self.stats

    def __enter__(self) -> ReferenceRobot:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
