"""Spiking neurons: the I-LIF neuron of SpikeYOLO, the ReLU twin, and the one place T and D live.

Tensors inside the network are kept flat as [T*B, C, H, W] (time-major); a
neuron reads T from its :class:`SpikeCoding` and views its input as [T, B*C*H*W]
for the membrane recursion.

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

T and D (:class:`SpikeCoding`): a detector owns one ``SpikeCoding`` and every neuron, its time
expansion and its heads hold a reference to that same object and read it at each forward, so T and
D live once and changing ``model.time_steps`` changes T everywhere. A neuron built on its own
(``ILIF(time_steps=2)``) owns a private one.

State: every call starts from a zero membrane, on every backend (the spikingjelly node is built
afresh per call, so spikingjelly's own between-call memory never carries over). The *stateful*
mode (``stateful = True``; a detector's ``streaming()`` switches all its neurons) carries the
membrane across calls instead: the membrane after a call's last step, V = H[T-1] - S[T-1]
(``charge="ilif"``) or V[T-1] (``"lif"``), is kept in ``membrane`` and the next call's T steps
continue the recursion from it:

    charge ilif:  H[0] = decay * V + X[0]             (Eq. 11 with H[-1] - S[-1] = V)
    charge lif:   H[0] = V + (X[0] - V) / tau

for any T >= 1 and every backend. A call whose input has another shape (another batch size) starts
from zero again. The carried membrane is detached (no gradient flows into the previous call).
:func:`reset_states` forgets it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from spikingjelly.activation_based import neuron as sj_neuron
from spikingjelly.activation_based import surrogate as sj_surrogate
from torch import nn

__all__ = ["ILIF", "ChargeRule", "ReLUNeuron", "SpikeCoding", "SpikingNeuron", "quantize_ste", "reset_states",
           "run_steps", "set_stateful"]


@dataclass
class SpikeCoding:
    """T and D of a network, held once and shared by reference (see the module docstring).

    Not a parameter or buffer: state_dict keys are those of the layers alone, and checkpoints record
    T and D in ``model_config.neuron``. Both are checked whenever they are set.

    Args:
        time_steps: T (>= 1), the leading time axis of the flat [T*B, ...] tensors.
        max_level: D (>= 0), the largest integer a neuron emits; 0 means real-valued (the ReLU twin).
    """

    time_steps: int = 1
    max_level: int = 4

    def __setattr__(self, name: str, value: int) -> None:
        symbol, least = _CODING_BOUNDS[name]
        if int(value) < least:
            raise ValueError(f"{name} ({symbol}) must be >= {least}, got {value}")
        super().__setattr__(name, int(value))


_CODING_BOUNDS = {"time_steps": ("T", 1), "max_level": ("D", 0)}


@dataclass(frozen=True)
class ChargeRule:
    """How a neuron's membrane charges between firings: what the deploy paths rebuild it from.

        charge "ilif":  H[t] = step_decay * (H[t-1] - S[t-1]) + X[t]          (Eq. 11; H[0] = X[0])
        charge "lif":   H[t] = V[t-1] + (X[t] - V[t-1]) / tau,  V[t] = H[t] - S[t]  (the reference Gen1 LIF)

    with S[t] = round_half_even(clip(H[t], 0, D)) in both. Either is H[t] = gain * X[t] + leak * (H[t-1] - S[t-1]).

    Attributes:
        charge: ``ilif`` or ``lif``: the recursion and its float order.
        decay: the configured decay (a fixed-point membrane multiplies by it exactly, as m / 2^s).
        step_decay: the factor the ``ilif`` recursion multiplies H - S by in float (``decay``, or 1 - 1/tau where
            the neuron computes it so).
        tau: the ``lif`` time constant, 1 / (1 - decay); None for ``ilif``.
    """

    charge: str
    decay: float
    step_decay: float
    tau: float | None = None

    @property
    def gain(self) -> float:
        """The factor of X[t] in H[t]: 1 for ``ilif``, 1 / tau for ``lif``."""
        return 1.0 if self.tau is None else 1.0 / self.tau

    @property
    def leak(self) -> float:
        """The factor of H[t-1] - S[t-1] in H[t]: ``step_decay`` for ``ilif``, 1 - 1/tau for ``lif``."""
        return self.step_decay if self.tau is None else 1.0 - 1.0 / self.tau


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


def run_steps(x: torch.Tensor, fire, max_level: int, decay: float, tau: float | None = None,
              initial: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The membrane recursion step by step with any firing function (the ``loop`` backend and ONNX export).

    Args:
        x: [T, N] input currents.
        fire: ``fire(membrane, max_level) -> spikes`` (``quantize_ste`` under autograd; round(clamp) for export).
        max_level: D.
        decay: I-LIF decay (``charge="ilif"``).
        tau: None for ``charge="ilif"``; the LIF time constant for ``charge="lif"``.
        initial: [N] carried membrane V of the previous call, or None (zero).

    Returns:
        spikes [T, N] and the membrane V after the last step [N] (detached).
    """
    outputs = []
    if tau is None:
        membrane = x[0] if initial is None else torch.add(x[0], initial, alpha=decay)  # H[0] = decay * V + X[0]
    else:
        membrane = torch.zeros_like(x[0]) if initial is None else initial
    for t in range(x.shape[0]):
        if tau is not None:
            membrane = membrane + (x[t] - membrane) / tau  # H[t] = V[t-1] + (X[t] - V[t-1]) / tau
        elif t > 0:
            membrane = decay * (membrane - outputs[-1].detach()) + x[t]  # H[t] = decay (H[t-1] - S[t-1]) + X[t]
        outputs.append(fire(membrane, max_level))
        if tau is not None:
            membrane = membrane - outputs[-1].detach()  # V[t] = H[t] - S[t]
    final = membrane - outputs[-1] if tau is None else membrane
    return torch.stack(outputs), final.detach()


class _FusedSteps(torch.autograd.Function):
    """Fused multi-step I-LIF (Eq. 11) or reference-Gen1 LIF with a hand-written BPTT, one bool mask per step.

    Forward over t, ``charge="ilif"`` (tau None): H = decay * (H - S) + X[t]; ``"lif"``: H = V + (X[t] - V) / tau,
    V = H - S; then S = round(clip(H, 0, D)). Backward (S detached in the reset):
    dL/dH[t] = dL/dS[t] * 1[0 <= H[t] <= D] + leak * dL/dH[t+1] with leak = decay (ilif) or 1 - 1/tau (lif),
    and dL/dX[t] = dL/dH[t] (ilif) or dL/dH[t] / tau (lif). Autograd through the Python loop keeps several
    float tensors per step; this keeps 1 byte per element per step. The carried membrane (``initial``) gets
    no gradient.

    Returns the spikes [T, N] and, when ``keep``, the membrane V after the last step [N] (else None).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, initial: torch.Tensor | None, max_level: float, decay: float,
                tau: float | None, keep: bool):
        # x: [T, N]; initial: [N] or None
        out = torch.empty_like(x)
        windows = torch.empty(x.shape, dtype=torch.bool, device=x.device)
        if tau is None:  # membrane holds H
            membrane = x[0].clone() if initial is None else torch.add(x[0], initial, alpha=decay)
        else:  # membrane holds V
            membrane = torch.zeros_like(x[0]) if initial is None else initial
        for t in range(x.shape[0]):
            if tau is not None:
                # H[t] = V[t-1] + (X[t] - V[t-1]) / tau, in spikingjelly's order of operations
                membrane = membrane + (x[t] - membrane) / tau
            elif t > 0:
                # H[t] = X[t] + decay * (H[t-1] - S[t-1])
                membrane = torch.add(x[t], membrane.sub_(out[t - 1]), alpha=decay)
            torch.clamp(membrane, 0.0, max_level, out=out[t])
            torch.eq(out[t], membrane, out=windows[t])
            out[t].round_()
            if tau is not None:
                membrane = membrane - out[t]  # V[t] = H[t] - S[t]
        final = None
        if keep:
            final = membrane - out[-1] if tau is None else membrane
            ctx.mark_non_differentiable(final)
        ctx.save_for_backward(windows)
        ctx.leak = decay if tau is None else 1.0 - 1.0 / tau
        ctx.tau = tau
        return out, final

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor, _grad_final):
        (windows,) = ctx.saved_tensors
        grad_h = torch.empty_like(grad_output)
        for t in range(grad_output.shape[0] - 1, -1, -1):
            torch.mul(grad_output[t], windows[t], out=grad_h[t])
            if t + 1 < grad_output.shape[0]:
                grad_h[t].add_(grad_h[t + 1], alpha=ctx.leak)
        grad_x = grad_h if ctx.tau is None else grad_h / ctx.tau
        return grad_x, None, None, None, None, None


class SpikingNeuron(nn.Module):
    """Base class: every neuron in a spikeyolo network derives from it.

    The deploy paths (spike-driven, fixed point, ONNX, the integer simulator, NIR) and the energy counters read a
    neuron through this interface only, never by its class, so a new neuron implements these and nothing in
    ``spikeyolo.deploy`` or ``spikeyolo.energy`` changes:

    - ``max_level``: D >= 1 when it emits integers in {0..D}, each of which the spike-driven path expands to D
      binary virtual steps (thermometer code); 0 when its output is real-valued (the ANN twin: no spikes).
    - ``charge_rule``: its membrane recursion as a :class:`ChargeRule`, from which the ONNX form, the integer
      simulator and NIR rebuild it; None when it has no membrane (then those paths refuse it).
    - ``exports_as_is``: True when its forward is plain tensor operations that trace to ONNX as they are; False
      when it is not (a custom autograd Function, a spikingjelly operator): ONNX export then runs the plain-op
      form of its ``charge_rule`` (``spikeyolo.deploy.export.OnnxILIF``) in its place.
    - :meth:`snap_for_fixed_point`: make its own float arithmetic exact for the fixed-point model (in place).

    Args:
        time_steps, max_level: T and D of a private :class:`SpikeCoding` (a detector replaces it with its own).

    Attributes:
        coding: the :class:`SpikeCoding` the neuron reads T and D from.
        time_steps: T, the leading time axis of the flat [T*B, ...] input (read from ``coding``).
        max_level: D, the largest value the neuron emits (1 for binary neurons; read from ``coding``).
        stateful: False (default): every call starts from a zero membrane; True: from ``membrane``.
        membrane: the membrane carried to the next call in the stateful mode, [N] with N = B*C*H*W, or None.
    """

    exports_as_is: bool = True

    def __init__(self, time_steps: int, max_level: int) -> None:
        super().__init__()
        self.coding = SpikeCoding(time_steps, max_level)
        self.stateful = False
        self.membrane: torch.Tensor | None = None

    @property
    def time_steps(self) -> int:
        return self.coding.time_steps

    @property
    def max_level(self) -> int:
        return self.coding.max_level

    @property
    def charge_rule(self) -> ChargeRule | None:
        """The membrane recursion the deploy paths rebuild (see the class docstring); None: no membrane."""
        return None

    def snap_for_fixed_point(self) -> None:
        """Make the neuron's float arithmetic exact for the fixed-point model, in place (nothing to do by default)."""

    def reset_state(self) -> None:
        """Forget the carried membrane: the next call starts from zero."""
        self.membrane = None

    def carried(self, seq: torch.Tensor) -> torch.Tensor | None:
        """The membrane the call on ``seq`` [T, N] starts from: None (zero) unless stateful with one of shape [N]."""
        membrane = self.membrane
        if not self.stateful or membrane is None or membrane.shape != seq.shape[1:] or membrane.device != seq.device:
            return None
        return membrane.to(seq.dtype)

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

    exports_as_is = False  # quantize_ste and the fused / spikingjelly steps do not trace to ONNX

    def __init__(self, time_steps: int = 1, max_level: int = 4, decay: float = 0.25,
                 backend: str = "fused", charge: str = "ilif") -> None:
        super().__init__(time_steps, max(int(max_level), 0))  # checks T
        if int(max_level) < 1:
            raise ValueError(f"max_level (D) must be >= 1, got {max_level}")
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
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

    @property
    def charge_rule(self) -> ChargeRule:
        """Eq. 11 (``ilif``) or the reference Gen1 LIF (``lif``) with this neuron's decay (see :class:`ChargeRule`)."""
        return ChargeRule(self.charge, self.decay, self.step_decay, self.lif_tau)

    def snap_for_fixed_point(self) -> None:
        """Make the decay an exact power of two where it is one up to float noise (e.g. 1 - 1/tau)."""
        if self.decay > 0:
            nearest = 2.0 ** round(math.log2(self.decay))
            if abs(self.decay - nearest) <= 1e-9 * nearest:
                self.decay = nearest

    @property
    def lif_tau(self) -> float | None:
        """tau of the ``lif`` charge, None for ``ilif`` (the argument :func:`run_steps` takes)."""
        return self.tau if self.charge == "lif" else None

    @property
    def step_decay(self) -> float:
        """The factor the ``ilif`` recursion multiplies H - S by: ``decay``, or on the spikingjelly backend its
        1 - 1/tau (equal up to float rounding)."""
        return 1.0 - 1.0 / self._spikingjelly_tau() if self.backend == "spikingjelly" else self.decay

    def _spikingjelly_tau(self) -> float:
        # spikingjelly: H[t] = (1 - 1/tau) V[t-1] + X[t], C = round(clip(H)), V = H - C.
        # tau must be > 1; decay 0 (no memory) is tau = 1, which spikingjelly rejects,
        # so that case uses a tiny offset, exact to float precision for decay = 0.
        return 1.0 / (1.0 - self.decay) if self.decay > 0 else 1.0 + 1e-7

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.charge == "ilif" and self.time_steps == 1 and not self.stateful:
            return quantize_ste(x, self.max_level)
        # [T*B, C, H, W] -> [T, B*C*H*W]
        seq = x.reshape(self.time_steps, -1)
        out, final = self._steps(seq, self.carried(seq))
        if self.stateful:
            self.membrane = final.detach()
        return out.reshape(x.shape)

    def _steps(self, seq: torch.Tensor, initial: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """spikes [T, N] and the membrane after the last step [N] (None when not stateful) of ``seq`` [T, N]."""
        if self.charge == "ilif" and seq.shape[0] == 1:
            membrane = seq if initial is None else torch.add(seq, initial, alpha=self.decay)  # H[0] = decay V + X[0]
            out = quantize_ste(membrane, self.max_level)
            return out, (membrane - out)[0] if self.stateful else None
        if self.backend == "loop":
            return run_steps(seq, quantize_ste, self.max_level, self.decay, self.lif_tau, initial)
        if self.backend == "spikingjelly":
            if initial is not None:  # H[0] = decay * V + X[0]; the node itself starts from zero
                seq = torch.cat((torch.add(seq[0], initial, alpha=self.decay).unsqueeze(0), seq[1:]))
            node = sj_neuron.ILIFNode(tau=self._spikingjelly_tau(),
                                      surrogate_function=sj_surrogate.MultiLevelSpikeCount(self.max_level),
                                      detach_reset=True, step_mode="m")
            return node(seq), node.v if self.stateful else None
        return _FusedSteps.apply(seq, initial, float(self.max_level), self.decay, self.lif_tau, self.stateful)

    def extra_repr(self) -> str:
        charge = ", charge=lif" if self.charge == "lif" else ""
        return f"{super().extra_repr()}, decay={self.decay}, backend={self.backend}{charge}"


class ReLUNeuron(SpikingNeuron):
    """The ANN twin: ReLU in place of I-LIF (same architecture, same parameters); it keeps no state.

    Args:
        time_steps: kept for interface parity (the input is still [T*B, ...]).
        max_level: unused by the activation; reported as 0 meaning "real-valued".
        decay, charge: accepted and ignored (so a neuron config's overrides apply to either neuron).
    """

    def __init__(self, time_steps: int = 1, max_level: int = 0, decay: float = 0.0, charge: str = "ilif") -> None:
        super().__init__(time_steps, 0)
        del max_level, decay, charge

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


def _neurons(module: nn.Module) -> list[SpikingNeuron]:
    return [m for m in module.modules() if isinstance(m, SpikingNeuron)]


def reset_states(module: nn.Module) -> None:
    """Forget the carried membrane of every neuron in ``module`` (stateful mode); the next call starts from zero."""
    for neuron in _neurons(module):
        neuron.reset_state()


def set_stateful(module: nn.Module, enabled: bool) -> None:
    """Switch every neuron in ``module`` to the stateful mode (``enabled``) or back, starting from zero."""
    for neuron in _neurons(module):
        neuron.stateful = bool(enabled)
        neuron.reset_state()
