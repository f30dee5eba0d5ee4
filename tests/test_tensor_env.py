"""Tensor envs: PointMass's dynamics, termination, truncation, resets and seeding by hand-worked cases;
the Isaac Gym adapter on a torch stand-in that follows IsaacGymEnvs' VecTask contract (Isaac Gym
itself cannot be installed here); the adapter's types checked against isaacgym-stubs."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from robopol.config import TaskConfig
from robopol.errors import ConfigError
from robopol.sim.factory import make_base_env, make_tensor_env
from robopol.sim.isaacgym_adapter import IsaacGymVecEnv
from robopol.sim.point_mass import PointMass

ROOT = Path(__file__).resolve().parent.parent


def place(env: PointMass, pos, vel, goal) -> None:
    env.pos, env.vel, env.goal = (torch.tensor(x, dtype=torch.float32) for x in (pos, vel, goal))


def test_point_mass_follows_its_damped_euler_dynamics_and_walls():
    env = PointMass(2)
    env.reset(seed=0)
    place(env, [[0.0, 0.0], [0.95, 0.0]], [[0.2, 0.0], [1.0, 0.5]], [[0.5, 0.5], [0.0, 0.0]])
    step = env.step(torch.tensor([[1.0, -1.0], [5.0, 0.0]]))  # the 5 is clipped to 1
    # env 0: v' = 0.95 * (0.2, 0) + 0.1 * (1, -1) = (0.29, -0.1); p' = (0.029, -0.01)
    torch.testing.assert_close(step.obs[0], torch.tensor([0.029, -0.01, 0.29, -0.1, 0.471, 0.51]))
    # env 1: v' = (0.95 + 0.1, 0.475); p'_x = 0.95 + 0.105 hits the wall at 1, which stops v'_x
    torch.testing.assert_close(step.obs[1, :4], torch.tensor([1.0, 0.0475, 0.0, 0.475]))
    torch.testing.assert_close(step.reward, -torch.tensor([np.hypot(0.471, 0.51), np.hypot(1.0, 0.0475)]).float())
    assert not step.terminated.any() and not step.truncated.any()
    torch.testing.assert_close(step.final_obs, step.obs)


def test_arriving_at_rest_terminates_and_resets_only_that_env():
    env = PointMass(2, max_episode_steps=10)
    env.reset(seed=1)
    place(env, [[0.3, 0.3], [0.3, 0.3]], [[0.0, 0.0], [1.0, 0.0]], [[0.31, 0.3], [0.31, 0.3]])
    step = env.step(torch.zeros(2, 2))
    # both end within 0.05 of the goal; env 1 arrives at speed 0.95, too fast to stop
    assert step.terminated.tolist() == [True, False] and not step.truncated.any()
    torch.testing.assert_close(step.final_obs[0], torch.tensor([0.3, 0.3, 0.0, 0.0, 0.01, 0.0]))
    assert not torch.allclose(step.obs[0], step.final_obs[0]) and (step.obs[0, 2:4] == 0).all()
    torch.testing.assert_close(step.obs[1], step.final_obs[1])
    assert env.steps.tolist() == [0, 1]


def test_time_limit_truncates_and_success_on_the_last_step_is_a_termination():
    env = PointMass(3, max_episode_steps=4)
    env.reset(seed=2)
    for _ in range(3):
        assert not env.step(torch.zeros(3, 2)).truncated.any()
    place(env, [[0.0, 0.0], [0.5, 0.5], [-0.5, 0.0]], [[0.0, 0.0]] * 3, [[0.0, 0.0], [0.0, 0.0], [0.5, 0.0]])
    step = env.step(torch.zeros(3, 2))
    assert step.terminated.tolist() == [True, False, False] and step.truncated.tolist() == [False, True, True]
    torch.testing.assert_close(step.final_obs[1], torch.tensor([0.5, 0.5, 0.0, 0.0, -0.5, -0.5]))
    assert env.steps.tolist() == [0, 0, 0]


def test_point_mass_seeds_reproduce_whole_runs_across_resets():
    def run(seed: int) -> torch.Tensor:
        env = PointMass(4, max_episode_steps=5)
        out = [env.reset(seed=seed)]
        actions = torch.linspace(-1, 1, 8).reshape(4, 2)
        out += [torch.cat([env.step(actions).obs, env.step(-actions).final_obs]) for _ in range(6)]
        return torch.cat(out)

    torch.testing.assert_close(run(7), run(7))
    assert not torch.allclose(run(7), run(8))


def test_point_mass_as_a_gymnasium_task_hands_out_final_then_reset_observations():
    env = make_base_env(TaskConfig(name="point_mass", backend="tensor", env_id="PointMass", max_episode_steps=3))
    first, _ = env.reset(seed=4)
    np.testing.assert_array_equal(first, env.reset(seed=4)[0])
    for _ in range(3):
        obs, reward, terminated, truncated, _ = env.step(np.zeros(2, np.float32))
    assert truncated and not terminated and reward == pytest.approx(-np.linalg.norm(obs[4:]))
    np.testing.assert_allclose(obs[:2], first[:2])  # at rest all along: the final observation
    assert not np.allclose(env.reset()[0], first)  # the next episode the batch had already begun
    with pytest.raises(ConfigError, match="task.env_id: 'PointMas' is not a tensor env; allowed: PointMass"):
        make_tensor_env(TaskConfig(backend="tensor", env_id="PointMas"), 4)


class CounterTask:
    """A stand-in that follows IsaacGymEnvs' VecTask contract: the task resets envs flagged in
    reset_buf at the start of its next step (pre-physics), then advances progress_buf, computes
    obs_buf = (position, progress), rew_buf = position, reset_buf = terminal | time-out with
    terminal = position > 3, and extras["time_outs"] = progress_buf >= max_episode_length - 1.
    Reset positions come from torch's global generator, as IsaacGymEnvs tasks draw them."""

    def __init__(self, num_envs: int, max_episode_length: int = 5) -> None:
        self.num_envs, self.num_obs, self.num_actions = num_envs, 2, 1
        self.max_episode_length, self.rl_device = max_episode_length, "cpu"
        self.position = torch.zeros(num_envs)
        self.obs_buf, self.rew_buf = torch.zeros(num_envs, 2), torch.zeros(num_envs)
        self.reset_buf = torch.ones(num_envs, dtype=torch.long)
        self.progress_buf = torch.zeros(num_envs, dtype=torch.long)
        self.extras: dict = {}

    def reset_idx(self, env_ids: torch.Tensor) -> None:
        self.position[env_ids] = torch.rand(len(env_ids))
        self.progress_buf[env_ids] = 0
        self.reset_buf[env_ids] = 0

    def step(self, actions: torch.Tensor):
        flagged = self.reset_buf.nonzero().squeeze(-1)
        if len(flagged):
            self.reset_idx(flagged)
        self.position += actions[:, 0].clamp(-1, 1)
        self.progress_buf += 1
        self.obs_buf = torch.stack([self.position, self.progress_buf.float()], 1)
        self.rew_buf = self.position.clone()
        time_out = self.progress_buf >= self.max_episode_length - 1
        self.reset_buf = ((self.position > 3) | time_out).long()
        self.extras["time_outs"] = time_out.long()
        return {"obs": self.obs_buf.clone()}, self.rew_buf, self.reset_buf, self.extras

    def reset(self):
        return self.step(torch.zeros(self.num_envs, 1))[0]


def test_isaacgym_adapter_splits_resets_into_terminations_and_time_outs():
    env = IsaacGymVecEnv(CounterTask(2, max_episode_length=6))
    obs = env.reset(seed=0)  # VecTask's reset is one zero-action step: progress 1, position in [0, 1)
    assert obs[:, 1].tolist() == [1.0, 1.0] and env.obs_dim == 2 and env.act_dim == 1
    actions = torch.tensor([[1.0], [0.0]])  # env 0 passes 3 at its third step; env 1 waits for the limit
    flags = []
    for _ in range(4):
        step = env.step(actions)
        flags.append((step.terminated.tolist(), step.truncated.tolist()))
        if step.terminated[0]:
            assert step.obs[0, 0] > 3 and step.final_obs[0, 0] > 3  # final obs = obs (documented)
    assert flags == [([False, False], [False, False])] * 2 + [([True, False], [False, False]), ([False, False], [False, True])]
    assert step.final_obs[1, 1] == 5.0 and step.obs[1, 1] == 5.0 and step.obs[0, 1] == 1.0
    assert env.step(actions).obs[1, 1] == 1.0  # the task reset env 1 during this step
    assert step.reward.dtype == torch.float32 and step.terminated.dtype == torch.bool


def test_isaacgym_adapter_counts_a_terminal_state_on_the_time_out_step_as_a_time_out():
    env = IsaacGymVecEnv(CounterTask(1, max_episode_length=5))
    env.reset(seed=0)
    steps = [env.step(torch.ones(1, 1)) for _ in range(3)]  # position > 3 and progress 4 together
    assert steps[-1].obs[0, 0] > 3 and (steps[-1].terminated.item(), steps[-1].truncated.item()) == (False, True)


def test_isaacgym_adapter_reset_seeds_the_tasks_generator():
    def first(seed: int) -> torch.Tensor:
        return IsaacGymVecEnv(CounterTask(3)).reset(seed=seed)

    torch.testing.assert_close(first(5), first(5))
    assert not torch.allclose(first(5), first(6))


def pyright(tmp_path: Path, files: list[Path]) -> list[str]:
    """basedpyright's errors on `files` (standard mode, the repository importable)."""
    config = tmp_path / "pyrightconfig.json"
    config.write_text(json.dumps({"include": [str(f) for f in files], "extraPaths": [str(ROOT)],
                                  "typeCheckingMode": "standard", "reportMissingModuleSource": False}))
    exe = shutil.which("basedpyright", path=str(Path(sys.executable).parent))
    assert exe, "basedpyright and isaacgym-stubs come with the dev extra: pip install -e .[dev]"
    out = subprocess.run([exe, "--pythonpath", sys.executable, "-p", str(config), "--outputjson"],
                         capture_output=True, text=True, timeout=120)
    return [d["message"] for d in json.loads(out.stdout)["generalDiagnostics"] if d["severity"] == "error"]


def test_isaacgym_adapter_type_checks_against_isaacgym_stubs(tmp_path):
    adapter = ROOT / "robopol/sim/isaacgym_adapter.py"
    assert pyright(tmp_path, [adapter, ROOT / "robopol/sim/tensor_env.py", ROOT / "robopol/sim/point_mass.py"]) == []
    # the checker does read the stubs and the tensor-env protocol: a misspelt Isaac Gym type and an
    # adapter without one of the protocol's attributes are both caught
    source = adapter.read_text()
    broken = {"gym_type.py": source.replace("gym: gymapi.Gym\n", "gym: gymapi.Gymm\n"),
              "no_act_dim.py": source.replace("self.num_envs, self.obs_dim, self.act_dim = task.num_envs, task.num_obs, task.num_actions",
                                              "self.num_envs, self.obs_dim = task.num_envs, task.num_obs")}
    for name, text in broken.items():
        assert text != source, name
        (tmp_path / name).write_text(text)
        errors = pyright(tmp_path, [tmp_path / name])
        assert errors and ("Gymm" in errors[0] if name == "gym_type.py" else "act_dim" in " ".join(errors)), errors
