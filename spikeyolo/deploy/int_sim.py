"""Integer reference of one spike-driven block in pure numpy: the arithmetic a hardware implementation does.

This is a specification by execution, for one block of :func:`spikeyolo.deploy.to_spike_driven`
(a meta SNN block, Eq. 2-3, or a single spike-driven conv). Every value is an integer; there is
no multiplication between an activation and a weight.

Fixed point. A real value v is stored as the integer round(v * 2^f) ("f fractional bits"):
folded conv weights W_q and biases b_q, and the block input x_q (in hardware: the accumulator of
the previous layer). ``snap_to_grid`` rounds a PyTorch block's weights to the same grid, after
which the PyTorch block (float64) and this simulator agree exactly.

Per spike-driven conv, per original time step t (T steps, D levels):

1. membrane (Eq. 8-10): H[0] = X[0]; H[t] = decay * (H[t-1] - S[t-1]) + X[t]. With decay = m / 2^s
   (0.25 = 1 / 2^2) the product is a shift; H[t] is kept with f + s*t fractional bits, so the
   recursion is exact (hardware with fewer bits rounds here and may flip a spike at a .5 boundary).
2. fire (Eq. 11): S[t] = round_half_even(H[t] / 2^(f+s*t)) clipped to [0, D]: an integer compare
   against the thresholds (k + 0.5) * 2^(f+s*t), ties to even.
3. expand: S[t] becomes D binary spikes b[t, k] = 1 iff k < S[t] (thermometer code, k = 0..D-1).
4. accumulate: every binary spike at input (c, y, x) adds the weight column W_q[:, c, :, :] to the
   output accumulators it reaches (an AC, no MAC): Y[t] = sum_k conv(b[t, k], W_q).
5. bias: Y[t] += b_q, once per original step, after the D sub-steps (never once per sub-step).
6. residual (Eq. 2-3): integer additions of accumulators (same scale 2^-f).

The accumulators need about f + log2(fan-in * D * max|W|) + 1 bits; ``IntBlock.run`` uses int64.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import torch
from torch import nn

from spikeyolo.deploy.spike_driven import SpikeDrivenConv, SpikeDrivenMetaBlock

__all__ = ["IntConv", "IntBlock", "compile_block", "snap_to_grid", "quantize", "fire", "thermometer",
           "conv2d_int", "describe"]


def quantize(values: np.ndarray | torch.Tensor, frac_bits: int) -> np.ndarray:
    """round(v * 2^f) as int64 (the fixed-point code of v)."""
    array = values.detach().double().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, float)
    return np.rint(array * (1 << frac_bits)).astype(np.int64)


def fire(membrane: np.ndarray, scale_bits: int, max_level: int) -> np.ndarray:
    """Eq. 11 on integers: round_half_even(membrane / 2^scale_bits), clipped to [0, D]."""
    unit = np.int64(1) << scale_bits
    quotient, remainder = np.divmod(membrane, unit)  # floor division; 0 <= remainder < unit
    half = unit // 2
    round_up = (remainder > half) | ((remainder == half) & (quotient % 2 == 1))
    return np.clip(quotient + round_up, 0, max_level).astype(np.int64)


def thermometer(spikes: np.ndarray, max_level: int) -> np.ndarray:
    """[N, ...] integers in 0..D -> [D, N, ...] binary planes, plane k = (k < S)."""
    levels = np.arange(max_level).reshape(-1, *([1] * spikes.ndim))
    return (levels < spikes[None]).astype(np.int64)


def conv2d_int(x: np.ndarray, weight: np.ndarray, stride: int, padding: int, groups: int) -> np.ndarray:
    """Exact integer 2-D convolution (cross-correlation, zero padding), as PyTorch's conv2d.

    Args:
        x: [N, Cin, H, W] int64.
        weight: [Cout, Cin / groups, k, k] int64.

    Returns:
        [N, Cout, H', W'] int64.
    """
    batch = x.shape[0]
    out_chs, in_per_group, kernel, _ = weight.shape
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    # [N, Cin, H+2p, W+2p] -> [N, Cin, H', W', k, k]
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kernel, kernel), axis=(2, 3))[
        :, :, ::stride, ::stride]
    out_h, out_w = windows.shape[2:4]
    # [N, Cin, H', W', k, k] -> [N, G, Cin/G, H', W', k, k]
    windows = windows.reshape(batch, groups, in_per_group, out_h, out_w, kernel, kernel)
    # [Cout, Cin/G, k, k] -> [G, Cout/G, Cin/G, k, k]
    grouped = weight.reshape(groups, out_chs // groups, in_per_group, kernel, kernel)
    out = np.einsum("ngchwij,gocij->ngohw", windows, grouped, optimize=True)
    return out.reshape(batch, out_chs, out_h, out_w)


def _dyadic(decay: float) -> tuple[int, int]:
    """decay = m / 2^s exactly, or ValueError."""
    fraction = Fraction(decay).limit_denominator(1 << 16)
    denominator = fraction.denominator
    if float(fraction) != decay or denominator & (denominator - 1):
        raise ValueError(f"decay {decay} is not m / 2^s; the integer membrane needs a dyadic decay (0.25 = 1/4)")
    return fraction.numerator, denominator.bit_length() - 1


@dataclass
class IntConv:
    """One spike-driven conv in fixed point: I-LIF, thermometer expansion, ACs, bias once per step.

    Attributes:
        weight: [Cout, Cin/groups, k, k] int64, W * 2^f.
        bias: [Cout] int64, b * 2^f.
        stride, padding, groups: conv geometry.
        time_steps, max_level: T and D of the neuron before the conv.
        decay_num, decay_shift: decay = decay_num / 2^decay_shift.
        frac_bits: f.
    """

    weight: np.ndarray
    bias: np.ndarray
    stride: int
    padding: int
    groups: int
    time_steps: int
    max_level: int
    decay_num: int
    decay_shift: int
    frac_bits: int
    spikes_seen: int = field(default=0, compare=False)

    def neuron(self, x: np.ndarray) -> np.ndarray:
        """[T*B, C, H, W] accumulators (scale 2^-f) -> integer spike counts S in 0..D (steps 1-2)."""
        steps = x.reshape(self.time_steps, -1, *x.shape[1:])  # [T*B, ...] -> [T, B, ...]
        out = np.empty_like(steps)
        membrane = steps[0].copy()
        for t in range(self.time_steps):
            scale_bits = self.frac_bits + self.decay_shift * t
            if t > 0:  # H[t] = decay * (H[t-1] - S[t-1]) + X[t], at f + s*t fractional bits
                previous_bits = scale_bits - self.decay_shift
                membrane = self.decay_num * (membrane - (out[t - 1] << previous_bits)) + (
                    steps[t] << (self.decay_shift * t))
            out[t] = fire(membrane, scale_bits, self.max_level)
        return out.reshape(x.shape)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        spikes = self.neuron(x)                               # [T*B, C, H, W] in 0..D
        planes = thermometer(spikes, self.max_level)          # [D, T*B, C, H, W] in {0, 1}
        self.spikes_seen += int(planes.sum())
        # sum of the D binary sub-steps' convolutions: each 1 adds its weights (AC)
        summed = sum(conv2d_int(plane, self.weight, self.stride, self.padding, self.groups) for plane in planes)
        return summed + self.bias.reshape(1, -1, 1, 1)        # bias once per original step


@dataclass
class IntBlock:
    """A spike-driven block as integer operations: ``('conv', IntConv)``, ``('seq', [...])``, ``('meta', a, b)``."""

    program: tuple
    frac_bits: int

    def run(self, x_q: np.ndarray) -> np.ndarray:
        """[T*B, C, H, W] int64 input (scale 2^-f) -> int64 output (scale 2^-f)."""
        return _execute(self.program, np.asarray(x_q, dtype=np.int64))

    def convs(self) -> list[IntConv]:
        return list(_convs(self.program))


def _execute(program: tuple, x: np.ndarray) -> np.ndarray:
    kind = program[0]
    if kind == "conv":
        return program[1](x)
    if kind == "seq":
        for step in program[1]:
            x = _execute(step, x)
        return x
    token, channel = program[1], program[2]
    x = x + _execute(token, x)  # Eq. 2
    return x + _execute(channel, x)  # Eq. 3


def _convs(program: tuple):
    if program[0] == "conv":
        yield program[1]
    elif program[0] == "seq":
        for step in program[1]:
            yield from _convs(step)
    else:
        yield from _convs(program[1])
        yield from _convs(program[2])


def _compile(module: nn.Module, frac_bits: int) -> tuple:
    if isinstance(module, SpikeDrivenConv):
        neuron = module.neuron
        rule = getattr(neuron, "charge_rule", None)  # the neuron's interface (spikeyolo.nn.neurons.SpikingNeuron)
        if rule is None:
            raise ValueError(f"the integer simulator models the I-LIF neuron, got {type(neuron).__name__}")
        if rule.charge != "ilif":
            raise ValueError(f"the integer simulator models the I-LIF charge (Eq. 8-10), not charge="
                             f"{rule.charge!r} (the reference Gen1 LIF)")
        decay_num, decay_shift = _dyadic(rule.decay) if neuron.time_steps > 1 else (0, 0)
        conv = module.conv
        return ("conv", IntConv(weight=quantize(conv.weight, frac_bits), bias=quantize(module.bias, frac_bits),
                                stride=int(conv.stride[0]), padding=int(conv.padding[0]), groups=int(conv.groups),
                                time_steps=neuron.time_steps, max_level=neuron.max_level, decay_num=decay_num,
                                decay_shift=decay_shift, frac_bits=frac_bits))
    if isinstance(module, SpikeDrivenMetaBlock):
        return ("meta", _compile(module.token_mixer, frac_bits), _compile(module.channel_mixer, frac_bits))
    if isinstance(module, nn.Sequential):
        return ("seq", [_compile(child, frac_bits) for child in module])
    raise ValueError(f"the integer simulator covers spike-driven convs and meta blocks, not {type(module).__name__}")


def compile_block(block: nn.Module, frac_bits: int = 12) -> IntBlock:
    """The integer program of a spike-driven block (a ``SpikeDrivenMetaBlock``, ``SpikeDrivenConv`` or a
    ``Sequential`` of them, taken from :func:`spikeyolo.deploy.to_spike_driven`'s output).

    Args:
        block: the block (its weights are read, not changed).
        frac_bits: f, fractional bits of weights, biases and accumulators.
    """
    return IntBlock(_compile(block, int(frac_bits)), int(frac_bits))


@torch.no_grad()
def snap_to_grid(block: nn.Module, frac_bits: int) -> nn.Module:
    """Round the weights and biases of a spike-driven block's convs to multiples of 2^-f, in place."""
    scale = float(1 << frac_bits)
    for module in block.modules():
        if isinstance(module, SpikeDrivenConv):
            module.conv.weight.copy_(torch.round(module.conv.weight * scale) / scale)
            module.bias.copy_(torch.round(module.bias * scale) / scale)
    return block


def describe(block: IntBlock) -> dict[str, Any]:
    """Bit widths the block needs: max |weight|, |bias| codes and the spikes of the last run."""
    convs = block.convs()
    return {"frac_bits": block.frac_bits, "convs": len(convs),
            "max_abs_weight_code": int(max(int(np.abs(c.weight).max()) for c in convs)),
            "max_abs_bias_code": int(max(int(np.abs(c.bias).max()) for c in convs)),
            "binary_spikes": int(sum(c.spikes_seen for c in convs))}
