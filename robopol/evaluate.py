"""Evaluation: fixed seeds disjoint from training, batched across episodes,
and a rollout video when offscreen rendering is available.

Metrics include each benchmark's protocol (robopol.protocols): `success_rate` (robomimic: success at
any step) and, for PushT, `mean_max_reward`, the mean over episodes of the per-episode max of
clip(coverage / 0.95, 0, 1), diffusion_policy's test/mean_score."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from robopol.config import PolicyConfig, TaskConfig
from robopol.data.atomic import atomic_output
from robopol.policies.bundle import PolicyBundle
from robopol.protocols import SUCCESS_COVERAGE
from robopol.sim.factory import EVAL_SEED_BASE, make_env

log = logging.getLogger(__name__)


@torch.inference_mode()
def evaluate(policy: PolicyBundle, task: TaskConfig, policy_cfg: PolicyConfig, episodes: int,
             seed_base: int = EVAL_SEED_BASE) -> dict[str, float]:
    """Run `episodes` episodes side by side, one per seed seed_base + i, with the sampler noise that
    policy_cfg.eval_noise names (random noise is drawn from a generator seeded with seed_base, so the
    numbers reproduce). The policy acts on all unfinished episodes in one batch; finished ones are not
    stepped again (slow simulators such as robosuite spend no time on them)."""
    draw = eval_noise(policy_cfg, seed_base)
    envs = [make_env(task, policy_cfg) for _ in range(episodes)]
    try:
        obs = np.stack([env.reset(seed=seed_base + i)[0] for i, env in enumerate(envs)])
        returns, lengths = np.zeros(episodes), np.zeros(episodes, dtype=int)
        max_coverage = np.zeros(episodes)
        success, active = np.zeros(episodes, dtype=bool), np.ones(episodes, dtype=bool)
        while active.any():
            idx = np.flatnonzero(active)
            noise = draw(policy.noise_shape(len(idx)))
            actions = policy(torch.as_tensor(obs[idx], dtype=torch.float32), noise)[:, : policy.n_action_steps]
            for i, action in zip(idx, actions.numpy()):
                obs[i], reward, terminated, truncated, info = envs[i].step(action)
                returns[i] += reward
                max_coverage[i] = info.get("max_coverage", 0.0)
                lengths[i] += info.get("chunk_steps", 1)
                success[i] |= bool(info.get("is_success", False))
                active[i] = not (terminated or truncated)
    finally:
        for env in envs:
            env.close()
    metrics = {"return_mean": float(returns.mean()), "return_std": float(returns.std()),
               "length_mean": float(lengths.mean()), "success_rate": float(success.mean()), "episodes": episodes}
    if task.backend == "pusht":
        metrics["mean_max_reward"] = float(np.clip(max_coverage / SUCCESS_COVERAGE, 0.0, 1.0).mean())
    return metrics


def eval_noise(policy_cfg: PolicyConfig, seed: int) -> Callable[[tuple[int, ...]], torch.Tensor]:
    """shape -> sampler noise for evaluation: zeros, or standard normal from a generator seeded with `seed`."""
    if policy_cfg.eval_noise == "zero":
        return torch.zeros
    generator = torch.Generator().manual_seed(seed)
    return lambda shape: torch.randn(shape, generator=generator)


def _renders_with_mujoco(task: TaskConfig) -> bool:
    if task.backend == "robomimic":
        return True
    return task.backend == "gym" and "mujoco" in str(gym.spec(task.env_id).entry_point)


def _offscreen_gl_problem() -> str | None:
    """Why MuJoCo cannot open an offscreen GL context here, or None. Probing first keeps a failed
    renderer from being built (gymnasium's viewer then prints errors when it is garbage-collected)."""
    try:
        import mujoco

        context = mujoco.GLContext(16, 16)
        context.make_current()
        context.free()
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"
    return None


@torch.inference_mode()
def record_video(policy: PolicyBundle, task: TaskConfig, policy_cfg: PolicyConfig, path: Path,
                 seed: int = EVAL_SEED_BASE, max_frames: int = 1000) -> Path | None:
    """The first evaluation episode rendered offscreen to MP4; None (and a warning) when there is no GL."""
    problem = _offscreen_gl_problem() if _renders_with_mujoco(task) else None
    env = None
    try:
        if problem:
            raise RuntimeError(problem)
        env = make_env(task, policy_cfg, render_mode="rgb_array")
        obs, _ = env.reset(seed=seed)
        frames = [env.render()]
    except Exception as exc:  # noqa: BLE001  (GL back-ends fail in many ways; a video is optional)
        warnings.warn(f"no rollout video: offscreen rendering is unavailable ({exc}). "
                      "On Debian install libosmesa6 and set MUJOCO_GL=osmesa.", stacklevel=1)
        if env is not None:
            env.close()
        return None
    import imageio.v2 as imageio

    draw = eval_noise(policy_cfg, seed)
    done = False
    while not done and len(frames) < max_frames:
        noise = draw(policy.noise_shape(1))
        action = policy(torch.as_tensor(obs, dtype=torch.float32)[None], noise)[0, : policy.n_action_steps]
        # step the chunk one action at a time so every frame is rendered
        for a in action.numpy():
            obs, _, terminated, truncated, _ = env.step(a[None])
            frames.append(env.render())
            done = terminated or truncated
            if done:
                break
    env.close()
    fps = env.metadata.get("render_fps", 30)
    with atomic_output(Path(path)) as tmp:
        imageio.mimsave(tmp, [np.asarray(f) for f in frames], fps=min(int(fps), 60), macro_block_size=1)
    return path
