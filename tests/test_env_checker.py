"""Gymnasium's own env checker on every shipped task, as the task's base env and as robopol wraps it
for a policy (observation history 2, action chunks of 3), so wrapped envs can be rebuilt from their
spec. Rendering is left out of the check: check_env opens every declared render mode, "human" too,
and a window cannot open on a headless machine (GLFW aborts the process)."""

import warnings

import pytest
from gymnasium.utils.env_checker import check_env

from robopol.config import PolicyConfig, load_run_config
from robopol.config_search import shipped_root
from robopol.sim.factory import make_base_env, make_env

# Advice check_env prints about any env of these kinds, not a failure of the API.
BENIGN = ("is different from the unwrapped version", "Box observation space minimum value is -infinity",
          "Box observation space maximum value is infinity", "we recommend using a symmetric and normalized space")
CHUNKED = PolicyConfig(n_obs_steps=2, horizon=4, n_action_steps=3)


def checked(env) -> list[str]:
    """check_env's verdict on env (raises on a failure) and its warnings that are not BENIGN."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env, skip_render_check=True)
    finally:
        env.close()
    return [str(w.message) for w in caught if not any(b in str(w.message) for b in BENIGN)]


def distinct_tasks() -> list[str]:
    """Every shipped task file, one per distinct env (budget variants such as hopper_300k share hopper's)."""
    seen, names = set(), []
    for name in sorted(p.stem for p in (shipped_root() / "tasks").glob("*.yaml")):
        task = load_run_config([f"task={name}"]).task
        key = (task.backend, task.env_id, repr(sorted(task.env_kwargs.items())), task.max_episode_steps)
        if key not in seen:
            seen.add(key)
            names.append(name)
    return names


@pytest.mark.parametrize("task", distinct_tasks())
def test_every_task_passes_gymnasiums_env_checker_base_and_chunked(task):
    cfg = load_run_config([f"task={task}"]).task
    assert checked(make_base_env(cfg)) == []
    assert checked(make_env(cfg, CHUNKED)) == []
