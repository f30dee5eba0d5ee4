"""OGPO (Off-policy Generative Policy Optimization, 2026): off-policy fine-tuning of a BC flow policy.

A Q ensemble (LayerNorm heads, EMA targets) learns by TD on chunk-level replay, bootstrapping from
the mean target Q at a' drawn from the EMA target actor (averaged over `target_samples` draws: the
Q-variance reduction). The actor moves by PPO-clip on groups of stochastic chains drawn from the
target actor per replay state: advantage = Q - the group's mean Q (not divided by its std; per head
with the conservative rule if asked), ratio = exp of the chain log-prob difference against the target
actor divided by (scored steps x chunk elements); plus bc_coeff x the flow-matching loss on a batch
from the success buffer (the replay until the first success). Per gradient step: critic, actor, then
the Polyak updates of both targets. Actions are clamped to the normalised action box [-1, 1] wherever
they are executed or valued (the env would clip them anyway), so the critic is never asked to
extrapolate beyond the actions it has seen and cannot lure the actor out of the box."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from robopol.algos.off_policy import OffPolicyAlgorithm, OffPolicyConfig, Replay
from robopol.algos.on_policy import clipped_surrogate
from robopol.config import PolicyConfig
from robopol.critics import EMATarget, QEnsemble, bootstrapped_target, q_loss
from robopol.policies.flow import FlowActor
from robopol.typed_config import field


@dataclass
class OGPOConfig(OffPolicyConfig):
    actor_types: ClassVar[tuple[str, ...]] = ("flow",)
    name: str = "ogpo"
    lr: float = field(4.5e-5, gt=0, doc="actor learning rate (OGPO's ppo lr)")
    critic_lr: float = field(3e-4, gt=0)
    actor_tau: float = field(0.005, gt=0, le=1, doc="Polyak rate of the target actor")
    critic_tau: float = field(0.05, gt=0, le=1, doc="Polyak rate of the target critics")
    q_heads: int = field(10, ge=1)
    q_layer_norm: bool = True
    target_samples: int = field(1, ge=1, doc="a' draws the TD target averages over (Q-variance reduction: 8)")
    group_states: int = field(256, ge=1, doc="replay states per actor update")
    group_size: int = field(32, ge=2, doc="stochastic chains per state")
    clip: float = field(0.01, gt=0, doc="PPO clip of the chain ratio")
    conservative: bool = field(False, doc="per-head advantages: min if all > 0, max if all < 0, else 0")
    bc_coeff: float = field(0.1, ge=0, doc="weight of the flow-matching loss on the success buffer")
    bc_batch_size: int = field(256, ge=1)
    best_of: int = field(1, ge=1, doc="chains drawn per action; the one with the highest mean Q is executed")


def group_advantages(q: torch.Tensor, conservative: bool = False) -> torch.Tensor:
    """Advantages (S, G) from Q values (heads, S, G) of G actions per state: Q minus the group mean.
    Plain: the mean over heads. Conservative: per head, then the min where every head is positive, the
    max where every head is negative, else 0 (the heads disagree on the sign)."""
    adv = q - q.mean(dim=-1, keepdim=True)
    if not conservative:
        return adv.mean(dim=0)
    positive, negative = (adv > 0).all(dim=0), (adv < 0).all(dim=0)
    return torch.where(positive, adv.min(dim=0).values, torch.where(negative, adv.max(dim=0).values, 0.0))


class OGPO(OffPolicyAlgorithm):
    config_class = OGPOConfig
    cfg: OGPOConfig
    actor: FlowActor

    def __init__(self, policy: PolicyConfig, actor: FlowActor) -> None:  # type: ignore[override]
        super().__init__(policy, actor)
        cfg, spec = self.cfg, actor.spec
        self.critic = QEnsemble.for_chunks(spec, policy.critic, heads=cfg.q_heads, layer_norm=cfg.q_layer_norm)
        self.critic_target = EMATarget(self.critic, cfg.critic_tau)
        self.actor_target = EMATarget(actor, cfg.actor_tau)
        self.actor_optimizer = torch.optim.Adam(actor.parameters(), lr=cfg.lr)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)

    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The online actor's stochastic chain; with best_of > 1 the draw the critic values most."""
        n = self.cfg.best_of
        obs_rep = obs.repeat_interleave(n, dim=0)
        actions = self.actor.sample_chain(obs_rep, torch.randn(self.actor.chain_noise_shape(len(obs_rep)),
                                                               device=obs.device))[:, -1].clamp(-1, 1)
        if n == 1:
            return actions, {}
        best = self.critic(obs_rep, actions).mean(dim=0).view(len(obs), n).argmax(dim=1)
        return actions.view(len(obs), n, *actions.shape[1:])[torch.arange(len(obs), device=obs.device), best], {}

    def next_value(self, next_obs: torch.Tensor) -> torch.Tensor:
        """Mean over heads and `target_samples` target-actor draws of the target Q at next_obs."""
        m, target = self.cfg.target_samples, self.actor_target.target
        obs_rep = next_obs.repeat(m, *([1] * (next_obs.dim() - 1)))
        actions = target.sample(obs_rep, torch.randn(target.noise_shape(len(obs_rep)), device=next_obs.device)).clamp(-1, 1)
        return self.critic_target.target(obs_rep, actions).mean(dim=0).view(m, len(next_obs)).mean(dim=0)

    def chain_log_ratio(self, obs: torch.Tensor, chain: torch.Tensor) -> torch.Tensor:
        """log pi(chain) - log pi_target(chain), divided by scored steps x chunk elements."""
        actor, target = self.actor, self.actor_target.target
        with torch.no_grad():
            old = target.chain_log_prob(obs, chain).sum(dim=1)
        scale = len(actor.scored_steps) * chain.shape[-2] * chain.shape[-1]
        return (actor.chain_log_prob(obs, chain).sum(dim=1) - old) / scale

    def actor_loss(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        """PPO-clip on a group of target-actor chains per state, scored by the current critic."""
        cfg, target = self.cfg, self.actor_target.target
        states, g = obs[: cfg.group_states], cfg.group_size
        obs_rep = states.repeat_interleave(g, dim=0)
        with torch.no_grad():
            chain = target.sample_chain(obs_rep, torch.randn(target.chain_noise_shape(len(obs_rep)), device=obs.device))
            q = self.critic(obs_rep, chain[:, -1].clamp(-1, 1)).view(-1, len(states), g)
            adv = group_advantages(q, cfg.conservative).reshape(-1)
        log_ratio = self.chain_log_ratio(obs_rep, chain)
        loss, clip_fraction = clipped_surrogate(log_ratio.exp(), adv, cfg.clip)
        return {"loss": loss, "clip_fraction": clip_fraction, "adv_abs": adv.abs().mean()}

    def update(self, data: Replay, progress: float, gradient_steps: int = 1) -> dict[str, float]:  # type: ignore[override]
        cfg = self.cfg
        td_target = bootstrapped_target(self.next_value)
        sums: dict[str, torch.Tensor] = {}
        for _ in range(gradient_steps):
            batch = data.sample(cfg.batch_size, cfg.n_step, cfg.gamma)
            critic_loss = q_loss(self.critic, batch, td_target)
            self.critic_optimizer.zero_grad(set_to_none=True)
            critic_loss.backward()
            self.critic_optimizer.step()

            self.critic.requires_grad_(False)
            policy = self.actor_loss(batch["obs"])
            self.critic.requires_grad_(True)
            bc = data.sample_successes(cfg.bc_batch_size)
            bc_loss = self.actor.loss(bc["obs"], bc["actions"])
            actor_loss = policy["loss"] + cfg.bc_coeff * bc_loss
            self.actor_optimizer.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_optimizer.step()
            self.critic_target.update()
            self.actor_target.update()

            for key, value in (("critic_loss", critic_loss), ("actor_loss", policy["loss"]), ("bc_loss", bc_loss),
                               ("clip_fraction", policy["clip_fraction"]), ("adv_abs", policy["adv_abs"])):
                sums[key] = sums.get(key, 0.0) + value.detach()
        return {key: (value / gradient_steps).item() for key, value in sums.items()}

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"actor": self.actor, "actor_target": self.actor_target.target, "critic": self.critic,
                "critic_target": self.critic_target.target}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_optimizer, "critic": self.critic_optimizer}
