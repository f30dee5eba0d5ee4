"""The on-policy minibatch step — loss, gradient, gradient clip and Adam — as one torch.compile'd function
over flat tensors (policy.algo.compile).

Why: a 64x64 PPO minibatch step is a few hundred tiny kernels, each paying Python, dispatcher and
autograd overhead (about 1.1 ms eager on one CPU core). Compiling the loss alone saved ~30%; compiling
the whole step as a pure function — torch.func.grad of the loss with every trained parameter a view of
one flat vector, then the clip and Adam on that vector — lets Inductor fuse the elementwise work into a
few C++ loops around the matrix products, and leaves one guarded call per minibatch (0.31 ms against 1.11).
That call's own cost (dynamo's guards, the wrapper, the dispatch into the compiled code) stays about 0.2 ms on
this machine, so `policy.algo.compile_unroll` k runs k consecutive minibatch steps in one graph: the same
steps in the same order, the fixed cost paid once per k.

The networks and the torch Adam stay the source of truth: `begin` gathers the parameters and Adam's
state (exp_avg, exp_avg_sq, step) into flat tensors, `end` writes them back, so checkpoints, resume and
the eager path see the same optimiser either way. The Adam here is torch's (bias-corrected, eps outside
the square root); a parameter that gets no gradient (the actor during critic warm-up) keeps its weights,
moments and step count, as torch's Adam skips a parameter whose .grad is None."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from robopol import distributed

Loss = Callable[[dict[str, torch.Tensor], bool], tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]]


class _LossModule(nn.Module):
    """The networks a loss reads, under one root, so torch.func.functional_call can swap their weights."""

    def __init__(self, modules: dict[str, nn.Module], loss: Loss) -> None:
        super().__init__()
        self.nets = nn.ModuleDict(modules)
        self.loss = loss

    def forward(self, batch: dict[str, torch.Tensor], train_actor: bool) -> tuple[torch.Tensor, tuple[Any, ...]]:
        loss, value_loss, policy = self.loss(batch, train_actor)
        return loss, (value_loss.detach(), {k: v.detach() for k, v in policy.items()})


class CompiledStep:
    """One compiled minibatch step of `loss` for `optimizer` (torch Adam, no weight decay, no amsgrad),
    whose groups hold exactly the parameters the loss trains; the first group is the actor's, which
    `train_actor=False` freezes. Call `begin` before an update's minibatches and `end` after them."""

    def __init__(self, modules: dict[str, nn.Module], loss: Loss, optimizer: torch.optim.Optimizer,
                 max_grad_norm: float) -> None:
        groups = optimizer.param_groups
        if any(g["weight_decay"] or g["amsgrad"] or g["maximize"] for g in groups):
            raise ValueError("CompiledStep implements plain Adam only (no weight decay, amsgrad or maximize)")
        if any((g["betas"], g["eps"]) != (groups[0]["betas"], groups[0]["eps"]) for g in groups):
            raise ValueError("CompiledStep needs one (betas, eps) for every parameter group")
        self.optimizer, self.root = optimizer, _LossModule(modules, loss)
        names = {id(p): name for name, p in self.root.named_parameters()}
        self.params = [p for group in groups for p in group["params"]]
        self.names = [names[id(p)] for p in self.params]
        self.sizes = [p.numel() for p in self.params]
        # The compiled step reads the shapes, never the parameters themselves: a parameter tensor it touched
        # would cost a Python identity guard per parameter on every call (~0.15 ms of a 0.42 ms guard check).
        self.shapes = [tuple(p.shape) for p in self.params]
        device, total = self.params[0].device, sum(self.sizes)
        self.actor_mask = (torch.arange(total, device=device) < sum(p.numel() for p in groups[0]["params"])).float()
        self.hyper = torch.tensor([*groups[0]["betas"], groups[0]["eps"], max_grad_norm], device=device)
        self.flat: dict[str, torch.Tensor] = {}
        # A dynamo cache entry per (train_actor, group shapes): two graphs in a run, more where an epoch's
        # minibatches do not split into whole groups.
        self._compiled = torch.compile(self._steps, options={"cpp_wrapper": True})

    # ---- around an update ----
    def begin(self) -> None:
        """Gather the parameters, Adam's moments and step counts (zeros where Adam has not stepped a
        parameter yet), beta ** step for its bias corrections and each group's learning rate into flat tensors."""
        state, params = self.optimizer.state, [p.detach() for p in self.params]
        lrs = [group["lr"] for group in self.optimizer.param_groups for _ in group["params"]]

        def adam(key: str) -> list[torch.Tensor]:
            return [state[p][key] if p in state else torch.zeros_like(d) for p, d in zip(self.params, params)]

        self.flat = {"param": _flat(params), "exp_avg": _flat(adam("exp_avg")), "exp_avg_sq": _flat(adam("exp_avg_sq")),
                     "step": _flat([torch.full_like(d, float(state[p]["step"]) if p in state else 0.0)
                                    for p, d in zip(self.params, params)]),
                     "lr": _flat([torch.full_like(d, lr) for d, lr in zip(params, lrs)])}
        # beta1 ** step and beta2 ** step per weight, carried forward by a multiply in the step: a pow per
        # weight per step was a fifth of the compiled step's time.
        beta1, beta2 = self.optimizer.param_groups[0]["betas"]
        step = self.flat["step"].double()
        self.flat["powers"] = torch.stack([beta1 ** step, beta2 ** step]).float()

    def steps(self, batches: dict[str, torch.Tensor], train_actor: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step per minibatch of `batches` (each tensor (k, batch, ...)), in order: the loss's gradient,
        averaged over ranks, clipped, then one Adam step; returns the k value losses and the policy terms
        (none while the actor is frozen), each stacked over the k steps."""
        f = self.flat
        return self._compiled(f["param"], f["exp_avg"], f["exp_avg_sq"], f["step"], f["powers"], f["lr"],
                              self.actor_mask, self.hyper, batches, train_actor)

    def end(self) -> None:
        """Write the weights and Adam's state back into the networks and the optimiser."""
        f, state = self.flat, self.optimizer.state
        offset = 0
        with torch.no_grad():
            for p, n in zip(self.params, self.sizes):
                p.copy_(f["param"][offset: offset + n].view_as(p))
                steps = float(f["step"][offset])
                if steps:
                    state[p] = {"step": torch.tensor(steps, dtype=torch.float32, device=p.device),
                                "exp_avg": f["exp_avg"][offset: offset + n].view_as(p).clone(),
                                "exp_avg_sq": f["exp_avg_sq"][offset: offset + n].view_as(p).clone()}
                offset += n
        self.flat = {}

    # ---- what is compiled ----
    def _loss(self, flat_param: torch.Tensor, batch: dict[str, torch.Tensor], train_actor: bool
              ) -> tuple[torch.Tensor, tuple[Any, ...]]:
        views = [chunk.view(shape) for chunk, shape in zip(torch.split(flat_param, self.sizes), self.shapes)]
        return torch.func.functional_call(self.root, dict(zip(self.names, views)), (batch, train_actor))

    def _steps(self, param: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, step: torch.Tensor,
               powers: torch.Tensor, lr: torch.Tensor, actor_mask: torch.Tensor, hyper: torch.Tensor,
               batches: dict[str, torch.Tensor], train_actor: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The group's steps, unrolled by dynamo into one graph."""
        return stack_steps([self._step(param, exp_avg, exp_avg_sq, step, powers, lr, actor_mask, hyper, batch, train_actor)
                            for batch in unstack_group(batches)])

    def _step(self, param: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, step: torch.Tensor,
              powers: torch.Tensor, lr: torch.Tensor, actor_mask: torch.Tensor, hyper: torch.Tensor,
              batch: dict[str, torch.Tensor], train_actor: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        grad, (value_loss, policy) = torch.func.grad(self._loss, has_aux=True)(param, batch, train_actor)
        if distributed.active():
            _average(grad)
        beta1, beta2, eps, max_norm = hyper.unbind()
        grad = grad * (max_norm / (torch.linalg.vector_norm(grad) + 1e-6)).clamp(max=1.0)  # clip_grad_norm_
        trained = torch.ones_like(actor_mask) if train_actor else 1.0 - actor_mask
        new_step = step + trained
        keep = trained == 0
        new_powers = torch.where(keep, powers, powers * torch.stack([beta1, beta2])[:, None])  # beta ** new_step
        new_avg = torch.lerp(exp_avg, grad, 1 - beta1)
        new_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * grad * grad
        denom = new_avg_sq.sqrt() / (1 - new_powers[1]).sqrt() + eps
        new_param = param - lr / (1 - new_powers[0]) * new_avg / denom
        param.copy_(torch.where(keep, param, new_param))
        exp_avg.copy_(torch.where(keep, exp_avg, new_avg))
        exp_avg_sq.copy_(torch.where(keep, exp_avg_sq, new_avg_sq))
        step.copy_(new_step)
        powers.copy_(new_powers)
        return value_loss, policy


def unstack_group(batches: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """A group of minibatches (each tensor (k, batch, ...)) as its k minibatches, in order."""
    return [{key: v[i] for key, v in batches.items()} for i in range(len(next(iter(batches.values()))))]


def stack_steps(steps: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Minibatch steps' (value loss, policy terms), each stacked over the steps."""
    return torch.stack([value_loss for value_loss, _ in steps]), {key: torch.stack([policy[key] for _, policy in steps])
                                                                 for key in steps[0][1]}


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


@torch.compiler.disable
def _average(grad: torch.Tensor) -> None:
    """The flat gradient's mean over ranks, in place; outside the compiled graph (it waits on other ranks)."""
    distributed.average_([grad])

