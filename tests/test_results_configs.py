"""The shipped recipes compose, and each README result's command (written in its file's header)
reproduces that file's settings: a broken or shadowed recipe fails here, not hours into a benchmark."""

import itertools
import re
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from robopol import config_search
from robopol.config import load_run_config
from robopol.typed_config import to_dict

REPO = Path(__file__).resolve().parents[1]
POLICIES = sorted((REPO / "policies").glob("*.yaml"))
COMMAND = re.compile(r"^#\s+robopol (?:train|pretrain) (?P<args>[^(]*)(?:\((?P<alternatives>[^)]*)\))?", re.MULTILINE)


def commands(path: Path) -> list[list[str]]:
    """The `robopol train|pretrain key=value ...` lines of a file's comments, each alternative written
    after it in parentheses, e.g. `(policy=fpo, policy=dppo ...)`, as one more command."""
    found = []
    for match in COMMAND.finditer(path.read_text()):
        args = list(itertools.takewhile(lambda arg: "=" in arg, match["args"].split()))  # up to `<bc run>`
        found.append(args)
        for group, option in re.findall(r"\b(task|policy)=(\w+)", match["alternatives"] or ""):
            found.append([arg for arg in args if not arg.startswith(f"{group}=")] + [f"{group}={option}"])
    return found


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}"""
    flat: dict[str, Any] = {}
    for name, sub in tree.items():
        key = f"{prefix}{name}"
        flat.update(flatten(sub, f"{key}.") if isinstance(sub, dict) else {key: sub})
    return flat


@pytest.fixture(autouse=True)
def shipped_configs_only(tmp_path, monkeypatch):
    """Compose from an empty working directory, as an installed robopol does, with no user folders."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(config_search.ENV_VAR, raising=False)


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.stem)
def test_every_policy_file_composes_and_validates_with_each_task_it_names(path):
    tasks = sorted(set(re.findall(r"\btask=(\w+)", path.read_text()))) or ["hopper"]
    for task in tasks:
        cfg = load_run_config([f"task={task}", f"policy={path.stem}"])
        assert cfg.task.name == load_run_config([f"task={task}"]).task.name  # budget variants keep their env's name


RECIPES = [(path, args) for folder in ("policies", "tasks") for path in sorted((REPO / folder).glob("*.yaml"))
           for args in commands(path)]


@pytest.mark.parametrize("path, args", RECIPES, ids=lambda x: x.stem if isinstance(x, Path) else " ".join(x))
def test_a_results_command_selects_its_file_and_gets_every_setting_the_file_writes(path, args):
    group = "policy" if path.parent.name == "policies" else "task"
    assert f"{group}={path.stem}" in args
    written = flatten(OmegaConf.to_container(OmegaConf.load(path)))
    written.pop("defaults", None)
    on_command_line = {arg.partition("=")[0] for arg in args}
    composed = flatten(to_dict(load_run_config(args)))
    assert written
    assert {key: composed.get(key) for key in written if key not in on_command_line} == \
           {key: value for key, value in written.items() if key not in on_command_line}


def test_every_results_recipe_names_its_command():
    """A recipe that inherits a shipped one exists for a README result, so it must say how to run it."""
    recipes = [path for folder in ("policies", "tasks") for path in (REPO / folder).glob("*.yaml")
               if "defaults" in (OmegaConf.load(path) or {})]
    assert recipes
    assert [path.name for path in recipes if not commands(path) or "README results" not in path.read_text()] == []
