"""One process per run folder: `with RunLock(run_dir): ...` around anything that writes a run.

Two trainers (or a trainer and a resume) on one folder would interleave their CSV rows and overwrite
each other's checkpoints. The lock is RUN/run.lock, held with flock(2) for as long as the process
lives and holding the owner's PID, host and command for the refusal message. The kernel drops a
flock when its process dies, however it dies, so a lock file left by a killed run is stale by
construction: the next process takes it over and says so. If the process holding the folder dies of
a bug (not a user mistake), the traceback is left in RUN/crash.log and the exception carries that path
as `crash_log`, so the CLI can name it in its one line."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from robopol.errors import RobopolError, write_crash_log

LOCK_FILE = "run.lock"
CRASH_LOG = "crash.log"
log = logging.getLogger(__name__)


class RunLockedError(RobopolError):
    """The run folder is in use by another live process."""


class RunLock:
    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None
        self._created: list[Path] = []  # folders this lock made, removed again if the run leaves them empty

    def __enter__(self) -> Self:
        self._created = [p for p in (self.run_dir, *self.run_dir.parents) if not p.exists()]
        self.run_dir.mkdir(parents=True, exist_ok=True)
        while self._fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise RunLockedError(f"run folder {self.run_dir} is in use by {_describe(holder)} (lock file {self.path}); "
                                     "wait for it to finish or stop it first") from None
            if not _same_file(fd, self.path):  # the holder released and unlinked it between our open and flock
                os.close(fd)
                continue
            stale = _read_holder(fd)
            if stale:
                log.warning(f"warning: took over a stale lock on {self.run_dir} left by {_describe(stale)}, "
                            "which is no longer running")
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
                                     "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
            os.fsync(fd)
            self._fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if isinstance(exc, Exception) and not isinstance(exc, RobopolError) and not hasattr(exc, "crash_log"):
            exc.crash_log = write_crash_log(exc, self.run_dir / CRASH_LOG)  # type: ignore[attr-defined]
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # before unlocking, so no one takes over a file about to vanish
            os.close(self._fd)
            self._fd = None
        for folder in self._created:  # deepest first; a refused or failed start leaves no empty run folder
            try:
                folder.rmdir()
            except OSError:
                break


def _read_holder(fd: int) -> dict[str, object]:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict[str, object]) -> str:
    if not holder:
        return "another process"
    return f"pid {holder.get('pid')} on host {holder.get('host')} since {holder.get('since')} ({holder.get('command')})"


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
