"""SGD with the reference recipe: parameter groups, linear/cosine schedule, warmup, accumulation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["build_optimizer", "lr_factor", "Warmup"]


def build_optimizer(model: nn.Module, lr0: float, momentum: float, weight_decay: float, nesterov: bool = True,
                    name: str = "sgd", **_: object) -> torch.optim.Optimizer:
    """SGD (the reference recipe) or AdamW with three groups (YOLOv8 convention): 0 biases (no decay),
    1 conv/linear weights (decay), 2 BatchNorm weights (no decay). Frozen parameters (the DFL weights)
    are left out. For AdamW, ``momentum`` is beta1 (as in ultralytics)."""
    biases, weights, norm_weights = [], [], []
    for module in model.modules():
        for param_name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad:
                continue
            if param_name == "bias":
                biases.append(parameter)
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                norm_weights.append(parameter)
            else:
                weights.append(parameter)
    if name == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(biases, lr=lr0, momentum=momentum, nesterov=nesterov)
    elif name == "adamw":
        optimizer = torch.optim.AdamW(biases, lr=lr0, betas=(momentum, 0.999), weight_decay=0.0)
    else:
        raise ValueError(f"optim.name must be 'sgd' or 'adamw', got {name!r}")
    optimizer.add_param_group({"params": weights, "weight_decay": weight_decay})
    optimizer.add_param_group({"params": norm_weights, "weight_decay": 0.0})
    for group in optimizer.param_groups:
        group["initial_lr"] = lr0
    return optimizer


def lr_factor(epoch: float, epochs: int, lrf: float, cos_lr: bool = False) -> float:
    """lf(e): linear (1 - e/E)(1 - lrf) + lrf, or the one-cycle cosine from 1 to lrf."""
    if cos_lr:
        return ((1 - math.cos(epoch * math.pi / epochs)) / 2) * (lrf - 1) + 1
    return max(1 - epoch / epochs, 0) * (1.0 - lrf) + lrf


@dataclass
class Warmup:
    """Per-iteration warmup (YOLOv8): bias lr from warmup_bias_lr down, other lrs up from 0,
    momentum from warmup_momentum, and gradient accumulation from 1 to nominal/batch."""

    iterations: int
    bias_lr: float
    start_momentum: float
    momentum: float
    accumulate: int

    def apply(self, optimizer: torch.optim.Optimizer, iteration: int, lr_scale: float) -> int:
        """Set lr/momentum for ``iteration`` (global, 0-based); returns the accumulation steps to use."""
        if iteration > self.iterations:
            return self.accumulate
        points = [0, self.iterations]
        for index, group in enumerate(optimizer.param_groups):
            start = self.bias_lr if index == 0 else 0.0
            group["lr"] = float(np.interp(iteration, points, [start, group["initial_lr"] * lr_scale]))
            momentum = float(np.interp(iteration, points, [self.start_momentum, self.momentum]))
            if "momentum" in group:
                group["momentum"] = momentum
            elif "betas" in group:
                group["betas"] = (momentum, group["betas"][1])
        return max(1, int(np.interp(iteration, points, [1, self.accumulate]).round()))
