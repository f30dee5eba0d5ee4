"""QGF's test-time guidance: a flow actor steered by the action-gradient of a learned Q.

At Euler step i (flow time t, robopol's frame x_t = t eps + (1 - t) a, v = eps - a) the actor's
velocity v predicts the endpoint a_hat = x_t - t v (the paper's a_t + (1 - t) v in its reversed time).
The endpoint is clipped to the action bounds [-1, 1] and g = grad_a min_i Q_i(s, a) is taken at the
clipped point and applied to a_hat unchanged, i.e. a straight-through clip: the gradient is not
zeroed where a_hat lies outside the bounds, as the derivative of a hard clip would be, and no
gradient flows through v (identity in place of the Jacobian, as the paper). The Euler step then
moves along v + w g in the paper's direction of integration, so the hook returns v - w g here.

The gradient is a hand-written backward pass through the Q ensemble (its linear, LayerNorm and
activation layers), checked against autograd in the tests. It therefore runs under
torch.inference_mode (evaluation), traces into one ONNX / TorchScript graph with the sampler
(export), and costs one extra pass per step. Best-of-N samples N chunks per observation (N noise
draws) and keeps the one the ensemble's minimum rates highest."""

from __future__ import annotations

import torch
from torch import nn

from robopol.critics import EnsembleLinear, QEnsemble
from robopol.policies.base import Actor
from robopol.policies.flow import FlowActor


def _activation_derivative(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """d activation(x) / dx for the activations robopol's networks use."""
    if isinstance(layer, nn.ReLU):
        return (x > 0).to(x.dtype)
    if isinstance(layer, nn.Tanh):
        return 1 - torch.tanh(x).pow(2)
    if isinstance(layer, nn.SiLU):
        s = torch.sigmoid(x)
        return s * (1 + x * (1 - s))
    if isinstance(layer, nn.Mish):
        tsp = torch.tanh(nn.functional.softplus(x))
        return tsp + x * (1 - tsp.pow(2)) * torch.sigmoid(x)
    raise TypeError(f"no derivative for activation {type(layer).__name__} in the Q-gradient")


def q_and_action_gradient(q: QEnsemble, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every head's Q (heads, B) and its gradient with respect to the actions (heads, B, H, A)."""
    x = torch.cat([obs.reshape(obs.shape[0], -1), actions.reshape(actions.shape[0], -1)], dim=-1)
    h = x.unsqueeze(0).expand(q.heads, *x.shape)
    tape: list[tuple[nn.Module, torch.Tensor, torch.Tensor | None]] = []
    for layer in q.net:
        if isinstance(layer, nn.LayerNorm):
            mean, var = h.mean(-1, keepdim=True), h.var(-1, unbiased=False, keepdim=True)
            rstd = torch.rsqrt(var + layer.eps)
            xhat = (h - mean) * rstd
            tape.append((layer, xhat, rstd))
            h = xhat * layer.weight + layer.bias
        else:
            tape.append((layer, h, None))
            h = layer(h)
    grad = torch.ones_like(h)
    for layer, saved, rstd in reversed(tape):
        if isinstance(layer, EnsembleLinear):
            grad = torch.bmm(grad, layer.weight.transpose(1, 2))
        elif isinstance(layer, nn.LayerNorm):
            gy = grad * layer.weight
            grad = rstd * (gy - gy.mean(-1, keepdim=True) - saved * (gy * saved).mean(-1, keepdim=True))
        else:
            grad = grad * _activation_derivative(layer, saved)
    action_grad = grad[..., x.shape[-1] - actions[0].numel():]
    return h.squeeze(-1), action_grad.reshape(q.heads, *actions.shape)


def min_q_gradient(q: QEnsemble, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """grad_a min_i Q_i(s, a) (B, H, A): the gradient of the head that is lowest for each sample."""
    values, grads = q_and_action_gradient(q, obs, actions)
    lowest = values.argmin(dim=0).view(1, -1, 1, 1).expand(1, *grads.shape[1:])
    return grads.gather(0, lowest).squeeze(0)


class QGuidedFlow(Actor):
    """A flow actor sampled with Q-gradient guidance of weight `weight` and best-of-`best_of_n`
    selection by min-Q; weight 0 and best_of_n 1 sample exactly as the flow actor does."""

    def __init__(self, flow: FlowActor, critic: QEnsemble, weight: float = 0.0, best_of_n: int = 1) -> None:
        super().__init__(flow.spec)
        self.flow, self.critic, self.weight, self.best_of_n = flow, critic.requires_grad_(False), weight, best_of_n

    def noise_shape(self, batch: int) -> tuple[int, ...]:
        """One chunk of noise per observation, or best_of_n of them (B, N, H, A)."""
        shape = self.flow.noise_shape(batch)
        return shape if self.best_of_n == 1 else (batch, self.best_of_n, *shape[1:])

    def guide(self, i: int | torch.Tensor, x: torch.Tensor, pred: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """The generative hook: velocity v -> v - w grad min Q at the clipped endpoint x - t v."""
        endpoint = x - self.flow.flow_t[i] * pred
        return pred - self.weight * min_q_gradient(self.critic, obs, endpoint.clamp(-1.0, 1.0))

    def sample(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        hook = self.guide if self.weight != 0 else None
        if self.best_of_n == 1:
            return self.flow.sample(obs, noise, hook)
        batch, n = noise.shape[:2]
        many = obs.repeat_interleave(n, dim=0)
        chunks = self.flow.sample(many, noise.reshape(batch * n, *noise.shape[2:]), hook)
        best = self.critic(many, chunks).min(dim=0).values.view(batch, n).argmax(dim=1)
        chunks = chunks.view(batch, n, *chunks.shape[1:])
        return chunks.gather(1, best.view(batch, 1, 1, 1).expand(batch, 1, *chunks.shape[2:])).squeeze(1)

    def loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.flow.loss(obs, actions)
