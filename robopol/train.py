"""The one training loop: collect -> update -> evaluate -> log -> checkpoint, resumable after a kill."""

from __future__ import annotations

import json
import random
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from robopol.algos import ALGORITHMS
from robopol.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from robopol.config import RunConfig
from robopol.critics import ValueCritic
from robopol.data.normalizer import Normalizer, RewardScaler
from robopol.data.rollout import RolloutBuffer
from robopol.errors import CheckpointError, ConfigError
from robopol.evaluate import evaluate, record_video
from robopol.policies.base import Actor, ChunkSpec
from robopol.policies.diffusion import DiffusionActor
from robopol.policies.factory import make_actor
from robopol.policies.inference import InferencePolicy
from robopol.run_logger import RunLogger
from robopol.sim.factory import env_spec, make_vec_env
from robopol.typed_config import to_dict


def default_run_dir(cfg: RunConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.task.name.replace('/', '_')}-{cfg.policy.name}-{stamp}"


class Trainer:
    def __init__(self, cfg: RunConfig, run_dir: Path, resume: Checkpoint | None = None) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        obs_dim, act_dim, low, high = env_spec(cfg.task)  # an unusable task fails before anything is written
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
        torch.set_num_threads(cfg.train.threads)
        self._seed(cfg.train.seed)

        pol = cfg.policy
        self.spec = ChunkSpec(obs_dim, act_dim, pol.n_obs_steps, pol.horizon, pol.n_action_steps)
        self.normalizer = Normalizer(obs_dim, low, high, cfg.sim.clip_obs)
        actor = make_actor(self.spec, pol.actor)
        if cfg.train.pretrained:
            self._load_pretrained(actor, cfg.train.pretrained)
        # A behaviour-cloned actor keeps the normaliser it was trained with.
        self.update_obs_stats = cfg.sim.normalize_obs and not cfg.train.pretrained
        critic = ValueCritic(obs_dim, pol.n_obs_steps, pol.critic.hidden, pol.critic.activation)
        self.algo = ALGORITHMS[pol.algo.name][1](pol.algo, actor, critic)
        self.envs = make_vec_env(cfg.task, pol, cfg.sim.num_envs, cfg.sim.vectorization)
        self.buffer = RolloutBuffer(cfg.train.rollout_steps, cfg.sim.num_envs, (pol.n_obs_steps, obs_dim),
                                    (pol.horizon, act_dim), self.algo.extras_spec())
        self.reward_scaler = RewardScaler(cfg.sim.num_envs, pol.algo.gamma) if cfg.sim.normalize_reward else None
        self.logger = RunLogger(run_dir)
        self.env_steps, self.iteration, self.wall_time = 0, 0, 0.0
        self.started = time.perf_counter()
        self.recent_returns: list[float] = []
        if resume is not None:
            self._restore(resume)
        self.obs, _ = self.envs.reset(seed=[cfg.train.seed * 1000 + self.iteration * 100 + i for i in range(cfg.sim.num_envs)])
        self.episode_returns = np.zeros(cfg.sim.num_envs)

    # ---- the loop a reader follows top to bottom ----
    def run(self) -> dict[str, float]:
        cfg = self.cfg.train
        bar = tqdm(total=cfg.total_env_steps, initial=self.env_steps, unit="step", unit_scale=True,
                   dynamic_ncols=True, disable=not cfg.progress, desc=f"{self.cfg.policy.name} on {self.cfg.task.name}")
        result: dict[str, float] = {}
        self.started = time.perf_counter() - self.wall_time
        try:
            if cfg.pretrained and self.env_steps == 0:
                self.evaluate()  # the starting point a fine-tuning curve is measured from
            while self.env_steps < cfg.total_env_steps:
                start = time.perf_counter()
                collected = self.collect()
                metrics = self.algo.update(self.buffer, progress=self.env_steps / cfg.total_env_steps)
                self.env_steps += collected
                self.iteration += 1
                bar.update(collected)
                metrics["steps_per_second"] = collected / (time.perf_counter() - start)
                metrics["wall_time"] = self.wall_time = time.perf_counter() - self.started
                if self.recent_returns:
                    metrics["episode_return"] = float(np.mean(self.recent_returns))
                    bar.set_postfix(ret=f"{metrics['episode_return']:.1f}")
                    self.recent_returns.clear()
                self.logger.log("train", self.env_steps, metrics)
                finished = self.env_steps >= cfg.total_env_steps
                if finished or (cfg.eval_every and self.iteration % cfg.eval_every == 0):
                    result = self.evaluate()
                if finished or self.iteration % cfg.checkpoint_every == 0:
                    self.save()
        finally:
            bar.close()
            self.envs.close()
        if not result:  # resumed a run that had already finished
            result = self.evaluate()
        if cfg.video:
            record_video(self.policy(), self.cfg.task, self.cfg.policy, self.run_dir / "eval.mp4")
        self.logger.plot(f"{self.cfg.policy.name} on {self.cfg.task.name}")
        self.logger.close()
        return result

    @torch.inference_mode()
    def collect(self) -> int:
        """Fill the rollout buffer with one chunk step per env per slot; returns env steps executed."""
        algo, norm, pol = self.algo, self.normalizer, self.cfg.policy
        gamma = pol.algo.gamma
        self.buffer.reset()
        executed = 0
        for _ in range(self.cfg.train.rollout_steps):
            obs = torch.from_numpy(self.obs).float()
            if self.update_obs_stats:
                norm.update(obs)
            obs_n = norm.normalize_obs(obs)
            actions, extras = algo.act(obs_n)
            values = algo.critic(obs_n)
            env_actions = norm.unnormalize_action(actions[:, : pol.n_action_steps]).numpy()
            self.obs, reward, terminated, truncated, info = self.envs.step(env_actions)
            ended = terminated | truncated
            executed += _executed_steps(info, ended)
            final_values = torch.zeros(len(reward))
            if truncated.any():
                idx = np.flatnonzero(truncated)
                final_obs = torch.from_numpy(np.stack(info["final_obs"][idx])).float()
                final_values[idx] = algo.critic(norm.normalize_obs(final_obs))
            self._track_episodes(reward, ended)
            scaled = self.reward_scaler(reward, ended) if self.reward_scaler else reward
            self.buffer.add(obs_n, actions, torch.as_tensor(scaled, dtype=torch.float32), torch.from_numpy(terminated),
                            torch.from_numpy(truncated), values, final_values, gamma, **extras)
        last_values = algo.critic(norm.normalize_obs(torch.from_numpy(self.obs).float()))
        self.buffer.compute_gae(last_values, gamma, pol.algo.gae_lambda)
        return executed

    def _track_episodes(self, reward: np.ndarray, ended: np.ndarray) -> None:
        self.episode_returns += reward
        self.recent_returns.extend(self.episode_returns[ended].tolist())
        self.episode_returns[ended] = 0.0

    def policy(self) -> InferencePolicy:
        return InferencePolicy(self.algo.actor, self.normalizer).eval()

    def evaluate(self) -> dict[str, float]:
        metrics = evaluate(self.policy(), self.cfg.task, self.cfg.policy, self.cfg.train.eval_episodes)
        metrics["wall_time"] = time.perf_counter() - self.started
        self.algo.actor.train()
        self.logger.log("eval", self.env_steps, metrics)
        self.logger.plot(f"{self.cfg.policy.name} on {self.cfg.task.name}")
        return metrics

    # ---- pretrained start, checkpoint and resume ----
    def _load_pretrained(self, actor: Actor, path: str) -> None:
        """Fine-tuning starts from a (behaviour-cloned) checkpoint's actor weights and normaliser; a
        diffusion actor then runs its last ft_denoising_steps on a trainable copy (DPPO)."""
        ckpt = load_checkpoint(path)
        mine, theirs = self.spec, ckpt.spec
        if mine != theirs:
            raise CheckpointError(f"train.pretrained: {ckpt.path} was trained for {theirs}, but this run needs {mine}")
        if ckpt.config.policy.actor.type != self.cfg.policy.actor.type:
            raise CheckpointError(f"train.pretrained: {ckpt.path} holds a {ckpt.config.policy.actor.type} actor; "
                                  f"policy.actor.type is {self.cfg.policy.actor.type}")
        ckpt.load_into("actor", actor, "train.pretrained")
        ckpt.load_into("normalizer", self.normalizer, "train.pretrained")
        if isinstance(actor, DiffusionActor) and actor.ft_denoising_steps < actor.num_sampling_steps:
            actor.finetune_last(actor.ft_denoising_steps)

    def save(self) -> Path:
        state: dict[str, Any] = {
            "env_steps": self.env_steps, "iteration": self.iteration, "wall_time": self.wall_time, "algo": self.algo.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.algo.optimizers().items()},
            "rng": _rng_state(),
            "reward_scaler": self.reward_scaler.state_dict() if self.reward_scaler else {},
        }
        modules = {**self.algo.modules(), "normalizer": self.normalizer}
        return save_checkpoint(self.run_dir, self.cfg, self.spec, self.env_steps, modules, state)

    def _restore(self, ckpt: Checkpoint) -> None:
        for name, module in {**self.algo.modules(), "normalizer": self.normalizer}.items():
            ckpt.load_into(name, module, "resume")
        state = ckpt.trainer_state()
        for name, optimizer in self.algo.optimizers().items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.algo.load_state_dict(state["algo"])
        if self.reward_scaler:
            self.reward_scaler.load_state_dict(state["reward_scaler"])
        self.env_steps, self.iteration = int(state["env_steps"]), int(state["iteration"])
        self.wall_time = float(state["wall_time"])
        _set_rng_state(state["rng"])
        self.logger.truncate_after(self.env_steps)

    @staticmethod
    def _seed(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)


def _executed_steps(info: dict[str, Any], ended: np.ndarray) -> int:
    """Env steps run by one vector step: a finished env's count is in final_info (SAME_STEP reset)."""
    steps = np.asarray(info.get("chunk_steps", np.zeros(len(ended), dtype=int)))
    if ended.any():
        steps = np.where(ended, info["final_info"]["chunk_steps"], steps)
    return int(steps.sum())


def _rng_state() -> dict[str, Any]:
    _, key, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
            "numpy": {"key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                      "cached_gaussian": float(cached)}}


def _set_rng_state(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    random.setstate((3, tuple(rng["python"]), None))
    np_rng = rng["numpy"]
    np.random.set_state(("MT19937", np_rng["key"].numpy().astype(np.uint32), np_rng["pos"], np_rng["has_gauss"],
                         np_rng["cached_gaussian"]))


def train(cfg: RunConfig, run_dir: Path | None = None) -> tuple[Path, dict[str, float]]:
    ALGORITHMS[cfg.policy.algo.name]  # fails at once, before any file is written, for offline-only algorithms
    run_dir = Path(run_dir or cfg.train.run_dir or default_run_dir(cfg))
    if (run_dir / "checkpoints" / "LATEST").exists():
        raise ConfigError(f"train.run_dir: {run_dir} already holds a run; continue it with `robopol resume {run_dir}` "
                          "or choose another train.run_dir")
    for stale in ("train.csv", "eval.csv"):
        (run_dir / stale).unlink(missing_ok=True)
    trainer = Trainer(cfg, run_dir)
    return run_dir, trainer.run()


def resume(run_dir: Path, total_env_steps: int | None = None) -> tuple[Path, dict[str, float]]:
    """Continue a run from its newest checkpoint: weights, optimisers, normaliser, counters and RNG.
    `total_env_steps` extends (or sets) the run's budget; an annealed learning rate follows the new one."""
    ckpt = load_checkpoint(run_dir)
    if total_env_steps is not None:
        if total_env_steps <= ckpt.env_steps:
            raise ConfigError(f"train.total_env_steps: {total_env_steps} is not beyond the {ckpt.env_steps} env steps "
                              f"{run_dir} has already run; give a larger budget")
        ckpt.config.train.total_env_steps = total_env_steps
    trainer = Trainer(ckpt.config, Path(run_dir), resume=ckpt)
    return Path(run_dir), trainer.run()
