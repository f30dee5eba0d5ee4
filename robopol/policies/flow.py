"""Flow-matching actor: rectified path x_t = t * eps + (1 - t) * a, Euler integration from t=1 to t=0.

The velocity target along that path is eps - a. FPO scores actions by the conditional flow-matching
loss at stored (t, eps) pairs; OGPO needs a stochastic sampler whose steps have Gaussian likelihoods.
The steps follow robopol.policies.generative's contract: `predict` is the velocity network at the
step's time, `step` the Euler update (plus, in the stochastic chain, a tapered Gaussian draw).

The chain's noise widens the distribution the ODE would reach; `score_drift` adds OGPO's correction
(Song et al.'s reverse SDE: half the step's variance times the score) to the chain's mean. On this
path the score is -eps_hat / t with eps_hat = x + (1 - t) v, so with step variance sigma^2 t the
correction moves the mean by -(sigma^2 / 2) eps_hat. "marginal" applies that per step, as the chain
draws its noise with std sigma sqrt(t) per step (not per unit time); "official" scales it by dt as
OGPO_public's sampler does (its drift is added to the velocity), which corrects little at K = 10
(tests/test_policies.py shows both on a Gaussian target)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from robopol.policies.backbones import GenerativeActorConfig
from robopol.policies.base import ChunkSpec
from robopol.policies.generative import GenerativeActor, Hook, at_step, eps_from_velocity, run_steps
from robopol.policies.networks import ACTIVATIONS, TimeConditionedMLP
from robopol.typed_config import field

SCORE_DRIFTS = ("off", "marginal", "official")


class FlowActor(GenerativeActor):
    prediction = "velocity"

    def __init__(self, spec: ChunkSpec, hidden: Sequence[int] = (256, 256), num_steps: int = 10,
                 time_dim: int = 16, activation: str = "mish", sigma_scale: float = 0.05,
                 net: nn.Module | None = None, score_drift: str = "off") -> None:
        """`net` replaces the default MLP velocity network (hidden, time_dim, activation) when given."""
        super().__init__(spec)
        self.num_sampling_steps = num_steps
        self.dt = 1.0 / num_steps
        self.velocity_net = net if net is not None else TimeConditionedMLP(
            spec.obs_dim, spec.n_obs_steps, spec.act_dim, spec.horizon, hidden, time_dim, activation)
        self.sigma_scale = sigma_scale
        times = [1.0 - i * self.dt for i in range(num_steps)] + [0.0]
        self.register_buffer("flow_t", torch.tensor(times), persistent=False)
        self.register_buffer("flow_scale", torch.ones(num_steps + 1), persistent=False)
        if score_drift not in SCORE_DRIFTS:
            raise ValueError(f"score_drift must be one of {SCORE_DRIFTS}, got {score_drift!r}")
        self.score_drift = score_drift
        per_step = 0.5 * sigma_scale ** 2 * (self.dt if score_drift == "official" else 1.0)
        coef = [0.0 if score_drift == "off" or self.step_std(i) == 0.0 else per_step for i in range(num_steps)]
        self.register_buffer("drift_coef", torch.tensor(coef), persistent=False)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        return self.velocity_net(x, t, obs)

    def noise_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.spec.horizon, self.spec.act_dim)

    def sample(self, obs: torch.Tensor, noise: torch.Tensor, hook: Hook | None = None) -> torch.Tensor:
        """Deterministic Euler ODE from x_1 = noise; zero noise gives FPO++'s deterministic evaluation."""
        return run_steps(self, obs, noise, None, hook, keep_from=self.num_sampling_steps)[-1]

    def cfm_losses(self, obs: torch.Tensor, actions: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                   steps: int | None = None) -> torch.Tensor:
        """Per-sample conditional flow-matching losses (B, N) at given t (B, N) and eps (B, N, H, A),
        averaged over the first `steps` actions of the chunk (all by default)."""
        batch, n = t.shape
        steps = steps or self.spec.horizon
        a = actions.unsqueeze(1)
        tt = t[..., None, None]
        x_t = tt * eps + (1.0 - tt) * a
        obs_rep = obs.unsqueeze(1).expand(batch, n, *obs.shape[1:]).reshape(batch * n, *obs.shape[1:])
        v = self.velocity(x_t.reshape(batch * n, *x_t.shape[2:]), t.reshape(-1), obs_rep)
        err = (v.reshape(x_t.shape) - (eps - a))[:, :, :steps]
        return err.pow(2).mean(dim=(2, 3))

    def loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        t = torch.rand(obs.shape[0], 1)
        eps = torch.randn(obs.shape[0], 1, *actions.shape[1:])
        return self.cfm_losses(obs, actions, t, eps).mean()

    # --- the step-level contract (robopol.policies.generative) ---
    def predict(self, x: torch.Tensor, i: int | torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        return self.velocity(x, self.flow_t[i], obs)

    def step_mean(self, x: torch.Tensor, pred: torch.Tensor, i: int | torch.Tensor) -> torch.Tensor:
        """The Euler step from t_i to t_i - dt."""
        return x - self.dt * pred

    def step_std(self, i: int) -> float:
        """Std of the stochastic chain's step i: sigma_scale * sqrt(t_i), tapering to 0; the last step is
        deterministic."""
        return 0.0 if i == self.num_sampling_steps - 1 else self.sigma_scale * math.sqrt(1.0 - i / self.num_sampling_steps)

    def chain_mean(self, x: torch.Tensor, pred: torch.Tensor, i: int | torch.Tensor) -> torch.Tensor:
        """The Euler step, minus the score drift (drift_coef_i * eps_hat) when score_drift is on."""
        mean = self.step_mean(x, pred, i)
        if self.score_drift == "off":
            return mean
        return mean - at_step(self.drift_coef, i) * eps_from_velocity(x, pred, at_step(self.flow_t, i))

    def step(self, x: torch.Tensor, pred: torch.Tensor, i: int, noise: torch.Tensor | None) -> torch.Tensor:
        if noise is None:
            return self.step_mean(x, pred, i)
        return self.chain_mean(x, pred, i) + self.step_std(i) * noise

    @property
    def scored_steps(self) -> range:
        """Every step but the last, which adds no noise."""
        return range(self.num_sampling_steps - 1)

    def log_prob_std(self, i: torch.Tensor) -> torch.Tensor:
        return at_step(torch.tensor([self.step_std(k) for k in range(self.num_sampling_steps)]), i)

    def to_velocity(self, x: torch.Tensor, pred: torch.Tensor, i: int | torch.Tensor) -> torch.Tensor:
        return pred

    def to_eps(self, x: torch.Tensor, pred: torch.Tensor, i: int | torch.Tensor) -> torch.Tensor:
        return eps_from_velocity(x, pred, at_step(self.flow_t, i))


@dataclass
class FlowActorConfig(GenerativeActorConfig):
    type: str = "flow"
    activation: str = field("mish", choices=tuple(ACTIVATIONS))
    flow_steps: int = field(10, ge=1)
    sigma_scale: float = field(0.05, gt=0, doc="std scale of the stochastic chain's steps (OGPO's sigma_t)")
    score_drift: str = field("off", choices=SCORE_DRIFTS,
                             doc="the stochastic chain's score-correcting drift: off, marginal (keeps the ODE's "
                                 "marginals for the chain's per-step noise) or official (OGPO_public's, dt times "
                                 "smaller)")

    def build(self, spec: ChunkSpec) -> FlowActor:
        return FlowActor(spec, self.hidden, self.flow_steps, self.time_dim, self.activation, self.sigma_scale,
                         net=self.network(spec), score_drift=self.score_drift)
