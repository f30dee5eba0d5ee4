"""The three loops an algorithm can declare: on_policy, off_policy and offline; each reads top to bottom."""

from __future__ import annotations

from robopol.loops.base import Loop, RunState
from robopol.loops.off_policy import OffPolicyLoop
from robopol.loops.offline import OfflineLoop
from robopol.loops.on_policy import OnPolicyLoop

LOOPS: dict[str, type[Loop]] = {"on_policy": OnPolicyLoop, "off_policy": OffPolicyLoop, "offline": OfflineLoop}


def make_loop(runner: RunState) -> Loop:
    return LOOPS[runner.algo.loop](runner)
