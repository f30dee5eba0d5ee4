"""GPC (General Policy Composition): several pretrained generative policies sampled as one, their
predictions mixed with convex weights at every sampling step.

The composition runs the first parent's (the leader's) sampler: its grid of flow times, its noise and
its scheduler `step`. At step i every parent predicts at the same point of the shared flow frame of
robopol.policies.generative (x_t = t eps + (1 - t) a, t = leader.flow_t[i], x_t = x / leader.flow_scale[i]),
each from its own observation window and normaliser, and the mix is taken in the leader's
parametrisation: pred = sum_k w_k pred_k, through the leader's hook. Same family as the leader: the raw
prediction. Cross-family, on the shared frame (derivation):
- flow parent into a diffusion leader: the flow net is trained for every t in [0, 1], so it is asked at
  (x_t, t) for v; with a = x_t - t v the noise is eps = a + v = x_t + (1 - t) v (`eps_from_velocity`),
  and eps is the same number on the VP frame: x_k = s x_t with s (1 - t) = sqrt(abar), s t = sqrt(1 - abar)
  gives (x_k - sqrt(1 - abar) eps) / sqrt(abar) = a, the leader's own x0 estimate.
- diffusion parent into a flow leader: t corresponds to the VP noise level abar with
  t / (1 - t) = sqrt(1 - abar) / sqrt(abar), i.e. abar(t) = (1 - t)^2 / ((1 - t)^2 + t^2); the eps net is
  asked at its own state x_k = x_t / r, r = sqrt((1 - t)^2 + t^2) (= 1 / s), and at the continuous
  timestep k(t) where its training schedule alpha-bar_k equals abar(t) (linear interpolation in the
  table); its eps becomes v = eps - x0 with x0 = clip((x_t - t eps) / (1 - t)) and eps recomputed from the
  clipped x0, as the diffusion actor's own `to_velocity` does (`velocity_from_eps`). On the diffusion
  parent's own grid k(t_i) is its step's timestep, so a flow sampler over these velocities on that grid
  samples what it samples itself (DDIM with eta 0 is Euler on the frame; tests/test_compose.py checks it).
With weights (1, 0, ...) the mix is 1 * pred_leader + 0 * ... , the leader's prediction to the bit.

Reconcilable parents (else `incompatible_reason` names the mismatch): the same action dimension and
horizon, the same action bounds (the normalised space the predictions live in), generative actors with
the same number of sampling steps. n_obs_steps may differ (each parent sees the last n_obs_steps frames
of the longest window), and so may the observation keys: given `obs_index` (from
robopol.sim.observation_keys), each parent reads its own positions of one shared observation vector;
without it the parents must observe the same vector."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from robopol.errors import ConfigError
from robopol.policies.bundle import PolicyBundle
from robopol.policies.diffusion import DiffusionActor
from robopol.policies.flow import FlowActor
from robopol.policies.generative import GenerativeActor, Hook, eps_from_velocity

BOUNDS_ATOL = 1e-6


def incompatible_reason(parents: Sequence[PolicyBundle], names: Sequence[str], same_obs: bool = True) -> str | None:
    """Why these parents cannot be composed (one phrase naming the mismatch), or None; `same_obs`: they
    must observe the same vector (no per-parent observation index)."""
    first, name0 = parents[0], names[0]
    for p, name in zip(parents, names):
        actor = getattr(p, "actor", p)  # a ComposedPolicy (a composed parent) has no single actor
        if not isinstance(actor, GenerativeActor):
            return f"{name} has a {type(actor).__name__}, not a diffusion or flow actor: only those compose"
    for p, name in zip(parents[1:], names[1:]):
        for what in ("act_dim", "obs_dim", "horizon") if same_obs else ("act_dim", "horizon"):
            if getattr(p, what) != getattr(first, what):
                return f"{what} differs: {getattr(first, what)} in {name0}, {getattr(p, what)} in {name}"
        for what in ("action_low", "action_high"):
            a, b = getattr(first, what), getattr(p, what)
            if not np.allclose(a, b, rtol=0, atol=BOUNDS_ATOL):
                return (f"action normalisation differs: {what} {np.round(a, 4).tolist()} in {name0}, "
                        f"{np.round(b, 4).tolist()} in {name} (train both with the same bounds, "
                        f"e.g. policy.algo.action_bounds=env)")
        k0, k = first.actor.num_sampling_steps, p.actor.num_sampling_steps
        if k != k0:
            return f"step schedule differs: {k0} sampling steps in {name0}, {k} in {name} (mixing happens once per step)"
    return None


def compose_loaded(parents: Sequence[PolicyBundle], names: Sequence[str], weights: Sequence[float],
                   obs_index: Sequence[Sequence[int]] | None = None, obs_dim: int | None = None) -> ComposedPolicy:
    """The composition of already-loaded parents (named by `names` in errors), in eval mode; parents that do
    not reconcile are refused with one ConfigError line naming the mismatch. `obs_index`, `obs_dim`: see
    ComposedPolicy."""
    reason = incompatible_reason(parents, names, same_obs=obs_index is None)
    if reason:
        raise ConfigError(f"cannot compose: {reason}")
    return ComposedPolicy(parents, weights, obs_index, obs_dim).eval()


def timestep_at(actor: DiffusionActor, t: torch.Tensor) -> torch.Tensor:
    """The diffusion net's time input (k / denoising_steps) at flow time t: the continuous k at which the
    training schedule's alpha-bar equals abar(t) = (1 - t)^2 / ((1 - t)^2 + t^2)."""
    abar = ((1 - t) ** 2 / ((1 - t) ** 2 + t**2)).double()
    table = actor.train_abar.double()  # decreasing in k
    k = torch.searchsorted(-table, -abar).clamp(1, len(table) - 1)
    lo, hi = table[k - 1], table[k]
    k = (k - 1) + (lo - abar) / (lo - hi)
    return (k / actor.denoising_steps).float()


def diffusion_velocity(actor: DiffusionActor, x_t: torch.Tensor, t: torch.Tensor, k_frac: torch.Tensor,
                       obs: torch.Tensor) -> torch.Tensor:
    """A diffusion actor's prediction at flow state x_t, flow time t (< 1), as a velocity on the flow frame."""
    r = ((1 - t) ** 2 + t**2).sqrt()
    eps = actor.model(x_t / r, k_frac, obs)
    x0 = ((x_t - t * eps) / (1 - t).clamp(min=1e-6)).clamp(-1.0, 1.0)
    return (x_t - x0) / t  # = eps' - x0 with eps' = (x_t - (1 - t) x0) / t, the eps consistent with x0


class ComposedPolicy(nn.Module):
    """A policy bundle's interface (raw observations in, env-unit actions out) over several parents."""

    def __init__(self, parents: Sequence[PolicyBundle], weights: Sequence[float],
                 obs_index: Sequence[Sequence[int]] | None = None, obs_dim: int | None = None) -> None:
        """`obs_index[k]`: the positions of parent k's observation in the shared one of `obs_dim` values
        (None: every parent observes the same vector)."""
        super().__init__()
        self.parents = nn.ModuleList(parents)
        self.register_buffer("weights", torch.tensor([float(w) for w in weights]))
        first = parents[0]
        self.act_dim, self.horizon = first.act_dim, first.horizon
        if obs_index is not None and (obs_dim is None or max(max(ix) for ix in obs_index) >= obs_dim):
            raise ValueError(f"obs_index needs the shared obs_dim, larger than every position; got {obs_dim}")
        self.obs_dim = first.obs_dim if obs_index is None else obs_dim
        self.selects = obs_index is not None
        for k, ix in enumerate(obs_index or ()):
            self.register_buffer(f"obs_index_{k}", torch.tensor(list(ix), dtype=torch.long), persistent=False)
        self.n_action_steps = first.n_action_steps
        self.n_obs_steps = max(p.n_obs_steps for p in parents)
        self.action_low, self.action_high = first.action_low, first.action_high
        # each other parent's time input per leader step: the flow time (flow) or the timestep k(t) (diffusion)
        t = self.leader.flow_t[:-1]
        for j, p in enumerate(parents[1:], start=1):
            time = timestep_at(p.actor, t) if isinstance(p.actor, DiffusionActor) else t.clone()
            self.register_buffer(f"time_{j}", time, persistent=False)

    @property
    def leader(self) -> GenerativeActor:
        """The first parent's actor, whose grid, noise and scheduler step the composition runs."""
        return self.parents[0].actor

    def noise_shape(self, batch: int) -> tuple[int, ...]:
        return self.leader.noise_shape(batch)

    def _prediction(self, j: int, x: torch.Tensor, i: int, obs: torch.Tensor) -> torch.Tensor:
        """Parent j's (j >= 1) prediction at the leader's state x and step i, in the leader's parametrisation."""
        actor = self.parents[j].actor
        t = self.leader.flow_t[i]
        x_t = x / self.leader.flow_scale[i]
        time = getattr(self, f"time_{j}")[i]
        if isinstance(actor, FlowActor):
            v = actor.velocity(x_t, time.expand(x.shape[0]), obs)
            if isinstance(self.leader, FlowActor):
                return v
        else:
            if isinstance(self.leader, DiffusionActor):  # same VP state at the same t: the raw eps
                return actor.net_for_step(i)(x, time.expand(x.shape[0]), obs)
            v = diffusion_velocity(actor, x_t, t, time.expand(x.shape[0]), obs)
        return v if isinstance(self.leader, FlowActor) else eps_from_velocity(x_t, v, t)

    def _own(self, k: int, obs: torch.Tensor) -> torch.Tensor:
        """Parent k's observation keys out of the shared observation (B, n, obs_dim)."""
        return obs.index_select(-1, getattr(self, f"obs_index_{k}")) if self.selects else obs

    def forward(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """(B, n_obs_steps, obs_dim) raw observations -> (B, horizon, act_dim) actions in env units."""
        windows = [p.normalizer.normalize_obs(self._own(k, obs[:, obs.shape[1] - p.n_obs_steps:]))
                   for k, p in enumerate(self.parents)]

        def mix(i: int | torch.Tensor, x: torch.Tensor, pred: torch.Tensor, _obs: torch.Tensor) -> torch.Tensor:
            total = self.weights[0] * pred
            for j in range(1, len(self.parents)):
                total = total + self.weights[j] * self._prediction(j, x, int(i), windows[j])
            return total

        hook: Hook = mix
        actions = self.leader.sample(windows[0], noise, hook)
        return self.parents[0].normalizer.unnormalize_action(actions)  # the bounds all parents share
