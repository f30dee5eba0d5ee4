"""robopol installed from its wheel as a user installs it (no checkout, no -e): train, eval and export from an
empty folder with the shipped configs, and with the user's own task and a recipe shadowing a shipped one."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from robopol import __version__
from robopol.config_search import ENV_VAR, GROUP_FOLDERS

REPO = Path(__file__).resolve().parents[1]
TINY = ["train.total_env_steps=64", "sim.num_envs=2", "train.rollout_steps=16", "policy.algo.minibatch_size=16",
        "policy.algo.update_epochs=1", "train.eval_episodes=1", "train.video=false", "train.progress=false",
        "train.run_dir=run"]
MY_TASK = "# @package _global_\ntask: {name: my_pendulum, backend: gym, env_id: Pendulum-v1, max_episode_steps: 17}\n"
MY_PPO = ("# @package _global_\npolicy:\n  name: ppo\n  actor: {type: gaussian, hidden: [7]}\n"
          "  critic: {hidden: [5]}\n  algo: {name: ppo}\n")

pytestmark = pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                                reason="builds the wheel from a git checkout")


def run(cmd: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, f"{cmd}: {proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """The checkout's files as git sees them (tracked and new, not ignored; links kept), away from build debris."""
    src = tmp_path_factory.mktemp("src")
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], REPO).split("\0")
    for rel in filter(None, listed):
        origin, copy = REPO / rel, src / rel
        if origin.is_symlink() or origin.is_file():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, copy, follow_symlinks=False)
    return src


@pytest.fixture(scope="module")
def dist(source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", out,
         source], source)
    run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(out)!r})"], source)
    return out


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory) -> Path:
    """A fresh venv holding only the wheel; the dependencies come from this interpreter's import path (less
    the checkout) through a .pth of path lines, which activates no editable robopol installed there."""
    env = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--without-pip", env], env)
    python = env / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index",
         next(dist.glob("*.whl"))], env)
    site = Path(installed(env, env, "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    deps = [p for p in sys.path if p and Path(p).is_dir() and Path(p).resolve() != REPO]
    (site / "robopol_test_deps.pth").write_text("\n".join(deps) + "\n")
    return env


def installed(venv: Path, cwd: Path, program: str, *args: str) -> str:
    """A program of the venv, with nothing pointing at the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", ENV_VAR)}
    return run([venv / "bin" / program, *args], cwd, {**env, "MUJOCO_GL": "osmesa"})


def robopol(venv: Path, cwd: Path, *args: str) -> str:
    return installed(venv, cwd, "robopol", *args)


def shipped_files(source: Path) -> set[str]:
    return {str(p.relative_to(source)) for folder in set(GROUP_FOLDERS.values())
            for p in (source / folder).rglob("*") if p.is_file()}


def test_the_wheel_and_the_sdist_carry_every_config_file_and_the_typing_marker(source, dist):
    files = shipped_files(source)
    assert {"tasks/hopper.yaml", "policies/fpo.yaml", "sim/default.yaml", "hardware/sim_hopper.yaml"} <= files
    wheel = set(zipfile.ZipFile(next(dist.glob("*.whl"))).namelist())
    assert {f"robopol/configs/{f}" for f in files} | {"robopol/py.typed"} <= wheel
    with tarfile.open(next(dist.glob("*.tar.gz"))) as sdist:
        members = {m.name.partition("/")[2]: m for m in sdist.getmembers()}
    assert all(members[f"robopol/configs/{f}"].isfile() for f in files) and "robopol/py.typed" in members


def test_the_installed_package_trains_evaluates_and_exports_from_an_empty_folder(venv, tmp_path):
    where = installed(venv, tmp_path, "python", "-c", "import robopol; print(robopol.__file__)")
    assert Path(where.strip()).is_relative_to(venv)
    assert robopol(venv, tmp_path, "--version") == f"robopol {__version__}\n"
    assert json.loads(robopol(venv, tmp_path, "train", "task=pendulum", "policy=ppo", *TINY).splitlines()[-1])
    assert json.loads((tmp_path / "run" / "config.json").read_text())["task"]["env_id"] == "Pendulum-v1"
    check_eval_and_export(venv, tmp_path, episode_length=200)


def test_the_installed_package_runs_a_users_task_with_a_users_recipe(venv, tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "my_pendulum.yaml").write_text(MY_TASK)
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "ppo.yaml").write_text(MY_PPO)
    listing = robopol(venv, tmp_path, "list", "policies").splitlines()
    shadowed = next(line for line in listing if line.split()[0] == "ppo")
    assert f"{tmp_path / 'policies' / 'ppo.yaml'}  (shadows {venv}" in shadowed and "robopol/configs" in shadowed
    robopol(venv, tmp_path, "train", "task=my_pendulum", "policy=ppo", *TINY)
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (cfg["task"]["name"], cfg["policy"]["actor"]["hidden"], cfg["policy"]["critic"]["hidden"]) == \
           ("my_pendulum", [7], [5])
    check_eval_and_export(venv, tmp_path, episode_length=17)


def check_eval_and_export(venv: Path, cwd: Path, episode_length: int) -> None:
    result = json.loads(robopol(venv, cwd, "eval", "run", "--episodes", "1", "--no-video").splitlines()[-1])
    assert result["length_mean"] == episode_length and json.loads((cwd / "run/eval/result.json").read_text()) == result
    spec = json.loads(robopol(venv, cwd, "export", "run", "exported").splitlines()[-1])
    assert spec["env_id"] == "Pendulum-v1" and (cwd / "exported/policy.onnx").is_file()
    assert (cwd / "exported/policy.ts").is_file()
