"""Spiking neurons: the I-LIF neuron of SpikeYOLO and the ReLU twin.

Tensors inside the network are kept flat as [T*B, C, H, W] (time-major); a
neuron knows T and views its input as [T, B*C*H*W] for the membrane recursion.

I-LIF (SpikeYOLO paper, Eq. 8-11; exact form in shared/reference, section 1):

    H[t] = X[t]                               t = 0
    H[t] = decay * (H[t-1] - S[t-1]) + X[t]   t >= 1   (soft reset, S detached)
    S[t] = round_half_even(clip(H[t], 0, D))           (Eq. 11)

with a rectangular straight-through gradient dS/dH = 1 on [0, D] (both ends
included) and 0 outside. For T = 1 the neuron is a plain clamp-round, run by a
fused fast path; for T > 1 the recursion is spikingjelly's ``ILIFNode``
(multi-step, ``detach_reset=True``), which has exactly these dynamics with
``tau = 1 / (1 - decay)``.

State: the spikingjelly node keeps its membrane between calls, so the detector
resets every neuron once at the start of each forward (``reset_states``); the
fast path keeps no state.
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import functional as sj_functional
from spikingjelly.activation_based import neuron as sj_neuron
from spikingjelly.activation_based import surrogate as sj_surrogate
from torch import nn

__all__ = ["ILIF", "ReLUNeuron", "SpikingNeuron", "quantize_ste", "reset_states"]


class _QuantizeSTE(torch.autograd.Function):
    """round_half_even(clip(x, 0, D)) forward; gradient 1 on [0, D] (ends included), 0 outside."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, max_level: float) -> torch.Tensor:
        window = (x >= 0) & (x <= max_level)  # bool mask: 1 byte per element for backward
        ctx.save_for_backward(window)
        return torch.round(x.clamp(0.0, max_level))

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (window,) = ctx.saved_tensors
        return grad_output * window, None


def quantize_ste(x: torch.Tensor, max_level: int) -> torch.Tensor:
    """The I-LIF firing function of Eq. 11 at one step: round_half_even(clip(x, 0, D)).

    Backward is the rectangular straight-through window: dS/dx = 1 for 0 <= x <= D
    (both ends included) and 0 outside. (``torch.clamp``'s own gradient is 0 at the
    bounds, so it cannot be used for the window.)
    """
    return _QuantizeSTE.apply(x, float(max_level))


class SpikingNeuron(nn.Module):
    """Base class: every neuron in a spikeyolo network derives from it.

    Attributes:
        time_steps: T, the leading time axis of the flat [T*B, ...] input.
        max_level: D, the largest value the neuron emits (1 for binary neurons).
    """

    time_steps: int
    max_level: int

    def extra_repr(self) -> str:
        return f"time_steps={self.time_steps}, max_level={self.max_level}"


class ILIF(SpikingNeuron):
    """Integer Leaky Integrate-and-Fire neuron (Eq. 11).

    Args:
        time_steps: T (>= 1). Input is [T*B, ...] (time-major) or [T, ...].
        max_level: D (>= 1); outputs are integers in {0, ..., D}.
        decay: membrane decay per step (reference 0.25, i.e. spikingjelly tau 4/3).
    """

    def __init__(self, time_steps: int = 1, max_level: int = 4, decay: float = 0.25) -> None:
        super().__init__()
        if int(time_steps) < 1:
            raise ValueError(f"time_steps (T) must be >= 1, got {time_steps}")
        if int(max_level) < 1:
            raise ValueError(f"max_level (D) must be >= 1, got {max_level}")
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.time_steps = int(time_steps)
        self.max_level = int(max_level)
        self.decay = float(decay)
        self.node: nn.Module | None = None
        if self.time_steps > 1:
            # spikingjelly: H[t] = (1 - 1/tau) V[t-1] + X[t], C = round(clip(H)), V = H - C.
            # tau must be > 1; decay 0 (no memory) is tau = 1, which spikingjelly rejects,
            # so that case uses a tiny offset, exact to float precision for decay = 0.
            tau = 1.0 / (1.0 - self.decay) if self.decay > 0 else 1.0 + 1e-7
            self.node = sj_neuron.ILIFNode(
                tau=tau,
                surrogate_function=sj_surrogate.MultiLevelSpikeCount(self.max_level),
                detach_reset=True,
                step_mode="m",
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_steps == 1:
            return quantize_ste(x, self.max_level)
        flat_shape = x.shape
        # [T*B, C, H, W] -> [T, B*C*H*W]
        seq = x.reshape(self.time_steps, -1)
        out = self.node(seq)
        return out.reshape(flat_shape)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, decay={self.decay}"


class ReLUNeuron(SpikingNeuron):
    """The ANN twin: ReLU in place of I-LIF (same architecture, same parameters).

    Args:
        time_steps: kept for interface parity (the input is still [T*B, ...]).
        max_level: unused by the activation; reported as 0 meaning "real-valued".
    """

    def __init__(self, time_steps: int = 1, max_level: int = 0, decay: float = 0.0) -> None:
        super().__init__()
        self.time_steps = int(time_steps)
        self.max_level = 0
        del decay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


def reset_states(module: nn.Module) -> None:
    """Reset the membrane state of every stateful neuron in ``module`` (the one reset place)."""
    sj_functional.reset_net(module)
