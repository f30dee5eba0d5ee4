"""Off-policy loop (SAC, OGPO): step the envs -> transitions into replay -> algo.update(replay)
every train_freq chunk steps, at a set update-to-data ratio, once learning_starts env steps are in.
One iteration (a row of train.csv; the unit of eval_every and checkpoint_every) is
train.rollout_steps chunk steps of every env.

Every transition is stored with raw observations and, at every episode end (terminated or
truncated), the episode's true final observation as next_obs. Gradient steps per iteration follow
utd_ratio x transitions collected since learning_starts; a fractional ratio carries its remainder
to the next iteration, so over a run updates = floor(utd_ratio x transitions). With policy.algo.demos,
a demonstration file's chunks fill a second store that supplies demo_fraction of every batch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from robopol.algos.off_policy import OffPolicyAlgorithm, Replay
from robopol.data.datasets import check_dimensions, load_demonstrations
from robopol.data.normalizer import RewardScaler
from robopol.data.transitions import TransitionStore
from robopol.errors import ConfigError
from robopol.loops.base import OnlineLoop, RunState


class OffPolicyLoop(OnlineLoop):
    def __init__(self, runner: RunState) -> None:
        super().__init__(runner)
        cfg, spec = runner.cfg, runner.spec
        self.algo: OffPolicyAlgorithm = runner.algo  # type: ignore[assignment]
        acfg = self.algo.cfg
        capacity = max(1, -(-acfg.buffer_size // cfg.sim.num_envs))
        self.store = TransitionStore(capacity, cfg.sim.num_envs, (spec.n_obs_steps, spec.obs_dim),
                                     (spec.horizon, spec.act_dim), self.algo.extras_spec())
        self.reward_scaler = RewardScaler(cfg.sim.num_envs, acfg.gamma) if cfg.sim.normalize_reward else None
        demos = self.demonstration_store() if acfg.demos else None
        self.replay = Replay(self.store, runner.normalizer, self.reward_scaler, demos, acfg.demo_fraction)
        self.owed_updates = 0.0  # fractional gradient steps carried between iterations
        self.gradient_steps = 0

    def demonstration_store(self) -> TransitionStore:
        """policy.algo.demos as chunk transitions in a store of their own (never overwritten by the
        online data): raw observations, actions normalised as the actor's, the file's rewards (which
        must be the task's: `robopol demos` records the task env's). Rebuilt from the file on resume."""
        runner, acfg, spec = self.runner, self.algo.cfg, self.runner.spec
        assert acfg.demos is not None
        if self.algo.extras_spec():
            raise ConfigError(f"policy.algo.demos: {acfg.name} stores per-transition extras "
                              f"({', '.join(self.algo.extras_spec())}) that demonstrations do not have")
        demos = load_demonstrations(acfg.demos, runner.cfg.task, setting="policy.algo.demos")
        check_dimensions(demos, acfg.demos, runner.cfg.task, spec.obs_dim, spec.act_dim, setting="policy.algo.demos")
        episodes = demos.episodes
        chunks = sum(-(-len(ep) // spec.n_action_steps) for ep in episodes)
        store = TransitionStore(chunks, 1, (spec.n_obs_steps, spec.obs_dim), (spec.horizon, spec.act_dim))
        store.add_episodes([ep.flat_obs for ep in episodes],
                           [runner.normalizer.normalize_action(torch.as_tensor(ep.actions)).numpy() for ep in episodes],
                           [ep.rewards for ep in episodes],
                           [ep.successes if ep.successes is not None else np.zeros(len(ep), bool) for ep in episodes],
                           spec.n_obs_steps, spec.horizon, spec.n_action_steps)
        return store

    def iterate(self, progress: float) -> tuple[int, dict[str, float]]:
        runner, acfg = self.runner, self.algo.cfg
        before, sums, updates = runner.env_steps, {}, 0
        for _ in range(-(-runner.cfg.train.rollout_steps // acfg.train_freq)):
            transitions = self.collect()
            if runner.env_steps < acfg.learning_starts:
                continue
            self.owed_updates += acfg.utd_ratio * transitions
            steps = int(self.owed_updates)
            self.owed_updates -= steps
            if steps:
                frac = progress + (runner.env_steps - before) / self.budget
                with runner.precision():
                    update = self.algo.update(self.replay, frac, gradient_steps=steps)
                for key, value in update.items():
                    sums[key] = sums.get(key, 0.0) + value
                self.gradient_steps += steps
                updates += 1
        self.merge_statistics(self.reward_scaler)
        metrics = {key: value / updates for key, value in sums.items()}
        metrics["gradient_steps"] = self.gradient_steps
        return runner.env_steps - before, {**metrics, **self.episode_metrics()}

    @torch.inference_mode()
    def collect(self) -> int:
        """train_freq chunk steps of every env into the store; returns the transitions added."""
        runner, acfg = self.runner, self.algo.cfg
        for _ in range(acfg.train_freq):
            obs, obs_n = self.observe()
            if acfg.random_warmup and runner.env_steps < acfg.learning_starts:
                actions = torch.rand(obs.shape[0], runner.spec.horizon, runner.spec.act_dim) * 2 - 1
                extras: dict[str, torch.Tensor] = {}
            else:
                actions, extras = self.algo.act(obs_n)
            step = self.env_step(actions)
            if self.reward_scaler:  # only its statistics (numpy views of the CPU tensors); the store keeps raw rewards
                self.reward_scaler(step.reward.cpu().numpy(), (step.terminated | step.truncated).cpu().numpy())
            self.store.add(obs, actions, step.reward.float(), step.final_obs, step.terminated, step.truncated,
                           step.success, **extras)
        return acfg.train_freq * runner.cfg.sim.num_envs

    def state_dict(self) -> dict[str, Any]:
        return {"replay": self.store.state_dict(), "owed_updates": self.owed_updates,
                "gradient_steps": self.gradient_steps,
                "reward_scaler": self.reward_scaler.state_dict() if self.reward_scaler else {}, **self.env_states()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.store.load_state_dict(state["replay"])
        self.load_env_states(state)
        if self.restored is None:
            self.store.truncate_in_flight()  # the envs restart their episodes on resume
        self.owed_updates, self.gradient_steps = float(state["owed_updates"]), int(state["gradient_steps"])
        if self.reward_scaler:
            self.reward_scaler.load_state_dict(state["reward_scaler"])
