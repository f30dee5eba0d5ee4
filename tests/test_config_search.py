"""The config search path: a user's folders before the shipped ones, first match wins, errors name every folder."""

import os
from pathlib import Path

import pytest

from robopol import __version__, config_search
from robopol.cli import _hardware_config, main
from robopol.config import load_run_config
from robopol.errors import ConfigError
from robopol.hardware.config import load_hardware_config

REPO = Path(__file__).resolve().parents[1]
MY_TASK = "# @package _global_\ntask: {name: my_pendulum, backend: gym, env_id: Pendulum-v1, max_episode_steps: 17}\n"
MY_PPO = ("# @package _global_\npolicy:\n  name: ppo\n  actor: {type: gaussian, hidden: [7]}\n"
          "  critic: {hidden: [5]}\n  algo: {name: ppo, lr: 0.00123}\n")


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """An empty project folder as the working directory, with no folders from the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(config_search.ENV_VAR, raising=False)
    return tmp_path


@pytest.mark.parametrize("folder", sorted(set(config_search.GROUP_FOLDERS.values())))
def test_the_package_ships_every_file_of_the_top_level_folders(folder):
    shipped = config_search.shipped_root() / folder
    files = sorted(p.relative_to(REPO / folder) for p in (REPO / folder).rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(shipped) for p in shipped.rglob("*") if p.is_file())


def test_a_new_task_in_the_working_directory_is_found(project):
    write(project, "tasks/my_pendulum.yaml", MY_TASK)
    cfg = load_run_config(["task=my_pendulum", "policy=ppo"])
    assert (cfg.task.name, cfg.task.env_id, cfg.task.max_episode_steps) == ("my_pendulum", "Pendulum-v1", 17)
    assert cfg.policy.actor.hidden == [64, 64]  # the shipped ppo: the user has none


def test_a_user_recipe_shadows_the_shipped_one(project):
    mine = write(project, "policies/ppo.yaml", MY_PPO)
    cfg = load_run_config(["task=pendulum", "policy=ppo"])
    assert (cfg.policy.actor.hidden, cfg.policy.critic.hidden, cfg.policy.algo.lr) == ([7], [5], 0.00123)
    assert cfg.train.rollout_steps == 256  # the shipped ppo.yaml's train keys are gone with it, the default stays
    files = config_search.candidates("policy")["ppo"]
    assert files == [mine, config_search.shipped_root() / "policies" / "ppo.yaml"]


def test_the_environment_folders_come_before_the_working_directory(project, tmp_path_factory, monkeypatch):
    write(project, "tasks/my_pendulum.yaml", MY_TASK)
    first, second = tmp_path_factory.mktemp("first"), tmp_path_factory.mktemp("second")
    write(second, "tasks/my_pendulum.yaml", MY_TASK.replace("17", "5"))
    write(first, "tasks/other.yaml", MY_TASK)
    monkeypatch.setenv(config_search.ENV_VAR, os.pathsep.join([str(first), str(second)]))
    assert config_search.search_roots() == [first, second, project, config_search.shipped_root()]
    assert load_run_config(["task=my_pendulum"]).task.max_episode_steps == 5


@pytest.mark.parametrize("text", ["task: {name: mine}\n", "# my task\n# @package _global_\ntask: {name: mine}\n"])
def test_a_group_file_without_the_global_header_is_named(project, text):
    """Hydra would nest it under `tasks:` (no header, or a plain comment before the header)."""
    path = write(project, "tasks/mine.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_run_config(["task=mine"])
    assert str(err.value) == f"task=mine: {path} must begin with the line '# @package _global_' (before any " \
                             "other comment), as robopol's own files do"


def test_unknown_names_are_listed_with_the_folder_each_lives_in(project):
    write(project, "tasks/my_pendulum.yaml", MY_TASK)
    with pytest.raises(ConfigError) as err:
        load_run_config(["task=nope"])
    shipped = config_search.shipped_root() / "tasks"
    assert str(err.value).startswith(f"unknown task 'nope'; allowed: my_pendulum (in {project / 'tasks'}); ant, ")
    last = sorted(p.stem for p in shipped.glob("*.yaml"))[-1]  # the shipped names end the list, with their folder
    assert ", walker2d, " in str(err.value) and f"{last} (shipped with robopol in {shipped})" in str(err.value)


def test_a_missing_user_folder_is_an_error(project, monkeypatch, capsys):
    monkeypatch.setenv(config_search.ENV_VAR, "")
    assert main(["--config-dir", str(project / "nope"), "train", "task=pendulum"]) == 2
    assert capsys.readouterr().err == f"error: {config_search.ENV_VAR} (or --config-dir): " \
                                      f"'{project / 'nope'}' is not an existing folder\n"


def test_hardware_comes_from_the_same_search_path(project):
    shipped = (config_search.shipped_root() / "hardware" / "sim_inverted_pendulum.yaml").read_text()
    write(project, "hardware/my_robot.yaml", shipped.replace("name: sim_inverted_pendulum", "name: my_robot"))
    assert load_hardware_config("my_robot").name == "my_robot"
    assert _hardware_config(["hardware=my_robot", "hardware.obs_dim=9"])["obs_dim"] == 9
    with pytest.raises(ConfigError, match=r"unknown hardware 'nope'; allowed: my_robot \(in .*\); reference_robot, sim_hopper, "):
        load_hardware_config("nope")


def test_list_shows_each_name_with_its_file_and_what_it_shadows(project, tmp_path_factory, monkeypatch, capsys):
    mine, theirs = tmp_path_factory.mktemp("mine"), tmp_path_factory.mktemp("theirs")
    task, their_task = write(mine, "tasks/my_pendulum.yaml", MY_TASK), write(theirs, "tasks/my_pendulum.yaml", MY_TASK)
    ppo = write(project, "policies/ppo.yaml", MY_PPO)
    monkeypatch.setenv(config_search.ENV_VAR, "")
    assert main(["--config-dir", str(mine), "--config-dir", str(theirs), "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    shipped = config_search.shipped_root()
    assert lines[0] == "tasks:" and lines.index("policies:") < lines.index("sim:") < lines.index("hardware:")
    rows = [line for line in lines if line.startswith("  ") and not line.startswith("  <Gymnasium id>")]
    words = [" ".join(line.split()) for line in rows]
    assert f"my_pendulum {task} (shadows {their_task})" in words
    assert f"ppo {ppo} (shadows {shipped / 'policies' / 'ppo.yaml'})" in words
    assert f"sim_inverted_pendulum {shipped / 'hardware' / 'sim_inverted_pendulum.yaml'}" in words
    # names padded to the longest, so every file starts in one column
    file_columns = {row.index(row.split()[1]) for row in rows}
    assert len(file_columns) == 1, file_columns
    assert main(["list", "sim"]) == 0
    assert capsys.readouterr().out == f"sim:\n  default  {shipped / 'sim' / 'default.yaml'}\n"


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"robopol {__version__}\n"
