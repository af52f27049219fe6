"""Spiking neurons: the I-LIF neuron of SpikeYOLO and the ReLU twin.

Tensors inside the network are kept flat as [T*B, C, H, W] (time-major); a
neuron knows T and views its input as [T, B*C*H*W] for the membrane recursion.

I-LIF (SpikeYOLO paper, Eq. 8-11; exact form in shared/reference, section 1):

    H[t] = X[t]                               t = 0
    H[t] = decay * (H[t-1] - S[t-1]) + X[t]   t >= 1   (soft reset, S detached)
    S[t] = round_half_even(clip(H[t], 0, D))           (Eq. 11)

with a rectangular straight-through gradient dS/dH = 1 on [0, D] (both ends
included) and 0 outside. For T = 1 the neuron is a plain clamp-round with a
custom backward (no more work than a ReLU); for T > 1 a fused multi-step
function runs the recursion and a hand-written BPTT that stores one bool mask
per step. spikingjelly's ``ILIFNode`` (multi-step, ``detach_reset=True``,
``tau = 1 / (1 - decay)``) has exactly these dynamics and is kept as
``backend="spikingjelly"``; tests check both against a direct implementation
of the equations.

``charge="lif"`` is the neuron of the reference's Gen1 code (spikingjelly 0.0.0.0.12's
``MultiStepLIFNode`` with tau 2, decay_input, soft reset by the emitted integer; shared/reference
section 1, "Gen1 code"), which also scales the input:

    H[t] = V[t-1] + (X[t] - V[t-1]) / tau     V[-1] = 0, tau = 1 / (1 - decay)
    S[t] = round_half_even(clip(H[t], 0, D))
    V[t] = H[t] - S[t]                        (S detached)

computed in that order in float, as spikingjelly's ``v + (x - v) / tau`` is, so reference Gen1
weights give the reference's spikes bit for bit. Mathematically it is the I-LIF with decay
1 - 1/tau on the input X/tau; the float rounding differs, which is why it is a separate option.

State: the spikingjelly node keeps its membrane between calls, so the detector
resets every neuron once at the start of each forward (``reset_states``); the
fused paths keep no state between calls.
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import functional as sj_functional
from spikingjelly.activation_based import neuron as sj_neuron
from spikingjelly.activation_based import surrogate as sj_surrogate
from torch import nn

__all__ = ["ILIF", "ReLUNeuron", "SpikingNeuron", "quantize_ste", "reset_states"]


class _QuantizeSTE(torch.autograd.Function):
    """round_half_even(clip(x, 0, D)) forward; gradient 1 on [0, D] (ends included), 0 outside.

    Three memory passes in all, against ReLU's two: clamp and an in-place round forward, and one
    fused ``hardtanh_backward`` pass backward (it reads the saved input, as ReLU's backward reads its
    saved output, so it stores no more than ReLU). ``hardtanh_backward`` passes the gradient on the
    open interval (lo, hi); with lo and hi one ulp outside 0 and D in the tensor's dtype, that is
    exactly the closed window [0, D].
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, max_level: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.max_level = max_level
        return x.clamp(0.0, max_level).round_()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (x,) = ctx.saved_tensors
        low, high = _open_window(ctx.max_level, x.dtype)
        return torch.ops.aten.hardtanh_backward(grad_output, x, low, high), None


_WINDOWS: dict[tuple[float, torch.dtype], tuple[float, float]] = {}


def _open_window(max_level: float, dtype: torch.dtype) -> tuple[float, float]:
    """(lo, hi) with lo < 0 <= x <= D < hi for every x of ``dtype``: the closed window as an open one."""
    key = (max_level, dtype)
    if key not in _WINDOWS:
        ends = torch.tensor([0.0, max_level], dtype=dtype)
        outward = torch.tensor([-float("inf"), float("inf")], dtype=dtype)
        low, high = torch.nextafter(ends, outward).tolist()
        _WINDOWS[key] = (low, high)
    return _WINDOWS[key]


def quantize_ste(x: torch.Tensor, max_level: int) -> torch.Tensor:
    """The I-LIF firing function of Eq. 11 at one step: round_half_even(clip(x, 0, D)).

    Backward is the rectangular straight-through window: dS/dx = 1 for 0 <= x <= D
    (both ends included) and 0 outside. (``torch.clamp``'s own gradient is 0 at the
    bounds, so it cannot be used for the window.)
    """
    return _QuantizeSTE.apply(x, float(max_level))


class _ILIFMultiStep(torch.autograd.Function):
    """Fused multi-step I-LIF (Eq. 11) with a hand-written BPTT that stores one bool mask per step.

    Forward over t: H = decay * (H - S) + X[t]; S = round(clip(H, 0, D)).
    Backward (S detached in the reset): dL/dH[t] = dL/dS[t] * 1[0 <= H[t] <= D] + decay * dL/dH[t+1],
    and dL/dX[t] = dL/dH[t]. Autograd through the Python loop keeps several float tensors per step;
    this keeps 1 byte per element per step.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, max_level: float, decay: float) -> torch.Tensor:
        # x: [T, N]
        out = torch.empty_like(x)
        windows = torch.empty(x.shape, dtype=torch.bool, device=x.device)
        membrane = x[0].clone()
        for t in range(x.shape[0]):
            if t > 0:
                # H[t] = X[t] + decay * (H[t-1] - S[t-1])
                membrane = torch.add(x[t], membrane.sub_(out[t - 1]), alpha=decay)
            torch.clamp(membrane, 0.0, max_level, out=out[t])
            torch.eq(out[t], membrane, out=windows[t])
            out[t].round_()
        ctx.save_for_backward(windows)
        ctx.decay = decay
        return out

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (windows,) = ctx.saved_tensors
        grad_x = torch.empty_like(grad_output)
        for t in range(grad_output.shape[0] - 1, -1, -1):
            torch.mul(grad_output[t], windows[t], out=grad_x[t])
            if t + 1 < grad_output.shape[0]:
                grad_x[t].add_(grad_x[t + 1], alpha=ctx.decay)
        return grad_x, None, None


class _LIFMultiStep(torch.autograd.Function):
    """Fused multi-step reference-Gen1 LIF (``charge="lif"``), one bool mask per step saved.

    Forward over t: H = V + (X[t] - V) / tau; S = round(clip(H, 0, D)); V = H - S (V starts at 0).
    Backward (S detached in the reset): dL/dH[t] = dL/dS[t] * 1[0 <= H[t] <= D] + (1 - 1/tau) * dL/dH[t+1],
    and dL/dX[t] = dL/dH[t] / tau.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, max_level: float, tau: float) -> torch.Tensor:
        # x: [T, N]
        out = torch.empty_like(x)
        windows = torch.empty(x.shape, dtype=torch.bool, device=x.device)
        membrane = torch.zeros_like(x[0])
        for t in range(x.shape[0]):
            # H[t] = V[t-1] + (X[t] - V[t-1]) / tau, in spikingjelly's order of operations
            membrane = membrane + (x[t] - membrane) / tau
            torch.clamp(membrane, 0.0, max_level, out=out[t])
            torch.eq(out[t], membrane, out=windows[t])
            out[t].round_()
            membrane = membrane - out[t]  # V[t] = H[t] - S[t]
        ctx.save_for_backward(windows)
        ctx.tau = tau
        return out

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (windows,) = ctx.saved_tensors
        grad_h = torch.empty_like(grad_output)
        leak = 1.0 - 1.0 / ctx.tau
        for t in range(grad_output.shape[0] - 1, -1, -1):
            torch.mul(grad_output[t], windows[t], out=grad_h[t])
            if t + 1 < grad_output.shape[0]:
                grad_h[t].add_(grad_h[t + 1], alpha=leak)
        return grad_h / ctx.tau, None, None


def _lif_loop(x: torch.Tensor, max_level: int, tau: float) -> torch.Tensor:
    """Per-step reference-Gen1 LIF under autograd, as spikingjelly runs it: x [T, N] -> spikes [T, N]."""
    outputs = []
    membrane = torch.zeros_like(x[0])
    for t in range(x.shape[0]):
        membrane = membrane + (x[t] - membrane) / tau
        outputs.append(quantize_ste(membrane, max_level))
        membrane = membrane - outputs[-1].detach()
    return torch.stack(outputs)


def _ilif_loop(x: torch.Tensor, max_level: int, decay: float) -> torch.Tensor:
    """Per-step I-LIF under autograd (the reference's way): x [T, N] -> spikes [T, N]."""
    outputs = []
    membrane = x[0]
    for t in range(x.shape[0]):
        if t > 0:
            membrane = decay * (membrane - outputs[-1].detach()) + x[t]
        outputs.append(quantize_ste(membrane, max_level))
    return torch.stack(outputs)


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
        backend: for T > 1, ``fused`` (a hand-written BPTT storing one bool mask per step, the
            default), ``spikingjelly`` (spikingjelly's ``ILIFNode``, multi-step) or ``loop`` (a
            per-step loop under autograd, as the reference implementation runs; the benchmark
            baseline). Same numbers.
        charge: ``ilif`` (Eq. 11: H = decay * (H - S) + X) or ``lif`` (the reference Gen1 code's
            spikingjelly LIF: H = V + (X - V) / tau with tau = 1 / (1 - decay), V = H - S; see the
            module docstring). ``lif`` runs on the ``fused`` and ``loop`` backends.
    """

    def __init__(self, time_steps: int = 1, max_level: int = 4, decay: float = 0.25,
                 backend: str = "fused", charge: str = "ilif") -> None:
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
        if backend not in ("fused", "spikingjelly", "loop"):
            raise ValueError(f"backend must be 'fused', 'spikingjelly' or 'loop', got {backend!r}")
        self.backend = backend
        if charge not in ("ilif", "lif"):
            raise ValueError(f"charge must be 'ilif' or 'lif', got {charge!r}")
        if charge == "lif" and not 0.0 < self.decay:
            raise ValueError(f"charge='lif' needs decay = 1 - 1/tau > 0, got {decay}")
        if charge == "lif" and backend == "spikingjelly":
            raise ValueError("charge='lif' runs on backend 'fused' or 'loop' (spikingjelly's own LIF fires "
                             "binary spikes against a threshold, not the reference's integers)")
        self.charge = charge
        self.tau = 1.0 / (1.0 - self.decay)  # spikingjelly's tau; 2.0 exactly for decay 0.5
        self.node: nn.Module | None = None
        if self.time_steps > 1 and backend == "spikingjelly":
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
        if self.charge == "lif":
            # [T*B, C, H, W] -> [T, B*C*H*W]
            seq = x.reshape(self.time_steps, -1)
            if self.backend == "loop":
                return _lif_loop(seq, self.max_level, self.tau).reshape(x.shape)
            return _LIFMultiStep.apply(seq, float(self.max_level), self.tau).reshape(x.shape)
        if self.time_steps == 1:
            return quantize_ste(x, self.max_level)
        flat_shape = x.shape
        # [T*B, C, H, W] -> [T, B*C*H*W]
        seq = x.reshape(self.time_steps, -1)
        if self.node is not None:
            out = self.node(seq)
        elif self.backend == "loop":
            out = _ilif_loop(seq, self.max_level, self.decay)
        else:
            out = _ILIFMultiStep.apply(seq, float(self.max_level), self.decay)
        return out.reshape(flat_shape)

    def extra_repr(self) -> str:
        charge = ", charge=lif" if self.charge == "lif" else ""
        return f"{super().extra_repr()}, decay={self.decay}, backend={self.backend}{charge}"


class ReLUNeuron(SpikingNeuron):
    """The ANN twin: ReLU in place of I-LIF (same architecture, same parameters).

    Args:
        time_steps: kept for interface parity (the input is still [T*B, ...]).
        max_level: unused by the activation; reported as 0 meaning "real-valued".
        decay, charge: accepted and ignored (so a neuron config's overrides apply to either neuron).
    """

    def __init__(self, time_steps: int = 1, max_level: int = 0, decay: float = 0.0, charge: str = "ilif") -> None:
        super().__init__()
        self.time_steps = int(time_steps)
        self.max_level = 0
        del decay, charge

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


def reset_states(module: nn.Module) -> None:
    """Reset the membrane state of every stateful neuron in ``module`` (the one reset place)."""
    sj_functional.reset_net(module)
