"""On-policy loop (PPO, FPO, DPPO): collect a rollout of chunk steps -> GAE -> algo.update(rollout).

GAE bootstraps a truncated episode from V(final observation) and a terminated one from nothing."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robopol.algos.on_policy import OnPolicyAlgorithm
from robopol.data.normalizer import Folded, RewardScaler
from robopol.data.rollout import RolloutBuffer
from robopol.loops.ahead_of_time import AheadOfTimeStep
from robopol.loops.base import OnlineLoop, RunState


class OnPolicyLoop(OnlineLoop):
    def __init__(self, runner: RunState) -> None:
        super().__init__(runner)
        cfg, spec = runner.cfg, runner.spec
        self.algo: OnPolicyAlgorithm = runner.algo  # type: ignore[assignment]
        self.buffer = RolloutBuffer(cfg.train.rollout_steps, cfg.sim.num_envs, (spec.n_obs_steps, spec.obs_dim),
                                    (spec.horizon, spec.act_dim), self.algo.extras_spec())
        self.reward_scaler = RewardScaler(cfg.sim.num_envs, self.algo.cfg.gamma) if cfg.sim.normalize_reward else None
        # policy.algo.compile: each rollout step's computation as one compiled call too, its random draws
        # ATen's, so it samples what the eager loop samples: on a CPU learner an AOTInductor package
        # (robopol.loops.ahead_of_time: a third of the call overhead), on a GPU torch.compile.
        self.ahead_of_time: AheadOfTimeStep | None = None
        self.policy_step = self._policy_step
        if self.algo.cfg.compile and runner.device.type == "cpu":
            modules = nn.ModuleDict({"normalizer": runner.normalizer, **self.algo.modules()})
            self.ahead_of_time = AheadOfTimeStep(self._policy_step, modules)
        elif self.algo.cfg.compile:
            self.policy_step = torch.compile(self._policy_step, options={"cpp_wrapper": True, "fallback_random": True})

    def iterate(self, progress: float) -> tuple[int, dict[str, float]]:
        before = self.runner.env_steps
        self.collect()
        with self.runner.precision():
            metrics = self.algo.update(self.buffer, progress=progress)
        metrics.update(self.algo.between_iterations(self.runner.env_steps, self.collect, self.runner.evaluate))
        return self.runner.env_steps - before, {**metrics, **self.episode_metrics()}

    @torch.inference_mode()
    def collect(self) -> RolloutBuffer:
        """Fill the rollout buffer with one chunk step per env per slot, then compute GAE; returns it."""
        algo, norm, gamma = self.algo, self.runner.normalizer, self.algo.cfg.gamma
        if not self.obs.is_inference():  # a reset's or a checkpoint's: one graph for every step's observations
            self.obs = self.obs.clone()
        # bound once a rollout: the modules' tensors may be new objects after an update or a stage switch
        policy_step = self.ahead_of_time.bind(self.obs) if self.ahead_of_time else self.policy_step
        self.buffer.reset()
        for _ in range(self.runner.cfg.train.rollout_steps):
            folded, obs_n, actions, extras, values, env_actions = policy_step(self.obs)
            if folded is not None:
                norm.commit(self.obs, folded)
            step = self.execute(env_actions)
            self.buffer.add(obs_n, actions, step.reward, step.terminated, step.truncated, values, **extras)
            if step.truncated.any():
                idx = step.truncated.nonzero().squeeze(1)
                self.buffer.bootstrap(idx, algo.value(norm.normalize_obs(step.final_obs[idx])))
        last_values = algo.value(norm.normalize_obs(self.obs))
        self.buffer.compute_gae(last_values, gamma, algo.cfg.gae_lambda,
                                self.reward_scaler.scale_rollout if self.reward_scaler else None)
        self.merge_statistics(self.reward_scaler)
        return self.buffer

    def _policy_step(self, obs: torch.Tensor) -> tuple[Folded | None, torch.Tensor, torch.Tensor,
                                                        dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """For raw observations: the observation statistics with them folded in (None if frozen; the caller
        commits them), the normalised observations, exploratory action chunks, the extras the algorithm
        stores, values, and the env-unit actions to execute."""
        norm = self.runner.normalizer
        folded = norm.folded(obs) if self.update_obs_stats else None
        obs_n = norm.normalize_obs(obs, folded)
        actions, extras = self.algo.act(obs_n)
        env_actions = norm.unnormalize_action(actions[:, : self.runner.spec.n_action_steps])
        return folded, obs_n, actions, extras, self.algo.value(obs_n), env_actions

    def state_dict(self) -> dict[str, Any]:
        return {"reward_scaler": self.reward_scaler.state_dict() if self.reward_scaler else {}, **self.env_states()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_env_states(state)
        if self.reward_scaler:
            self.reward_scaler.load_state_dict(state["reward_scaler"])
