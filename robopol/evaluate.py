"""Evaluation: fixed seeds disjoint from training, batched across episodes (in blocks that bound memory),
and a rollout video when offscreen rendering is available.

Metrics include each benchmark's protocol (robopol.protocols): `success_rate` (robomimic: success at
any step) and, for PushT, `mean_max_reward`, the mean over episodes of the per-episode max of
clip(coverage / 0.95, 0, 1), diffusion_policy's test/mean_score."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
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


MAX_PARALLEL = 50  # envs alive at once: 200 robosuite envs take ~17 GB, 50 about a quarter of that

NoiseDraw = Callable[[Sequence[int], tuple[int, ...]], torch.Tensor]


@torch.inference_mode()
def evaluate(policy: PolicyBundle, task: TaskConfig, policy_cfg: PolicyConfig, episodes: int,
             seed_base: int = EVAL_SEED_BASE, max_parallel: int = MAX_PARALLEL) -> dict[str, float]:
    """Run `episodes` episodes, one per seed seed_base + i, side by side in blocks of at most `max_parallel`
    envs (memory), with the sampler noise that policy_cfg.eval_noise names (random noise: each episode its
    own generator seeded with its env seed, so the numbers reproduce and do not depend on the blocks)."""
    if max_parallel < 1:
        raise ValueError(f"max_parallel must be >= 1, got {max_parallel}")
    seeds = [seed_base + i for i in range(episodes)]
    draw = eval_noise(policy_cfg, seeds)
    blocks = [_run_block(policy, task, policy_cfg, range(start, min(start + max_parallel, episodes)), seeds, draw)
              for start in range(0, episodes, max_parallel)]
    returns, lengths, max_coverage, success = (np.concatenate(column) for column in zip(*blocks))
    metrics = {"return_mean": float(returns.mean()), "return_std": float(returns.std()),
               "length_mean": float(lengths.mean()), "success_rate": float(success.mean()), "episodes": episodes}
    if task.backend == "pusht":
        metrics["mean_max_reward"] = float(np.clip(max_coverage / SUCCESS_COVERAGE, 0.0, 1.0).mean())
    return metrics


def _run_block(policy: PolicyBundle, task: TaskConfig, policy_cfg: PolicyConfig, block: range, seeds: Sequence[int],
               draw: NoiseDraw) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Episodes `block` side by side, one env each: per episode the return, length, last max_coverage and
    success. The policy acts on all unfinished episodes in one batch; finished ones are not stepped again
    (slow simulators such as robosuite spend no time on them)."""
    n = len(block)
    envs = [make_env(task, policy_cfg) for _ in range(n)]
    try:
        obs = np.stack([env.reset(seed=seeds[e])[0] for e, env in zip(block, envs)])
        returns, lengths, max_coverage = np.zeros(n), np.zeros(n, dtype=int), np.zeros(n)
        success, active = np.zeros(n, dtype=bool), np.ones(n, dtype=bool)
        while active.any():
            idx = np.flatnonzero(active)
            noise = draw([block[i] for i in idx], policy.noise_shape(len(idx)))
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
    return returns, lengths, max_coverage, success


def eval_noise(policy_cfg: PolicyConfig, seeds: Sequence[int]) -> NoiseDraw:
    """(episodes, shape) -> sampler noise for those episodes (rows in that order; noise shapes are batch
    first): zeros, or standard normal with each episode's rows from its own generator, seeded with its
    entry of `seeds`, so an episode's noise does not depend on which episodes are drawn beside it."""
    if policy_cfg.eval_noise == "zero":
        return lambda _episodes, shape: torch.zeros(shape)
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    return lambda episodes, shape: torch.cat([torch.randn((1, *shape[1:]), generator=generators[e]) for e in episodes])


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

    draw = eval_noise(policy_cfg, [seed])  # the noise evaluate gives the episode with this seed
    done = False
    while not done and len(frames) < max_frames:
        noise = draw([0], policy.noise_shape(1))
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
