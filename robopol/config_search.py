"""Where config group files (tasks/, policies/, sim/, hardware/) are found: one search path for every lookup.

A user keeps their own tasks, recipes and robots in their project, so the folders are searched in this
order and the first file with the name wins (a user's `policies/ppo.yaml` shadows the shipped one):
  1. the folders in $ROBOPOL_CONFIG_DIR (os.pathsep-separated; `robopol --config-dir DIR` prepends to it),
  2. the working directory,
  3. the files shipped inside the robopol package (robopol/configs, found with importlib.resources).
Each of these is a root holding the group folders, e.g. `./tasks/my_robot.yaml` is task `my_robot`."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from robopol.errors import ConfigError

ENV_VAR = "ROBOPOL_CONFIG_DIR"
GROUP_FOLDERS = {"task": "tasks", "policy": "policies", "sim": "sim", "hardware": "hardware"}
SUFFIX = ".yaml"


def shipped_root() -> Path:
    """robopol/configs in the installed package (in a checkout: links to the top-level folders)."""
    return Path(str(resources.files("robopol") / "configs"))


def add_user_dirs(dirs: list[str]) -> None:
    """Search `dirs` (in this order) before everything else, here and in any process this one starts."""
    if not dirs:
        return
    current = [d for d in os.environ.get(ENV_VAR, "").split(os.pathsep) if d]
    os.environ[ENV_VAR] = os.pathsep.join([*dirs, *current])


def search_roots() -> list[Path]:
    """The roots in search order, absolute, without repeats; a missing $ROBOPOL_CONFIG_DIR folder is an error."""
    users = [Path(d).expanduser() for d in os.environ.get(ENV_VAR, "").split(os.pathsep) if d]
    for folder in users:
        if not folder.is_dir():
            raise ConfigError(f"{ENV_VAR} (or --config-dir): {str(folder)!r} is not an existing folder")
    roots: list[Path] = []
    for root in [*users, Path.cwd(), shipped_root()]:
        root = root.absolute()
        if root not in roots:
            roots.append(root)
    return roots


def group_folders(group: str) -> list[Path]:
    """The existing folders of one group in search order; a user folder that is the shipped one (the
    working directory is a checkout) counts once, as shipped."""
    shipped = shipped_root() / GROUP_FOLDERS[group]
    seen = {shipped.resolve()}
    folders = []
    for root in search_roots():
        folder = root / GROUP_FOLDERS[group]
        if folder.is_dir() and folder.resolve() not in seen:
            seen.add(folder.resolve())
            folders.append(folder)
    return [*folders, shipped]


def candidates(group: str) -> dict[str, list[Path]]:
    """Every option of a group, each with its files in search order: the first is used, the rest are shadowed."""
    found: dict[str, list[Path]] = {}
    for folder in group_folders(group):
        for path in sorted(folder.glob(f"*{SUFFIX}")):
            found.setdefault(path.stem, []).append(path)
    return dict(sorted(found.items()))


def find(group: str, name: str) -> Path | None:
    """The file that `group=name` selects, or None."""
    files = candidates(group).get(name)
    return files[0] if files else None


def allowed(group: str) -> str:
    """The options of a group, listed by the folder each lives in (for error messages)."""
    shipped = shipped_root() / GROUP_FOLDERS[group]
    parts = []
    for folder in group_folders(group):
        names = ", ".join(sorted(p.stem for p in folder.glob(f"*{SUFFIX}"))) or "none"
        where = f"shipped with robopol in {folder}" if folder == shipped else f"in {folder}"
        parts.append(f"{names} ({where})")
    return "; ".join(parts)


def find_file(group: str, name_or_path: str | os.PathLike[str]) -> Path:
    """An existing YAML file given by path, or the file `group=name` selects; else ConfigError listing the options."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if not path.suffix and len(path.parts) == 1:
        found = find(group, str(name_or_path))
        if found is not None:
            return found
    raise ConfigError(f"unknown {group} {str(name_or_path)!r}; allowed: {allowed(group)}")
