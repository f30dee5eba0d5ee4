"""User-facing errors: the CLI prints their message and exits non-zero, without a traceback."""

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path


class RobopolError(Exception):
    """Base for every error caused by user input (configs, files, commands), not by a bug."""


class ConfigError(RobopolError):
    """A config key, value or combination that is not allowed."""


class CheckpointError(RobopolError):
    """A checkpoint that is missing, corrupt or does not match what it is used for."""


class DataError(RobopolError):
    """A demonstration file with missing keys, wrong shapes or made for another task."""


def write_crash_log(exc: BaseException, path: Path | None = None) -> Path:
    """Write the full traceback of an unexpected exception to `path` (default: a new temporary file)
    and return where it went, so the user sees one line and a developer still gets everything."""
    text = f"{time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: {' '.join(sys.argv)}\n" + "".join(
        traceback.format_exception(exc))
    if path is not None:
        try:
            with open(path, "a") as f:
                f.write(text + "\n")
            return path
        except OSError:
            pass  # an unwritable run folder: fall back to a temporary file
    fd, name = tempfile.mkstemp(prefix="robopol-crash-", suffix=".log")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return Path(name)
