"""SGD with the reference recipe: parameter groups, linear/cosine schedule, warmup, accumulation, step decisions."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["build_optimizer", "lr_factor", "Schedule"]


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


@dataclass(frozen=True)
class Schedule:
    """The per-iteration schedule of the reference trainer (ultralytics 8.0.197 ``BaseTrainer._do_train``, the
    engine of BICLab/SpikeYOLO), as a pure function of the global iteration, so a resumed run recomputes it.

    - lr after warmup: the scheduler (``LambdaLR``) steps at the *end* of an epoch, so epoch e trains with
      lf(e - 1) (epoch 0 with lf(0)); the epoch in which warmup ends keeps warmup's last value, lf(e).
    - warmup (iterations 0..warmup_iterations, inclusive): the bias lr falls from ``bias_lr``, the other lrs rise
      from 0, both to initial_lr * lf(e); momentum rises from ``start_momentum`` to ``momentum``; accumulation is
      max(1, round(interp(i, [0, nw], [1, nominal_batch / total_batch]))), after warmup its last value.
    - an optimizer step when i - last_step >= accumulate, with ``last_step`` carried across epochs (not reset);
      gradients left at the end of an epoch are dropped (``zero_grad`` when an epoch starts).

    ``total_batch`` is the batch over all processes (the reference's ``batch``).
    """

    epochs: int
    batches_per_epoch: int
    warmup_iterations: int      # -1: no warmup
    lrf: float
    cos_lr: bool
    nominal_batch: int
    total_batch: int
    bias_lr: float
    start_momentum: float
    momentum: float

    @property
    def accumulate(self) -> int:
        """Accumulation after warmup: max(round(nominal / total), 1)."""
        return max(round(self.nominal_batch / self.total_batch), 1)

    def epoch_lr_scale(self, epoch: int) -> float:
        """lf of the lr an epoch starts with (what the scheduler left: lf(e - 1), and lf(0) for epoch 0)."""
        return lr_factor(max(epoch - 1, 0), self.epochs, self.lrf, self.cos_lr)

    def in_warmup(self, iteration: int) -> bool:
        return iteration <= self.warmup_iterations

    def accumulate_at(self, iteration: int) -> int:
        """The accumulation in force at a global iteration."""
        if not self.in_warmup(iteration):
            return self.accumulate
        ramp = float(np.interp(iteration, [0, self.warmup_iterations], [1, self.nominal_batch / self.total_batch]))
        return max(1, int(np.round(ramp)))   # numpy rounds half to even, as the reference's .round()

    def warmup(self, optimizer: torch.optim.Optimizer, iteration: int, epoch: int) -> None:
        """Set the lr and momentum of every group for a warmup iteration (global, 0-based) of ``epoch``."""
        points = [0, self.warmup_iterations]
        target = lr_factor(epoch, self.epochs, self.lrf, self.cos_lr)   # the current epoch's lf, not the lagged one
        momentum = float(np.interp(iteration, points, [self.start_momentum, self.momentum]))
        for index, group in enumerate(optimizer.param_groups):
            start = self.bias_lr if index == 0 else 0.0
            group["lr"] = float(np.interp(iteration, points, [start, group["initial_lr"] * target]))
            if "momentum" in group:
                group["momentum"] = momentum
            elif "betas" in group:
                group["betas"] = (momentum, group["betas"][1])

    def last_step_before(self, epoch: int) -> int:
        """The iteration of the last optimizer step before ``epoch`` starts (-1: none), replayed from iteration 0
        (for a checkpoint that does not store it)."""
        last_step = -1
        for iteration in range(epoch * self.batches_per_epoch):
            if iteration - last_step >= self.accumulate_at(iteration):
                last_step = iteration
        return last_step
