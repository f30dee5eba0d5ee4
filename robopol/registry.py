"""Algorithms and actors register themselves here, by name, when their module is imported.

A new algorithm or actor is one module (its config dataclass + its class) and one YAML: its config
subclass registers under its `name` (algorithms) or `type` (actors) through `__init_subclass__`, as
LeRobot's configs do, and nothing central lists it. `discover()` imports every module of
robopol.algos and robopol.policies (and the modules named in $ROBOPOL_PLUGINS, comma-separated, for
a user's own algorithms) the first time a name is looked up, so configs never import algorithms."""

from __future__ import annotations

import importlib
import os
import pkgutil
from typing import Any

PACKAGES = ("robopol.policies", "robopol.algos")
_REGISTRIES: dict[str, dict[str, Any]] = {"algo config": {}, "algorithm": {}, "actor config": {}}
_discovered = False


def register(kind: str, name: str, obj: Any) -> None:
    """Add `obj` under `name`; a second, different object under the same name is a programming error."""
    table = _REGISTRIES[kind]
    known = table.get(name)
    if known is not None and known.__qualname__ != obj.__qualname__:
        raise ValueError(f"{kind} {name!r} is registered twice: {known.__module__}.{known.__qualname__} "
                         f"and {obj.__module__}.{obj.__qualname__}")
    table[name] = obj


def discover() -> None:
    """Import every algorithm and actor module once (each registers itself on import)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for package in PACKAGES:
        module = importlib.import_module(package)
        for info in pkgutil.iter_modules(module.__path__):
            importlib.import_module(f"{package}.{info.name}")
    for name in filter(None, (m.strip() for m in os.environ.get("ROBOPOL_PLUGINS", "").split(","))):
        importlib.import_module(name)


def lookup(kind: str) -> dict[str, Any]:
    """name -> registered object of one kind, after discovery."""
    discover()
    return _REGISTRIES[kind]
