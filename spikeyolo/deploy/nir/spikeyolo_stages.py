"""SpikeYOLO's spike-driven path as NIR stages: one consumer time step per original step t, D levels as channels.

The I-LIF (Eq. 11; spikeyolo.nn.neurons) with input currents X[t] summed from several terms:

    H[t] = gain * X[t] + decay * (H[t-1] - S[t-1])        gain 1 (charge ilif) or 1/tau, decay 1 - 1/tau (lif)
    S[t] = round_half_even(clip(H[t], 0, D)) = sum_k b_k[t],  b_k = [S > k]   (the thermometer bits, k < D)

is written as three nodes at T = 1, channel layout [C, D] (channel c, level k -> c*D + k):

    membrane  Conv2d 1x1, groups C, C -> D*C: P_k = gain * (sum of inputs) - c_k, c_k one float32 ulp above
              k + 1/2 for even k and one below for odd k, so P_k > 0 <=> bit k of round-half-even(H) on both sides
              of the comparison (> for NIR, >= for sinabs) wherever H is not that one float
    fire      LIF (tau = DT, memoryless, v_threshold 0): b_k = [P_k > 0], the D binary spikes
    count     Conv2d 1x1, groups C, D*C -> C, weight 1: S = sum_k b_k, which the next conv reads with the model's
              weights and its folded bias once per step: conv(S) = sum_k conv(b_k), the spike-driven identity
              (Eq. 12-15), without D copies of every weight

and for T > 1 the membrane reads a potential node instead, H = gain * (X[t] + carry), carry = (decay / gain) *
(H[t-1] - S[t-1]) from two recurrent nodes (read at the next consumer step; absent, i.e. 0, at the first):

    potential Conv2d 1x1, groups C: H = gain * (sum of inputs)       (the membrane then has weight 1)
    decay     Conv2d 1x1 from potential: (decay / gain) * H          } recurrent edges into potential
    reset     Conv2d 1x1 from count: -(decay / gain) * S             }

Every step is exact in float32 on the fixed-point grids (gain and decay powers of two; docs/spike-driven.md).
The D virtual sub-steps of the spike-driven path are parallel channels, not consumer time steps: the receiving
neuron must integrate all D sub-steps before it fires (that is why the spike-driven path is exact), and a NIR
neuron fires within the step its input arrives.

A real tensor (residual sums, Eq. 2-3) is a list of terms summed by the next node.

Stages: the graph covers the layers from the input up to the first one NIR cannot express (the cut); every output
of a layer before the cut that a later layer reads ends a stage (one Output per graph), e.g. for the reference
layer list layers 0-4 | 5-6 | 7-8 and SPPF's first 1x1 conv, cut at SPPF's max-pooling.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from spikeyolo.deploy.fixed_point import FixedPointStem
from spikeyolo.deploy.nir.graph import StageGraph
from spikeyolo.deploy.spike_driven import SpikeDrivenConv, SpikeDrivenMetaBlock, StemConv
from spikeyolo.nn.blocks import SPPF, Concat, TimeExpand, Upsample
from spikeyolo.nn.neurons import ILIF

__all__ = ["StagePlan", "plan_stages", "build_stages", "neuron_coefficients", "level_offsets"]


class Unsupported(Exception):
    """A module NIR cannot express (the message says why)."""


def level_offsets(max_level: int) -> np.ndarray:
    """[D] float32 c_k: one ulp above k + 1/2 for even k (round half to even rounds down there), below for odd k."""
    half = np.arange(max_level, dtype=np.float32) + np.float32(0.5)
    up = np.nextafter(half, np.float32(np.inf))
    down = np.nextafter(half, np.float32(-np.inf))
    return np.where(np.arange(max_level) % 2 == 0, up, down).astype(np.float32)


def neuron_coefficients(neuron: nn.Module) -> tuple[float, float]:
    """(gain, decay) of H[t] = gain * X[t] + decay * (H[t-1] - S[t-1]) for an I-LIF of either charge."""
    if not isinstance(neuron, ILIF):
        raise Unsupported(f"{type(neuron).__name__} neuron has no NIR mapping")
    if neuron.charge == "lif":
        return 1.0 / neuron.tau, 1.0 - 1.0 / neuron.tau
    return 1.0, neuron.step_decay


def unsupported_reason(module: nn.Module, is_head: bool = False) -> str:
    """Why NIR cannot express ``module`` (a layer of the spike-driven model)."""
    if is_head:
        return "detection head: the mean over T, the DFL softmax and the box decoding are not NIR primitives"
    if isinstance(module, Concat):
        return "channel concatenation of earlier layers: runs in the rest of the network"
    if isinstance(module, Upsample):
        return "nearest-neighbour upsampling has no NIR node"
    if any(isinstance(m, nn.MaxPool2d) for m in module.modules()):
        return "max-pooling of real values has no NIR node (NIR has sum and average pooling only)"
    return f"{type(module).__name__} has no NIR mapping"


@dataclass
class StagePlan:
    """Where the graph stops and how it is split.

    Attributes:
        stages: layer indices of each stage (layer 0, the time expansion, is one consumer step per original step).
        outputs: per stage, what its Output holds: ``"layer N"`` (layer N's output) or ``"layer N reduce"`` (the
            first 1x1 conv of SPPF layer N, the input of its max-pooling).
        cut: index of the first layer not (wholly) in the graph.
        unsupported: one line per layer at and after the cut, with the reason.
    """

    stages: list[list[int]]
    outputs: list[str]
    cut: int
    unsupported: list[str] = field(default_factory=list)

    @property
    def exported_layers(self) -> list[int]:
        return [index for stage in self.stages for index in stage]

    @property
    def sppf_partial(self) -> bool:
        return bool(self.outputs) and self.outputs[-1].endswith("reduce")


def _expressible(module: nn.Module) -> None:
    """Raise Unsupported unless every part of ``module`` has a NIR mapping."""
    if isinstance(module, StemConv):
        return
    if isinstance(module, SpikeDrivenConv):
        neuron_coefficients(module.neuron)
        return
    if isinstance(module, SpikeDrivenMetaBlock):
        _expressible(module.token_mixer)
        _expressible(module.channel_mixer)
        return
    if isinstance(module, nn.Sequential):
        for child in module.children():
            _expressible(child)
        return
    raise Unsupported(unsupported_reason(module))


def plan_stages(spike_model: nn.Module) -> StagePlan:
    """The stages and the cut of a spike-driven SpikeYOLO (see the module docstring)."""
    layers, sources = list(spike_model.layers), spike_model.sources
    cut, reason = len(layers) - 1, None
    for index, layer in enumerate(layers):
        if index == 0:
            if not isinstance(layer, TimeExpand):
                cut, reason = 0, f"{type(layer).__name__} as layer 0 has no NIR mapping"
                break
            continue
        is_head = index == len(layers) - 1
        try:
            if is_head or sources[index] != [index - 1]:
                raise Unsupported(unsupported_reason(layer, is_head))
            _expressible(layer)
        except Unsupported as err:
            cut, reason = index, str(err)
            break
    needed = {s for i in range(cut + 1, len(layers)) for s in sources[i] if s < cut}
    partial = (cut < len(layers) and isinstance(layers[cut], SPPF) and _reduce_expressible(layers[cut])
               and cut - 1 not in needed)
    if not partial:
        needed.add(cut - 1)
    ends = sorted(needed | {cut - 1})
    stages, outputs, start = [], [], 0
    for end in ends:
        if end < start:
            continue
        stages.append(list(range(start, end + 1)))
        outputs.append(f"layer {end} reduce" if partial and end == cut - 1 else f"layer {end}")
        start = end + 1
    if partial:
        outputs[-1] = f"layer {cut} reduce"
    unsupported = [f"layer {cut} {type(layers[cut]).__name__}: {reason}"
                   + (" (its first 1x1 conv is in the graph)" if partial else "")]
    if cut + 1 < len(layers):
        unsupported.append(f"layers {cut + 1}-{len(layers) - 1}: after the cut, in the rest of the network (the "
                           "neck reads layers " + ", ".join(str(s) for s in sorted(needed)) + " from the stages)")
    return StagePlan(stages, outputs, cut, unsupported)


def _reduce_expressible(sppf: nn.Module) -> bool:
    try:
        _expressible(sppf.reduce)
        return True
    except Unsupported:
        return False


class _Walker:
    """Adds the nodes of one stage: modules in, lists of terms (node names summing to a real tensor) out."""

    def __init__(self, graph: StageGraph, shapes: dict[int, tuple[int, ...]]) -> None:
        self.graph = graph
        self.shapes = shapes

    def neuron(self, label: str, neuron: ILIF, shape: tuple[int, ...], terms: list[str]) -> str:
        """The nodes of one I-LIF fed by ``terms``; returns the node holding its spike count S [C, H, W]."""
        chs, height, width = shape
        levels, hw = neuron.max_level, (height, width)
        gain, decay = neuron_coefficients(neuron)
        offsets = -np.tile(level_offsets(levels), chs)
        if neuron.time_steps == 1:
            membrane = self.graph.conv(f"{label}_membrane", np.full((chs * levels, 1, 1, 1), gain), offsets, chs, hw,
                                       terms)
            fire = self.graph.fire(f"{label}_fire", (chs * levels, height, width), 0.0, [membrane])
            return self._count(label, fire, chs, levels, hw)
        potential = self.graph.conv(f"{label}_potential", np.full((chs, 1, 1, 1), gain), np.zeros(chs), chs, hw, terms)
        carry = decay / gain  # potential = gain * (X + carry * (H - S)) = gain * X + decay * (H - S)
        # the recurrent nodes come first among their source's children: nirtorch's legacy executor returns the
        # output of the node it runs last, which must be the Output (graph.py)
        decayed = self.graph.conv(f"{label}_decay", np.full((chs, 1, 1, 1), carry), np.zeros(chs), chs, hw,
                                  [potential])
        membrane = self.graph.conv(f"{label}_membrane", np.ones((chs * levels, 1, 1, 1)), offsets, chs, hw,
                                   [potential])
        fire = self.graph.fire(f"{label}_fire", (chs * levels, height, width), 0.0, [membrane])
        count = self._count(label, fire, chs, levels, hw)
        reset = self.graph.conv(f"{label}_reset", np.full((chs, 1, 1, 1), -carry), np.zeros(chs), chs, hw, [count])
        self.graph.recurrent(decayed, potential)
        self.graph.recurrent(reset, potential)
        return count

    def _count(self, label: str, fire: str, chs: int, levels: int, hw: tuple[int, int]) -> str:
        """S = sum of the D level spikes of each channel (a 1x1 conv, weight 1, groups C): the next conv reads S
        with the model's own weights, conv(S) = sum_k conv(b_k) (the spike-driven identity)."""
        return self.graph.conv(f"{label}_count", np.ones((chs, levels, 1, 1)), np.zeros(chs), chs, hw, [fire])

    def convert(self, module: nn.Module, label: str, terms: list[str]) -> list[str]:
        """Add ``module`` fed by ``terms``; returns the terms of its output."""
        if isinstance(module, StemConv):
            shape = self.shapes[id(module)]
            weight = module.weight.detach().double().numpy()
            return [self.graph.conv(f"{label}_conv", weight, module.bias.detach().double().numpy(), 1, shape[1:],
                                    terms, module.stride[0], module.padding[0])]
        if isinstance(module, SpikeDrivenConv):
            shape = self.shapes[id(module.conv)]
            count = self.neuron(f"{label}_neuron", module.neuron, shape, terms)
            conv = module.conv
            return [self.graph.conv(f"{label}_conv", conv.weight.detach().double().numpy(),
                                    module.bias.detach().double().numpy(), conv.groups, shape[1:], [count],
                                    conv.stride[0], conv.padding[0])]
        if isinstance(module, SpikeDrivenMetaBlock):
            token = self.convert(module.token_mixer, f"{label}_token", terms)
            mixed = terms + token  # Eq. 2: x + SepConv(x)
            return mixed + self.convert(module.channel_mixer, f"{label}_channel", mixed)  # Eq. 3
        if isinstance(module, nn.Sequential):
            for name, child in module.named_children():
                terms = self.convert(child, f"{label}_{name}", terms)
            return terms
        raise Unsupported(unsupported_reason(module))

    def total(self, terms: list[str], chs: int, hw: tuple[int, int]) -> str:
        """One node holding the sum of ``terms`` (an identity 1x1 conv, one group per channel)."""
        if len(terms) == 1:
            return terms[0]
        return self.graph.conv("sum", np.ones((chs, 1, 1, 1)), np.zeros(chs), chs, hw, terms)


def record_conv_inputs(model: nn.Module, imgsz: int, in_chs: int) -> tuple[dict[int, tuple[int, ...]],
                                                                            dict[int, tuple[int, ...]]]:
    """(id(conv) -> [C, H, W] of its input, layer index -> [C, H, W] of its output) from one forward."""
    shapes: dict[int, tuple[int, ...]] = {}
    outputs: dict[int, tuple[int, ...]] = {}
    handles = [m.register_forward_pre_hook(lambda m, args: shapes.__setitem__(id(m), tuple(args[0].shape[1:])))
               for m in model.modules() if isinstance(m, nn.Conv2d)]
    for index, layer in enumerate(model.layers[:-1]):
        handles.append(layer.register_forward_hook(
            lambda _m, _a, out, index=index: outputs.__setitem__(index, tuple(out.shape[1:]))))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_chs, imgsz, imgsz, dtype=next(model.parameters()).dtype))
    finally:
        for handle in handles:
            handle.remove()
    return shapes, outputs


def build_stages(spike_model: nn.Module, plan: StagePlan, imgsz: int, groups: str, typed: bool) -> list:
    """One :class:`StageGraph` per stage of ``plan`` (see the module docstring)."""
    shapes, layer_shapes = record_conv_inputs(spike_model, imgsz, spike_model.in_chs)
    graphs = []
    input_shape: tuple[int, ...] = (spike_model.in_chs, imgsz, imgsz)
    for stage, output in zip(plan.stages, plan.outputs):
        graph = StageGraph(groups=groups, typed=typed)
        walker = _Walker(graph, shapes)
        terms = [graph.input(input_shape)]
        for index in stage:
            if index > 0:
                terms = walker.convert(spike_model.layers[index], f"l{index}", terms)
        out_shape = layer_shapes[stage[-1]] if stage else input_shape
        if output.endswith("reduce"):
            reduce = spike_model.layers[plan.cut].reduce
            terms = walker.convert(reduce, f"l{plan.cut}_reduce", terms)
            out_shape = (reduce.conv.out_channels, *out_shape[1:])
        graph.output(out_shape, walker.total(terms, out_shape[0], out_shape[1:]))
        graphs.append(graph)
        input_shape = out_shape
    return graphs


def stem_levels(spike_model: nn.Module) -> int:
    """The pixel levels the graph's input is in: 255 for a fixed-point stem (it rounds x * 255), else 1."""
    stems = [m for m in spike_model.modules() if isinstance(m, FixedPointStem)]
    return int(stems[0].levels) if stems else 1
