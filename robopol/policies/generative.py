"""The step-level contract of the diffusion and flow actors, and the generic loops over it.

A generative actor turns noise into an action chunk in K sampling steps. At step i it exposes
- `predict(x, i, obs)`: the network's raw output (eps for diffusion, velocity for flow);
- `step(x, pred, i, noise)`: the scheduler's Gaussian transition to step i + 1 (`chain_mean` is its
  mean, `step_mean` the deterministic step, the two equal unless the actor corrects the chain's
  drift; `log_prob_std` the std its log-density is scored with);
- `to_velocity` / `to_eps`: its prediction in either parametrisation on the shared flow frame below.
`sample`, the stochastic chain and the chain log-prob are the loops in this module over those four,
with an optional hook `hook(i, x, pred, obs) -> pred` that may rewrite each step's prediction before
the scheduler uses it (QGF's guidance, GPC's mixing); a hook that returns `pred` changes nothing.

The shared frame is the rectified path of the flow actor, x_t = t * eps + (1 - t) * a, t = 1 pure
noise and t = 0 the action, whose velocity is v = eps - a. A prediction converts on it as follows:
given x_t and eps, a = (x_t - t eps) / (1 - t), so v = eps - a = (eps - x_t) / (1 - t); given x_t
and v, a = x_t - t v and eps = a + v = x_t + (1 - t) v. A VP diffusion state x_k = sqrt(abar) a +
sqrt(1 - abar) eps divided by s = sqrt(abar) + sqrt(1 - abar) is (sqrt(abar)/s) a + (sqrt(1-abar)/s) eps,
whose two weights sum to one: it is the flow state x_t = x_k / s at t = sqrt(1 - abar) / s. Each
actor publishes, per step i (and i = K, the action), that flow time `flow_t[i]` and the scale
`flow_scale[i]` by which its own state x relates to the flow state: x_t = x / flow_scale[i].

DDIM with eta = 0 is Euler on this frame: with the actor's estimates (a, eps) at x_t, which satisfy
x_t = t eps + (1 - t) a, DDIM moves to x_k' = sqrt(abar') a + sqrt(1 - abar') eps, i.e. the flow state
(1 - t') a + t' eps = x_t + (t' - t)(eps - a) = x_t - (t - t') v: an Euler step of size t - t' with
v = eps - a. So a diffusion actor converted to velocity and integrated by Euler on its own grid
samples what it samples itself (tests/test_generative_contract.py checks it).

Log-probabilities follow robopol.policies.base's convention: per-element Gaussian log-densities
(`step_log_densities`), and `chain_log_prob` their sum over each transition's elements."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import ClassVar

import torch

from robopol.policies.base import LOG_2PI, Actor

# hook(i, x, pred, obs) -> pred: i is the step index (an int in the sampling loops, a (N,) tensor of
# one index per row in the batched log-prob), x the state the prediction was made at.
Hook = Callable[[int | torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def velocity_from_eps(x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """v = (eps - x_t) / (1 - t) on the rectified path; undefined at t = 1, where eps is x_t itself."""
    return (eps - x_t) / (1 - t)


def eps_from_velocity(x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """eps = x_t + (1 - t) v on the rectified path."""
    return x_t + (1 - t) * v


def vp_flow_grid(abar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flow time t = sqrt(1 - abar) / s and scale s = sqrt(abar) + sqrt(1 - abar) of VP states x_k."""
    scale = abar.sqrt() + (1 - abar).sqrt()
    return (1 - abar).sqrt() / scale, scale


def at_step(table: torch.Tensor, i: int | torch.Tensor) -> torch.Tensor:
    """A per-step table's entry at step i, shaped to broadcast over (N, horizon, act_dim) states."""
    return table[i].view(-1, 1, 1)


class GenerativeActor(Actor):
    """An actor that samples by K scheduler steps over a network's per-step prediction."""

    prediction: ClassVar[str]  # "eps" or "velocity": what `predict` returns
    num_sampling_steps: int
    flow_t: torch.Tensor  # (K + 1,) flow time of the state before step i; flow_t[K] = 0, the action
    flow_scale: torch.Tensor  # (K + 1,) own state / flow state at step i

    @property
    def chain_start(self) -> int:
        """The first step whose state `sample_chain` records (its chain holds states chain_start..K)."""
        return 0

    @property
    def scored_steps(self) -> range:
        """The steps whose transitions `step_log_densities` scores: the stochastic ones in the chain."""
        return range(self.chain_start, self.num_sampling_steps)

    @abc.abstractmethod
    def predict(self, x: torch.Tensor, i: int | torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """The network's raw output at state x and step i (an int, or (N,) indices, one per row)."""

    @abc.abstractmethod
    def step_mean(self, x: torch.Tensor, pred: torch.Tensor, i: int | torch.Tensor) -> torch.Tensor:
        """The scheduler's deterministic step from x at step i given the prediction there."""

    @abc.abstractmethod
    def step(self, x: torch.Tensor, pred: torch.Tensor, i: int, noise: torch.Tensor | None) -> torch.Tensor:
        """The state at step i + 1: `chain_mean` plus the step's noise (None: `step_mean`, the
        deterministic step)."""

    def chain_mean(self, x: torch.Tensor, pred: torch.Tensor, i: int | torch.Tensor) -> torch.Tensor:
        """The mean of the stochastic chain's step i: the deterministic step, unless the actor adds a
        drift that compensates the chain's noise (the flow actor's score_drift)."""
        return self.step_mean(x, pred, i)

    @abc.abstractmethod
    def log_prob_std(self, i: torch.Tensor) -> torch.Tensor:
        """The std (N, 1, 1) with which step i's transition is scored, for (N,) step indices."""

    @abc.abstractmethod
    def to_velocity(self, x: torch.Tensor, pred: torch.Tensor, i: int | torch.Tensor) -> torch.Tensor:
        """This actor's prediction at its state x and step i as a velocity on the flow frame."""

    @abc.abstractmethod
    def to_eps(self, x: torch.Tensor, pred: torch.Tensor, i: int | torch.Tensor) -> torch.Tensor:
        """This actor's prediction at its state x and step i as the noise eps on the flow frame."""

    @abc.abstractmethod
    def sample(self, obs: torch.Tensor, noise: torch.Tensor, hook: Hook | None = None) -> torch.Tensor:
        """Action chunk (B, horizon, act_dim) as a deterministic function of obs and noise."""

    def chain_noise_shape(self, batch: int) -> tuple[int, ...]:
        """Noise of a stochastic chain: the start state, then one draw per step."""
        return (batch, self.num_sampling_steps + 1, self.spec.horizon, self.spec.act_dim)

    def sample_chain(self, obs: torch.Tensor, noise: torch.Tensor, hook: Hook | None = None) -> torch.Tensor:
        """States chain_start..K (B, K - chain_start + 1, H, A) of the chain from x_0 = noise[:, 0],
        step i drawing noise[:, i + 1]; its last entry is the action."""
        return torch.stack(run_steps(self, obs, noise[:, 0], noise[:, 1:], hook, self.chain_start), dim=1)

    def step_log_densities(self, obs: torch.Tensor, chain: torch.Tensor, hook: Hook | None = None) -> torch.Tensor:
        """Per-element Gaussian log-densities (B, steps, H, A) of the chain's scored transitions,
        every step through the network in one batch."""
        batch, steps = chain.shape[0], self.scored_steps
        n, first = len(steps), steps.start - self.chain_start
        x = chain[:, first:first + n].reshape(batch * n, *chain.shape[2:])
        i = torch.arange(steps.start, steps.stop).repeat(batch)
        obs = obs.repeat_interleave(n, dim=0)
        pred = self.predict(x, i, obs)
        if hook is not None:
            pred = hook(i, x, pred, obs)
        mean, std = self.chain_mean(x, pred, i), self.log_prob_std(i)
        z = (chain[:, first + 1:first + n + 1].reshape(x.shape) - mean) / std
        return (-0.5 * z.pow(2) - std.log() - 0.5 * LOG_2PI).reshape(batch, n, *chain.shape[2:])

    def chain_log_prob(self, obs: torch.Tensor, chain: torch.Tensor, hook: Hook | None = None) -> torch.Tensor:
        """Log-probability (B, steps) of each scored transition, summed over its elements."""
        return self.step_log_densities(obs, chain, hook).sum(dim=(2, 3))


def run_steps(actor: GenerativeActor, obs: torch.Tensor, x: torch.Tensor, noise: torch.Tensor | None = None,
              hook: Hook | None = None, keep_from: int = 0) -> list[torch.Tensor]:
    """The states keep_from..K the actor's steps visit from state x at step 0; step i draws
    noise[:, i] (None: deterministic steps). The one sampling loop every sampler runs."""
    kept = [x] if keep_from == 0 else []
    for i in range(actor.num_sampling_steps):
        pred = actor.predict(x, i, obs)
        if hook is not None:
            pred = hook(i, x, pred, obs)
        x = actor.step(x, pred, i, None if noise is None else noise[:, i])
        if i + 1 >= keep_from:
            kept.append(x)
    return kept
