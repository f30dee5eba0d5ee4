"""Run many `robopol` command lines in one Python subprocess (one torch import instead of one per
command), each with its own stdout / stderr captured at the file-descriptor level (so output from C
libraries and from imports is caught too) and the files under the working folder compared before
and after, so a test can assert an exit code, one line, and that nothing was written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

DRIVER = r"""
import json, os, sys, tempfile

def snapshot():
    files = {}
    for root, dirs, names in os.walk("."):
        for name in dirs:
            files[os.path.join(root, name) + "/"] = "folder"
        for name in names:
            path = os.path.join(root, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            files[path] = [st.st_size, st.st_mtime_ns]
    return files

exec(sys.argv[3])  # the prelude: e.g. a bug injected to exercise the crash path
from robopol.cli import main

results = []
for argv in json.loads(sys.argv[1]):
    before = snapshot()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush(); sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1); os.dup2(err.fileno(), 2)
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code
        except BaseException:  # what an uncaught exception does to a real process: a traceback and exit 1
            import traceback
            traceback.print_exc()
            rc = 1
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os.dup2(saved[0], 1); os.dup2(saved[1], 2); os.close(saved[0]); os.close(saved[1])
        out.seek(0); err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    after = snapshot()
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    results.append({"argv": argv, "rc": rc, "stdout": stdout, "stderr": stderr, "changed": changed})
with open(sys.argv[2], "w") as f:
    json.dump(results, f)
"""


def run_cli_batch(commands: list[list[str]], cwd: Path, prelude: str = "", timeout: float = 300) -> list[dict[str, Any]]:
    """One result per command: argv, rc, stdout, stderr, changed (paths under cwd added, removed or modified)."""
    out = Path(cwd).parent / f".{Path(cwd).name}-results.json"
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(commands), str(out), prelude], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"the driver itself failed:\n{proc.stdout}\n{proc.stderr}"
    results = json.loads(out.read_text())
    out.unlink()
    return results


def assert_one_error_line(result: dict[str, Any], fragments: list[str], rc: int = 2) -> str:
    """Exit code `rc`, exactly one stderr line starting `error: ` holding every fragment, no traceback,
    nothing written under the working folder. Returns the line."""
    lines = result["stderr"].strip().splitlines()
    assert result["rc"] == rc, f"{result['argv']}: exit {result['rc']}, stderr:\n{result['stderr']}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{result['argv']}: not one error line:\n{result['stderr']}"
    assert "Traceback" not in result["stderr"]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} missing from: {lines[0]}"
    assert not result["changed"], f"{result['argv']} wrote {result['changed']}"
    return lines[0]
