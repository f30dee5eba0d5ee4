"""Write a file or directory so that readers see either nothing or the complete result.

The writer works on a temporary name in the destination's directory (same filesystem, so the final
rename is atomic); an exception or a kill before the rename leaves no file under the real name."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output(out: Path, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write to; on success fsync it and move it onto `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    target = tmp if directory else tmp / out.name
    try:
        yield target
        _fsync_tree(target)
        if directory and out.exists():  # os.replace cannot replace a non-empty directory
            old = out.with_name(f".{out.name}.old")
            os.replace(out, old)
            os.replace(target, out)
            shutil.rmtree(old)
        else:
            os.replace(target, out)
        _fsync(out.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync_tree(path: Path) -> None:
    paths = [path] if path.is_file() else [*(p for p in path.rglob("*")), path]
    for p in paths:
        _fsync(p)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
