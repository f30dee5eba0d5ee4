"""Exponential moving average of a module's weights: the copy behaviour cloning evaluates and saves.

The decay warms up as diffusion_policy's EMAModel does (power 0.75, inv_gamma 1):
decay_k = min(max_decay, 1 - (1 + k)^-0.75) at update k (0 at the first), so in short runs the
average is not dominated by the random initial weights."""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay(step: int, max_decay: float, power: float = 0.75) -> float:
    return 0.0 if step <= 0 else min(max_decay, 1.0 - (1.0 + step) ** -power)


class EMA:
    def __init__(self, model: nn.Module, max_decay: float) -> None:
        self.model, self.max_decay, self.step = model, max_decay, 0
        self.average = copy.deepcopy(model).requires_grad_(False).eval()

    @torch.no_grad()
    def update(self) -> None:
        decay = ema_decay(self.step, self.max_decay)
        ema_params, params = list(self.average.parameters()), list(self.model.parameters())
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for ema_buffer, buffer in zip(self.average.buffers(), self.model.buffers()):
            ema_buffer.copy_(buffer)
        self.step += 1
