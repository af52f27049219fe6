"""Exponential moving average of model weights (the weights that are validated and saved)."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

__all__ = ["ModelEMA"]


class ModelEMA:
    """EMA with the YOLOv8 ramp: decay_eff = decay * (1 - exp(-updates / tau)).

    Floating-point parameters and buffers are averaged; integer buffers (BN's
    num_batches_tracked) are copied.

    Args:
        model: the model being trained (unwrapped, not DDP).
        decay: asymptotic decay (0.9999).
        tau: ramp length in optimizer updates (2000).
        updates: number of updates already made (when resuming).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000, updates: int = 0) -> None:
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.updates = updates

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = self.current_decay()
        source = model.state_dict()
        for name, value in self.module.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(decay).add_(source[name].detach(), alpha=1 - decay)
            else:
                value.copy_(source[name])
