"""Evaluation: deterministic sampling on fixed seeds disjoint from training, batched across episodes,
and a rollout video when offscreen rendering is available."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from gymnasium.vector import SyncVectorEnv

from robopol.config import PolicyConfig, TaskConfig
from robopol.policies.inference import InferencePolicy
from robopol.sim.factory import EVAL_SEED_BASE, make_env

log = logging.getLogger(__name__)


@torch.inference_mode()
def evaluate(policy: InferencePolicy, task: TaskConfig, policy_cfg: PolicyConfig, episodes: int,
             seed_base: int = EVAL_SEED_BASE) -> dict[str, float]:
    """Run `episodes` episodes in parallel, one per seed seed_base + i; zero noise (deterministic)."""
    envs = SyncVectorEnv([lambda: make_env(task, policy_cfg) for _ in range(episodes)])
    try:
        obs, _ = envs.reset(seed=[seed_base + i for i in range(episodes)])
        returns, lengths = np.zeros(episodes), np.zeros(episodes, dtype=int)
        success, active = np.zeros(episodes, dtype=bool), np.ones(episodes, dtype=bool)
        noise = torch.zeros(policy.noise_shape(episodes))
        while active.any():
            actions = policy(torch.as_tensor(obs, dtype=torch.float32), noise)[:, : policy.n_action_steps]
            obs, reward, terminated, truncated, info = envs.step(actions.numpy())
            returns += reward * active
            lengths += np.asarray(info.get("chunk_steps", 1)) * active
            success |= np.asarray(info.get("is_success", False), dtype=bool) & active
            active &= ~(terminated | truncated)
    finally:
        envs.close()
    return {"return_mean": float(returns.mean()), "return_std": float(returns.std()),
            "length_mean": float(lengths.mean()), "success_rate": float(success.mean()), "episodes": episodes}


@torch.inference_mode()
def record_video(policy: InferencePolicy, task: TaskConfig, policy_cfg: PolicyConfig, path: Path,
                 seed: int = EVAL_SEED_BASE, max_frames: int = 1000) -> Path | None:
    """One deterministic episode rendered offscreen to MP4; None (and a warning) when there is no GL."""
    try:
        env = make_env(task, policy_cfg, render_mode="rgb_array")
        obs, _ = env.reset(seed=seed)
        frames = [env.render()]
    except Exception as exc:  # noqa: BLE001  (GL back-ends fail in many ways; a video is optional)
        warnings.warn(f"no rollout video: offscreen rendering is unavailable ({type(exc).__name__}: {exc}). "
                      "On Debian install libosmesa6 and set MUJOCO_GL=osmesa.", stacklevel=2)
        return None
    import imageio.v2 as imageio

    noise = torch.zeros(policy.noise_shape(1))
    done = False
    while not done and len(frames) < max_frames:
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
    imageio.mimsave(path, [np.asarray(f) for f in frames], fps=min(int(fps), 60), macro_block_size=1)
    return path
