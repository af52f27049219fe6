"""Fixed-point deployment form: weights on power-of-two grids, so float32 arithmetic is exact.

Why: a SpikeYOLO neuron rounds its membrane (Eq. 11). Two float32 runtimes (PyTorch's oneDNN,
onnxruntime's MLAS, an accelerator) sum a conv's products in different orders, so a membrane
within ~1e-7 of a .5 boundary rounds differently and one spike flips; the flip propagates, and a
trained full-size model exported to ONNX differs from PyTorch by ~0.2 (docs/benchmarks.md). No
float32 tolerance fixes that. Hardware does not have the problem because it uses fixed-point
weights: this module gives the model that form, in which every sum before a neuron is exact.

Construction (on the folded, re-parameterised model of :func:`to_spike_driven`):

- every conv after a neuron has integer inputs s in {0..D} (binary on the spike-driven path);
  for output channel o, every partial sum of its products and bias is bounded by
  ``B_o = D * sum_i |W_oi| + |b_o|``; weights and bias are rounded to the grid
  ``step_o = 2^(ceil(log2 B_o) - mantissa_bits)``, so every partial sum is an integer multiple of
  step_o below 2^mantissa_bits * step_o in magnitude: exactly representable in float32 (24-bit
  significand) for ``mantissa_bits <= 24``, in any summation order, with or without FMA;
- the stem takes real pixels: the input is snapped to ``round(x * levels)`` (exact integers
  0..255 for 8-bit images; a no-op on 8-bit data) and the stem weights are ``W / levels`` on the
  same kind of grid, so the stem sum is exact too;
- the default ``mantissa_bits = 20 - 2 (T - 1)`` leaves 4 bits of headroom for the residual adds
  of the meta blocks (sums of two exact grid values) and, at T > 1, 2 bits per extra step for the
  membrane recursion with decay 1/4 (a power of two: multiplying by it is exact).

Result: the integer path, the spike-driven path, onnxruntime and float64 all produce the same
spikes bit for bit; only the head's decode (DFL softmax, sigmoid) after the last sum rounds, at
~1e-7. :func:`check_exact` proves it on given images by comparing every neuron's output and the
raw head maps between float32 and float64 runs of the fixed-point model. The price is the weight
rounding itself (a relative step of ~2^-10 to 2^-14 of the largest weight, layer-dependent): the
fixed-point model is a slightly different model than the float one; `spikeyolo-eval
deploy=fixed_point` measures its mAP (demo checkpoint: docs/spike-driven.md).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from spikeyolo.deploy.spike_driven import StemConv, require_spike_levels, spike_driven_convs, to_spike_driven
from spikeyolo.nn.neurons import SpikingNeuron

__all__ = ["FixedPointStem", "ExactnessReport", "auto_mantissa_bits", "to_fixed_point", "check_exact", "grid_quantize"]

FLOAT32_SIGNIFICAND_BITS = 24
_MAX_WIDENINGS = 64  # doublings of a channel's grid step before grid_quantize gives up


def grid_quantize(weight: torch.Tensor, bias: torch.Tensor, input_max: float,
                  mantissa_bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round a conv's weight and bias to per-output-channel power-of-two grids (float64 math).

    Args:
        weight: [Cout, Cin/groups, k, k].
        bias: [Cout].
        input_max: the largest input magnitude (D for spikes, the pixel levels for the stem).
        mantissa_bits: every partial sum is below 2^mantissa_bits grid steps.

    Returns:
        (weight, bias, step [Cout]) in float64; weight and bias are integer multiples of step.

    Raises:
        ValueError: no grid found within 64 widenings (a step wider than every weight rounds them all to
            0, so this is a guard, not an expected outcome).
    """
    w, b = weight.detach().double(), bias.detach().double()
    bound = input_max * w.abs().flatten(1).sum(1) + b.abs()
    exponent = torch.ceil(torch.log2(bound.clamp_min(torch.finfo(torch.float64).tiny))) - mantissa_bits
    step = torch.pow(2.0, exponent)
    for _ in range(_MAX_WIDENINGS):  # rounding can push the bound over a power of two: widen those steps
        wq = torch.round(w / step.view(-1, 1, 1, 1)) * step.view(-1, 1, 1, 1)
        bq = torch.round(b / step) * step
        over = (input_max * wq.abs().flatten(1).sum(1) + bq.abs()) / step >= 2.0 ** mantissa_bits
        if not bool(over.any()):
            return wq, bq, step
        step = torch.where(over, step * 2, step)
    raise ValueError(f"no power-of-two grid with {mantissa_bits} mantissa bits found for a conv with fan-in "
                     f"{w[0].numel()} and inputs up to {input_max:g}")


class FixedPointStem(StemConv):
    """The stem conv on snapped pixels: conv(round(x * levels); W / levels on a grid) + b.

    Build it with :meth:`from_stem`. It stays a :class:`StemConv` (a real-valued MAC conv), so the
    energy counters and every other StemConv consumer treat it as the stem.
    """

    levels: int = 255

    @classmethod
    def from_stem(cls, stem: StemConv, levels: int = 255, mantissa_bits: int = 20) -> "FixedPointStem":
        """Args: stem: the folded stem of the spike-driven model; levels: pixel levels of the input (255 for
        8-bit images, which the loaders divide by 255); mantissa_bits: see :func:`grid_quantize`."""
        weight, bias, _ = grid_quantize(stem.weight / levels, stem.bias, float(levels), mantissa_bits)
        fixed = cls(stem.in_channels, stem.out_channels, stem.kernel_size, stem.stride, stem.padding, bias=True,
                    dtype=stem.weight.dtype, device=stem.weight.device)
        with torch.no_grad():
            fixed.weight.copy_(weight.to(stem.weight.dtype))
            fixed.bias.copy_(bias.to(stem.weight.dtype))
        fixed.levels = int(levels)
        return fixed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.round(x * float(self.levels)))


def _snap_neurons(model: nn.Module) -> None:
    """Make every neuron's own arithmetic exact (the I-LIF: a decay that is a power of two up to float noise, e.g.
    1 - 1/tau, becomes exactly one)."""
    for module in model.modules():
        if isinstance(module, SpikingNeuron):
            module.snap_for_fixed_point()


def auto_mantissa_bits(model: nn.Module) -> int:
    """20 bits (4 of headroom for residual adds) less 2 per extra time step (membrane recursion, decay 1/4)."""
    return max(8, 20 - 2 * (model.time_steps - 1))


def to_fixed_point(model: nn.Module, mantissa_bits: int | None = None, levels: int = 255,
                   expand: bool = True) -> nn.Module:
    """The spike-driven model of ``model`` with power-of-two weight grids (float32 arithmetic exact).

    Args:
        model: an integer-path SpikeYOLO (not modified).
        mantissa_bits: grid steps per partial-sum bound (<= 24); None: :func:`auto_mantissa_bits`.
        levels: input pixel levels (255: inputs are 8-bit images divided by 255).
        expand: True runs each post-neuron conv on the T x D binary maps (spike-driven path); False on
            the integer spikes directly (the folded integer path). Both are exact, so they agree bit for bit.
    """
    require_spike_levels(model)
    if mantissa_bits is None:
        mantissa_bits = auto_mantissa_bits(model)
    if not 1 <= int(mantissa_bits) <= FLOAT32_SIGNIFICAND_BITS:
        raise ValueError(f"mantissa_bits must be in 1..{FLOAT32_SIGNIFICAND_BITS}, got {mantissa_bits}")
    fixed = to_spike_driven(model)
    with torch.no_grad():
        for _, conv in spike_driven_convs(fixed):
            weight, bias, _ = grid_quantize(conv.conv.weight, conv.bias, float(conv.neuron.max_level), int(mantissa_bits))
            conv.conv.weight.copy_(weight.to(conv.conv.weight.dtype))
            conv.bias.copy_(bias.to(conv.bias.dtype))
            conv.expand = bool(expand)
        for parent in list(fixed.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, StemConv):
                    setattr(parent, name, FixedPointStem.from_stem(child, levels, int(mantissa_bits)))
    _snap_neurons(fixed)
    fixed.fixed_point = {"mantissa_bits": int(mantissa_bits), "levels": int(levels), "expand": bool(expand)}
    return fixed.eval()


@dataclass
class ExactnessReport:
    """float32 vs float64 runs of one fixed-point model on the same images.

    Attributes:
        exact: every neuron output and every raw head map is identical in both precisions.
        spike_mismatches: neuron output elements that differ (0 when exact).
        num_spikes_compared: neuron output elements compared.
        max_abs_diff_maps: max |float32 - float64| over the raw head maps (0.0 when exact).
        max_abs_diff: the same over the decoded detections (boxes in pixels; the decode rounds, ~1e-5).
        unconverted_convs: convs outside the spike-driven units and the stem (their sums are not made exact;
            the DFL decode's fixed conv, which runs after the raw maps, is always listed).
    """

    exact: bool
    spike_mismatches: int
    num_spikes_compared: int
    max_abs_diff_maps: float
    max_abs_diff: float
    unconverted_convs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def check_exact(fixed: nn.Module, images: torch.Tensor) -> ExactnessReport:
    """Run ``fixed`` (from :func:`to_fixed_point`) in float32 and in float64 and compare bit for bit.

    Use 8-bit images (``k / 255``): for other inputs ``round(x * 255)`` can itself differ between the
    two precisions at a .5 boundary, which is the input snapping, not the network.
    """
    outputs = {}
    for dtype in (torch.float32, torch.float64):
        copy_ = copy.deepcopy(fixed).to(dtype).eval()
        spikes: list[torch.Tensor] = []
        hooks = [m.register_forward_hook(lambda _m, _i, out: spikes.append(out.detach().double()))
                 for m in copy_.modules() if isinstance(m, SpikingNeuron)]
        try:
            decoded, maps = copy_(images.to(dtype))
        finally:
            for hook in hooks:
                hook.remove()
        outputs[dtype] = (decoded.double(), [m.double() for m in maps], spikes)
    (d32, m32, s32), (d64, m64, s64) = outputs[torch.float32], outputs[torch.float64]
    mismatches = sum(int((a != b).sum()) for a, b in zip(s32, s64))
    compared = sum(a.numel() for a in s32)
    map_diff = max(float((a - b).abs().max()) for a, b in zip(m32, m64))
    inner = {id(sdc.conv) for _, sdc in spike_driven_convs(fixed)}
    inner |= {id(m) for m in fixed.modules() if isinstance(m, StemConv)}
    unconverted = [name for name, m in fixed.named_modules() if isinstance(m, nn.Conv2d) and id(m) not in inner]
    return ExactnessReport(exact=mismatches == 0 and map_diff == 0.0 and len(s32) == len(s64),
                           spike_mismatches=mismatches, num_spikes_compared=compared,
                           max_abs_diff_maps=map_diff, max_abs_diff=float((d32 - d64).abs().max()),
                           unconverted_convs=unconverted)
