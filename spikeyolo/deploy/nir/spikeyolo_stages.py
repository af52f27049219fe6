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

Stages: every conv and neuron of the network is in a graph; what NIR cannot express runs between the graphs, one
step at a time, in the rest of the network (rest.py): nearest upsampling, channel concatenation (NIR sums a node's
inputs, it has no concatenation) and SPPF's max-pooling of real values; after the last step, the head's mean over T
and its decoding. A graph has one Input and one Output, so a stage ends wherever an output is read by more than the
next unit (the skip connections, the head's levels). For the reference layer list: layers 1-4 | 5-6 | 7-8 and
SPPF's first 1x1 conv | SPPF's second 1x1 conv and layer 10 | 12 | 14 | 16 | 18-19 | 20 | 22 | 23 | 25 | the box and
class branch of each head level.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from spikeyolo.deploy.fixed_point import FixedPointStem
from spikeyolo.deploy.nir.graph import StageGraph
from spikeyolo.deploy.spike_driven import SpikeDrivenConv, SpikeDrivenMetaBlock, StemConv
from spikeyolo.errors import ExportError
from spikeyolo.nn.blocks import SPPF, Concat, TimeExpand, Upsample
from spikeyolo.nn.heads import AnchorFreeHead, SpikingAnchorHead
from spikeyolo.nn.neurons import SpikingNeuron

__all__ = ["Stage", "StagePlan", "Unit", "build_stages", "level_offsets", "neuron_coefficients", "plan_stages"]


class Unsupported(Exception):
    """A module NIR cannot express (the message says why)."""


def level_offsets(max_level: int) -> np.ndarray:
    """[D] float32 c_k: one ulp above k + 1/2 for even k (round half to even rounds down there), below for odd k."""
    half = np.arange(max_level, dtype=np.float32) + np.float32(0.5)
    up = np.nextafter(half, np.float32(np.inf))
    down = np.nextafter(half, np.float32(-np.inf))
    return np.where(np.arange(max_level) % 2 == 0, up, down).astype(np.float32)


def neuron_coefficients(neuron: nn.Module) -> tuple[float, float]:
    """(gain, decay) of H[t] = gain * X[t] + decay * (H[t-1] - S[t-1]) from the neuron's ``charge_rule`` (an I-LIF
    of either charge); a neuron without one (no membrane) has no NIR mapping."""
    rule = getattr(neuron, "charge_rule", None)
    if rule is None:
        raise Unsupported(f"{type(neuron).__name__} neuron has no NIR mapping")
    return rule.gain, rule.leak


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
class Unit:
    """One piece of the network: a part NIR expresses (``module``) or glue between stages (``op``).

    Attributes:
        name: the value it produces (``l4``: layer 4's output; ``l9_reduce``, ``l9_pooled``: inside SPPF layer 9;
            ``head_box0`` / ``head_cls0`` / ``head_pred0``: the head's branches at level 0).
        inputs: the values it reads.
        module: the spike-driven module written as NIR nodes (None for glue).
        op: the glue operation on one step's [B, C, H, W] values (concat, upsample, sppf_pool), or None.
    """

    name: str
    inputs: list[str]
    module: nn.Module | None = None
    op: dict | None = None


@dataclass
class Stage:
    """Consecutive NIR units that form one graph: ``input`` -> units -> ``output`` (one Input, one Output)."""

    units: list[Unit]
    input: str

    @property
    def output(self) -> str:
        return self.units[-1].name


@dataclass
class StagePlan:
    """The network as NIR stages and the glue between them.

    Attributes:
        units: every unit in execution order.
        stages: the NIR units grouped into graphs.
        head: per output level, the values whose channel concatenation is the level's raw map (per step).
        exported_layers: layers wholly in the graphs; ``unsupported``: one line per kind of part that is not.
    """

    units: list[Unit]
    stages: list[Stage]
    head: list[list[str]]
    exported_layers: list[int]
    unsupported: list[str] = field(default_factory=list)

    @property
    def outputs(self) -> list[str]:
        return [stage.output for stage in self.stages]

    def schedule(self) -> list[dict]:
        """The per-step order: ``{"stage": k, "input", "output"}`` or a glue op ``{"op", "inputs", "output", ...}``."""
        first = {id(stage.units[0]): number for number, stage in enumerate(self.stages)}
        inside = {id(unit) for stage in self.stages for unit in stage.units}
        items = []
        for unit in self.units:
            if id(unit) in first:
                stage = self.stages[first[id(unit)]]
                items.append({"stage": first[id(unit)], "input": stage.input, "output": stage.output})
            elif id(unit) not in inside:
                items.append({**unit.op, "inputs": unit.inputs, "output": unit.name})
        return items


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


def _units(spike_model: nn.Module) -> tuple[list[Unit], list[list[str]]]:
    layers, sources = list(spike_model.layers), spike_model.sources
    if not isinstance(layers[0], TimeExpand):
        raise ExportError(f"{type(layers[0]).__name__} as layer 0 has no NIR mapping")
    value = {0: "images"}
    units: list[Unit] = []
    for index in range(1, len(layers) - 1):
        layer, inputs = layers[index], [value[s] for s in sources[index]]
        name = f"l{index}"
        try:
            if isinstance(layer, Concat):
                units.append(Unit(name, inputs, op={"op": "concat"}))
            elif isinstance(layer, Upsample):
                units.append(Unit(name, inputs, op={"op": "upsample", "scale_factor": int(layer.scale_factor)}))
            elif isinstance(layer, SPPF):
                _expressible(layer.reduce)
                _expressible(layer.fuse)
                pool = layer.pool
                units += [Unit(f"{name}_reduce", inputs, layer.reduce),
                          Unit(f"{name}_pooled", [f"{name}_reduce"],
                               op={"op": "sppf_pool", "kernel": int(pool.kernel_size), "stride": int(pool.stride),
                                   "padding": int(pool.padding)}),
                          Unit(name, [f"{name}_pooled"], layer.fuse)]
            else:
                _expressible(layer)
                units.append(Unit(name, inputs, layer))
        except Unsupported as err:
            raise ExportError(f"layer {index} {type(layer).__name__}: {err}") from None
        value[index] = name
    head, feats = layers[-1], [value[s] for s in sources[-1]]
    maps: list[list[str]] = []
    if isinstance(head, AnchorFreeHead):
        for level, x in enumerate(feats):
            units += [Unit(f"head_box{level}", [x], head.box_branches[level]),
                      Unit(f"head_cls{level}", [x], head.cls_branches[level])]
            maps.append([f"head_box{level}", f"head_cls{level}"])
    elif isinstance(head, SpikingAnchorHead):
        for level, x in enumerate(feats):
            units.append(Unit(f"head_pred{level}", [x], head.pred[level]))
            maps.append([f"head_pred{level}"])
    else:
        raise ExportError(f"the head {type(head).__name__} has no NIR mapping")
    for unit in units:
        if unit.module is not None:
            try:
                _expressible(unit.module)
            except Unsupported as err:
                raise ExportError(f"{unit.name}: {err}") from None
    return units, maps


def plan_stages(spike_model: nn.Module) -> StagePlan:
    """The stages and glue of a spike-driven SpikeYOLO (see the module docstring).

    Consecutive NIR units share a graph while each reads the previous one's output and nothing else reads it.
    """
    units, maps = _units(spike_model)
    readers: dict[str, int] = {}
    for unit in units:
        for name in unit.inputs:
            readers[name] = readers.get(name, 0) + 1
    for level in maps:
        for name in level:
            readers[name] = readers.get(name, 0) + 1
    stages: list[Stage] = []
    previous: Unit | None = None
    for unit in units:
        if unit.module is None:
            previous = unit
            continue
        joins = (previous is not None and previous.module is not None and stages and unit.inputs == [previous.name]
                 and readers.get(previous.name, 0) == 1)
        if joins:
            stages[-1].units.append(unit)
        else:
            stages.append(Stage([unit], unit.inputs[0]))
        previous = unit
    layers = list(spike_model.layers)
    glue = [unit for unit in units if unit.module is None]
    whole = {int(u.name[1:]) for u in units if u.module is not None and re.fullmatch(r"l\d+", u.name)}
    whole -= {int(u.name[1:].split("_")[0]) for u in glue if u.name.endswith("_pooled")}
    unsupported = []
    for kind, reason in ((Upsample, unsupported_reason(Upsample())), (Concat, "channel concatenation (NIR sums the inputs of a node)")):
        found = [i for i, layer in enumerate(layers) if isinstance(layer, kind)]
        if found:
            unsupported.append(f"layers {', '.join(map(str, found))} {kind.__name__}: {reason}; runs between the stages")
    for index, layer in enumerate(layers):
        if isinstance(layer, SPPF):
            unsupported.append(f"layer {index} SPPF: its max-pooling of real values has no NIR node (NIR has sum and "
                               "average pooling only); runs between the stages, its two 1x1 convs are in the graphs")
    unsupported.append(f"layer {len(layers) - 1} {type(layers[-1]).__name__}: its convs are in the graphs; the mean "
                       "over T, the DFL softmax and the box decoding are the rest of the network")
    return StagePlan(units, stages, maps, [0, *sorted(whole)], unsupported)


class _Walker:
    """Adds the nodes of one stage: modules in, lists of terms (node names summing to a real tensor) out."""

    def __init__(self, graph: StageGraph, shapes: dict[int, tuple[int, ...]]) -> None:
        self.graph = graph
        self.shapes = shapes

    def neuron(self, label: str, neuron: SpikingNeuron, shape: tuple[int, ...], terms: list[str]) -> str:
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


def record_shapes(model: nn.Module, plan: StagePlan, imgsz: int) -> tuple[dict[int, tuple], dict[str, tuple]]:
    """(id(conv) -> [C, H, W] of its input, value name -> [C, H, W]) from one forward at the export size."""
    shapes: dict[int, tuple[int, ...]] = {}
    values: dict[str, tuple[int, ...]] = {"images": (model.in_chs, imgsz, imgsz)}
    handles = [m.register_forward_pre_hook(lambda m, args: shapes.__setitem__(id(m), tuple(args[0].shape[1:])))
               for m in model.modules() if isinstance(m, nn.Conv2d)]

    def keep(name):
        return lambda _m, _a, out: values.__setitem__(name, tuple(out.shape[1:]))

    for unit in plan.units:
        if unit.module is not None:
            handles.append(unit.module.register_forward_hook(keep(unit.name)))
        elif unit.op["op"] == "sppf_pool":
            fuse = model.layers[int(unit.name[1:].split("_")[0])].fuse
            handles.append(fuse.register_forward_pre_hook(
                lambda _m, args, name=unit.name: values.__setitem__(name, tuple(args[0].shape[1:]))))
        else:
            handles.append(model.layers[int(unit.name[1:])].register_forward_hook(keep(unit.name)))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, model.in_chs, imgsz, imgsz, dtype=next(model.parameters()).dtype))
    finally:
        for handle in handles:
            handle.remove()
    return shapes, values


def build_stages(spike_model: nn.Module, plan: StagePlan, imgsz: int, groups: str, typed: bool) -> list:
    """One :class:`StageGraph` per stage of ``plan`` (see the module docstring)."""
    shapes, values = record_shapes(spike_model, plan, imgsz)
    graphs = []
    for stage in plan.stages:
        graph = StageGraph(groups=groups, typed=typed)
        walker = _Walker(graph, shapes)
        terms = [graph.input(values[stage.input])]
        for unit in stage.units:
            terms = walker.convert(unit.module, unit.name, terms)
        out_shape = values[stage.output]
        graph.output(out_shape, walker.total(terms, out_shape[0], out_shape[1:]))
        graphs.append(graph)
    return graphs


def stem_levels(spike_model: nn.Module) -> int:
    """The pixel levels the graph's input is in: 255 for a fixed-point stem (it rounds x * 255), else 1."""
    stems = [m for m in spike_model.modules() if isinstance(m, FixedPointStem)]
    return int(stems[0].levels) if stems else 1
