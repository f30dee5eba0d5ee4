"""SAC (Haarnoja et al. 2018): the Gaussian off-policy baseline and the off-policy loop's first user.

Tanh-squashed Gaussian actor; twin Q (one batched ensemble of 2 heads) with EMA targets; the entropy
temperature tuned towards a target entropy of -(chunk size). Per gradient step, as SB3 orders it:
temperature, critic (TD target from the min of the target heads at next actions drawn from the
current actor), actor, then the Polyak update of the targets. The temperature's Adam step is taken with
the actor's (one backward, one fused step): its loss reads only detached log-probs and the critic and
actor losses use the temperature from before the step, as SB3's do, so the update is the same."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from robopol.algos.off_policy import OffPolicyAlgorithm, OffPolicyConfig, Replay
from robopol.config import PolicyConfig
from robopol.critics import EMATarget, QEnsemble
from robopol.policies.tanh_gaussian import TanhGaussianActor
from robopol.typed_config import field


@dataclass
class SACConfig(OffPolicyConfig):
    actor_types: ClassVar[tuple[str, ...]] = ("tanh_gaussian",)
    name: str = "sac"
    lr: float = field(3e-4, gt=0, doc="actor, critic and temperature learning rate")
    tau: float = field(0.005, gt=0, le=1, doc="Polyak rate of the target critics")
    init_alpha: float = field(1.0, gt=0, doc="initial entropy temperature")
    autotune_alpha: bool = True
    target_entropy: float | None = field(None, doc="default: -(horizon x act_dim)")


class SAC(OffPolicyAlgorithm):
    config_class = SACConfig
    cfg: SACConfig
    actor: TanhGaussianActor

    def __init__(self, policy: PolicyConfig, actor: TanhGaussianActor) -> None:  # type: ignore[override]
        super().__init__(policy, actor)
        cfg, spec = self.cfg, actor.spec
        self.critic = QEnsemble.for_chunks(spec, policy.critic, heads=2)
        self.critic_target = EMATarget(self.critic, cfg.tau)
        self.log_alpha = torch.nn.Parameter(torch.tensor(float(cfg.init_alpha)).log())
        self.target_entropy = cfg.target_entropy if cfg.target_entropy is not None else -float(spec.horizon * spec.act_dim)
        tuned = [self.log_alpha] if cfg.autotune_alpha else []
        self.actor_optimizer = torch.optim.Adam([*actor.parameters(), *tuned], lr=cfg.lr, fused=True)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr, fused=True)
        self.critic_parameters = list(self.critic.parameters())  # frozen while the actor's loss runs through them

    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.actor.sample(obs, torch.randn(self.actor.noise_shape(obs.shape[0]))), {}

    def update(self, data: Replay, progress: float, gradient_steps: int = 1) -> dict[str, torch.Tensor | float]:  # type: ignore[override]
        cfg, actor, critic = self.cfg, self.actor, self.critic
        sums: dict[str, torch.Tensor] = {}
        for _ in range(gradient_steps):
            batch = data.sample(cfg.batch_size, cfg.n_step, cfg.gamma)
            obs, next_obs = batch["obs"], batch["next_obs"]
            # One actor pass for obs and next_obs: the next half only feeds the (gradient-free) target.
            both = torch.cat([obs, next_obs])
            actions, log_prob = actor.sample_with_log_prob(both, torch.randn(actor.noise_shape(len(both))))
            pi, next_pi = actions.split(len(obs))
            log_pi, next_log_pi = log_prob.split(len(obs))

            alpha = self.log_alpha.detach().exp()
            alpha_loss = -(self.log_alpha * (log_pi.detach() + self.target_entropy)).mean() if cfg.autotune_alpha else torch.zeros(())

            with torch.no_grad():
                next_q = self.critic_target.target(next_obs, next_pi.detach()).min(dim=0).values
                target = batch["reward"] + batch["bootstrap"] * (next_q - alpha * next_log_pi.detach())
            q = critic(obs, batch["actions"])
            critic_loss = 0.5 * (q - target).pow(2).mean(dim=1).sum()  # SB3: 0.5 x sum over heads of the MSE
            self.critic_optimizer.zero_grad(set_to_none=True)
            critic_loss.backward()
            self.critic_optimizer.step()

            for p in self.critic_parameters:  # the actor's loss moves the actor only
                p.requires_grad_(False)
            q_pi = critic(obs, pi).min(dim=0).values
            for p in self.critic_parameters:
                p.requires_grad_(True)
            actor_loss = (alpha * log_pi - q_pi).mean()
            self.actor_optimizer.zero_grad(set_to_none=True)
            (actor_loss + alpha_loss).backward()
            self.actor_optimizer.step()
            self.critic_target.update()

            for key, value in (("critic_loss", critic_loss), ("actor_loss", actor_loss), ("alpha_loss", alpha_loss),
                               ("alpha", alpha), ("q", q.mean()), ("entropy", -log_pi.mean())):
                sums[key] = sums.get(key, 0.0) + value.detach()
        return {key: (value / gradient_steps).item() for key, value in sums.items()}

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"actor": self.actor, "critic": self.critic, "critic_target": self.critic_target.target}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_optimizer, "critic": self.critic_optimizer}

    def state_dict(self) -> dict[str, Any]:
        return {"log_alpha": self.log_alpha.detach().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
