"""NIR export of the spike-driven path: the layers NIR can express, and a list of those it cannot.

NIR (the Neuromorphic Intermediate Representation, package ``nir``) describes a network as a
graph of primitives (Input, Output, Conv2d, Threshold, LIF, ...); the edges into a node are
summed. The spike-driven SpikeYOLO (:func:`spikeyolo.deploy.to_spike_driven`) maps onto it, for
T = 1, as follows:

    StemConv (real pixels in)            Conv2d (BN folded into weight and bias)
    I-LIF + thermometer expansion        D Threshold nodes with thresholds k + 0.5 (k = 0..D-1), all
                                         fed by the same membrane H; node k emits bit k of the
                                         thermometer code, 1 iff H > k + 0.5, so the D bits sum to
                                         round(clip(H, 0, D)) (Eq. 11; ties at exactly k + 0.5 aside)
    bias-free conv on the binary maps    one Conv2d fed by the D Threshold nodes: every spike adds
      + bias once per time step          its weights (W * sum_k b_k), the folded bias once
    residual additions (Eq. 2-3)         several edges into the same nodes (summed)

A real-valued tensor of the network is kept as the list of nodes whose outputs sum to it, so a
residual addition adds no node.

Not expressible (the report lists them per model): the I-LIF membrane across T > 1 steps (decay
and soft reset by an integer count have no NIR primitive: NIR's neurons emit binary spikes),
max-pooling (SPPF; NIR has sum and average pooling only), nearest upsampling, channel
concatenation, and the head's mean over T, DFL softmax and box decoding. The export is the
longest run of layers from the input that NIR can express (for the reference layer list: the
backbone up to layer 8, the input of SPPF), ending in an Output node.

Shapes are fixed: every node carries its [C, H, W] at the export image size (NIR type-checks
them), so a Threshold holds a [C, H, W] array and the file grows with imgsz^2 x D. Depthwise convs
are written as dense convs (zero outside their groups; see ``_dense_weight``), which grows the file
with C^2: export at the deployment size and scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spikeyolo.deploy.spike_driven import SpikeDrivenConv, SpikeDrivenMetaBlock, StemConv, to_spike_driven
from spikeyolo.errors import ExportError
from spikeyolo.io import atomic_path
from spikeyolo.nn.blocks import Concat, Upsample
from spikeyolo.nn.detector import SpikeYOLO
from spikeyolo.nn.neurons import ILIF

__all__ = ["NirExportReport", "to_nir", "export_nir", "unsupported_reason"]


class _Unsupported(Exception):
    """A module NIR cannot express (the message says why)."""


@dataclass
class NirExportReport:
    """What a NIR export holds.

    Attributes:
        file: the written .nir file (HDF5), or None when only the graph was built.
        exported_layers: indices of the model layers in the graph (layer 0, the time expansion, is the identity at T=1).
        output_shape: [C, H, W] of the graph's output (the output of the last exported layer).
        unsupported: one line per layer that is not in the graph, with the reason.
        num_nodes, num_edges: size of the graph.
    """

    file: str | None
    exported_layers: list[int]
    output_shape: list[int]
    unsupported: list[str] = field(default_factory=list)
    num_nodes: int = 0
    num_edges: int = 0

    def message(self) -> str:
        """A short human summary: what the graph covers and what NIR cannot express."""
        if self.exported_layers:
            covered = f"layers {self.exported_layers[0]}-{self.exported_layers[-1]}"
        else:
            covered = "no layer"
        lines = [f"NIR graph of {covered} (output {self.output_shape}), {self.num_nodes} nodes, "
                 f"{self.num_edges} edges" + (f" -> {self.file}" if self.file else "")]
        if self.unsupported:
            by_reason: dict[str, list[str]] = {}
            for line in self.unsupported:  # "layer 9 SPPF: reason"
                where, _, reason = line.partition(": ")
                by_reason.setdefault(reason, []).append(where.split()[1])
            lines.append("not in the graph:")
            lines += [f"  {reason}: layer{'s' if len(where) > 1 else ''} {', '.join(where)}"
                      for reason, where in by_reason.items()]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def unsupported_reason(module: nn.Module, is_head: bool = False) -> str:
    """Why NIR cannot express ``module`` (a layer of the spike-driven model)."""
    if is_head:
        return ("detection head: its convs are expressible, but the mean over T, the DFL softmax and the box "
                "decoding are not NIR primitives")
    if isinstance(module, Concat):
        return "channel concatenation has no NIR node"
    if isinstance(module, Upsample):
        return "nearest-neighbour upsampling has no NIR node"
    if any(isinstance(m, nn.MaxPool2d) for m in module.modules()):
        return "max-pooling has no NIR node (NIR has sum and average pooling only)"
    return f"{type(module).__name__} has no NIR mapping here"


class _Builder:
    """Collects NIR nodes and edges while walking the spike-driven model."""

    def __init__(self, shapes: dict[int, tuple[int, ...]], dry_run: bool = False) -> None:
        import nir  # optional dependency (the export extra)

        self.nir = nir
        self.shapes = shapes
        self.dry_run = dry_run
        self.nodes: dict[str, Any] = {}
        self.edges: list[tuple[str, str]] = []

    def add(self, name: str, node: Any, sources: list[str]) -> str:
        if name in self.nodes:
            raise RuntimeError(f"duplicate NIR node name {name}")
        self.nodes[name] = node
        self.edges += [(source, name) for source in sources]
        return name

    def conv(self, name: str, conv: nn.Conv2d, bias: torch.Tensor | None, sources: list[str]) -> str:
        shape = self.shapes.get(id(conv))
        if shape is None:
            raise _Unsupported(f"{name}: conv did not run at the export size")
        if self.dry_run:
            return self.add(name, None, sources)
        weight = _dense_weight(conv)
        bias_np = (bias.detach().double().cpu().numpy() if bias is not None
                   else np.zeros(weight.shape[0])).astype(np.float32)
        node = self.nir.Conv2d(input_shape=tuple(int(s) for s in shape[1:]), weight=weight,
                               stride=tuple(int(s) for s in conv.stride), padding=tuple(int(p) for p in conv.padding),
                               dilation=tuple(int(d) for d in conv.dilation), groups=1, bias=bias_np)
        return self.add(name, node, sources)

    def neuron(self, name: str, neuron: nn.Module, shape: tuple[int, ...], sources: list[str]) -> list[str]:
        if not isinstance(neuron, ILIF):
            raise _Unsupported(f"{type(neuron).__name__} neuron has no NIR mapping")
        if neuron.charge != "ilif":
            raise _Unsupported(f"charge={neuron.charge!r} neuron (the reference Gen1 LIF halves its input): "
                               "no NIR mapping")
        if neuron.time_steps != 1:
            raise _Unsupported(f"I-LIF over T = {neuron.time_steps} steps: the membrane recursion (decay, soft "
                               "reset by an integer count) has no NIR primitive; export a T = 1 model")
        names = []
        for level in range(neuron.max_level):
            node = None if self.dry_run else self.nir.Threshold(
                threshold=np.full(shape, level + 0.5, dtype=np.float32))
            names.append(self.add(f"{name}.thr{level}", node, sources))
        return names

    def convert(self, module: nn.Module, name: str, terms: list[str]) -> list[str]:
        """Add ``module``; ``terms`` are the nodes summing to its input; returns those of its output."""
        if isinstance(module, StemConv):
            return [self.conv(f"{name}.conv", module, module.bias, terms)]
        if isinstance(module, SpikeDrivenConv):
            shape = self.shapes.get(id(module.conv))
            if shape is None:
                raise _Unsupported(f"{name}: conv did not run at the export size")
            spikes = self.neuron(f"{name}.neuron", module.neuron, tuple(shape), terms)
            return [self.conv(f"{name}.conv", module.conv, module.bias, spikes)]
        if isinstance(module, SpikeDrivenMetaBlock):
            token = self.convert(module.token_mixer, f"{name}.token", terms)
            mixed = terms + token  # Eq. 2: x + SepConv(x)
            channel = self.convert(module.channel_mixer, f"{name}.channel", mixed)
            return mixed + channel  # Eq. 3
        if isinstance(module, nn.Sequential):
            for child_name, child in module.named_children():
                terms = self.convert(child, f"{name}.{child_name}", terms)
            return terms
        raise _Unsupported(unsupported_reason(module))


def _dense_weight(conv: nn.Conv2d) -> np.ndarray:
    """[Cout, Cin, k, k] float32: a grouped (depthwise) conv as a dense one, zero outside its groups.

    nir's type inference reads a Conv2d's input channels from weight.shape[1], which for a grouped
    conv is Cin / groups, so a grouped node cannot pass ``nir.read``'s type check.
    """
    weight = conv.weight.detach().double().cpu().numpy()
    groups = int(conv.groups)
    if groups == 1:
        return weight.astype(np.float32)
    out_chs, in_per_group = weight.shape[:2]
    out_per_group = out_chs // groups
    dense = np.zeros((out_chs, in_per_group * groups, *weight.shape[2:]), dtype=np.float32)
    for group in range(groups):
        rows = slice(group * out_per_group, (group + 1) * out_per_group)
        dense[rows, group * in_per_group:(group + 1) * in_per_group] = weight[rows]
    return dense


def _record_conv_inputs(model: nn.Module, imgsz: int, in_chs: int) -> dict[int, tuple[int, ...]]:
    """id(conv) -> [C, H, W] of its input, from one forward at the export size."""
    shapes: dict[int, tuple[int, ...]] = {}
    handles = []

    def hook(module, inputs):
        x = inputs[0]
        shapes[id(module)] = tuple(int(s) for s in x.shape[1:])

    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_chs, imgsz, imgsz, dtype=next(model.parameters()).dtype))
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def to_nir(spike_model: nn.Module, imgsz: int) -> tuple[Any, NirExportReport]:
    """Build the NIR graph of a spike-driven SpikeYOLO (the longest expressible run of layers).

    Args:
        spike_model: the output of :func:`spikeyolo.deploy.to_spike_driven` (not modified).
        imgsz: square input size; fixes every node's shape.

    Returns:
        (nir.NIRGraph, report without ``file``).
    """
    import nir  # optional dependency (the export extra)

    layers = list(spike_model.layers)
    sources = spike_model.sources
    in_chs = spike_model.in_chs
    shapes = _record_conv_inputs(spike_model, imgsz, in_chs)
    builder = _Builder(shapes)
    builder.add("input", nir.Input(input_type={"input": np.array([in_chs, imgsz, imgsz])}), [])
    terms = ["input"]
    exported: list[int] = []
    unsupported: list[str] = []
    last_shape = [in_chs, imgsz, imgsz]
    stop_at = len(layers)
    time_steps = spike_model.time_steps
    for index, layer in enumerate(layers):
        is_head = index == len(layers) - 1
        if index == 0:
            if time_steps != 1:
                unsupported.append(f"layer 0 {type(layer).__name__}: T = {time_steps}; the I-LIF membrane across "
                                   "time steps has no NIR primitive (export a T = 1 model)")
                stop_at = 1
                break
            exported.append(0)  # the time expansion is the identity at T = 1
            continue
        if sources[index] != [index - 1] or is_head:
            reason = unsupported_reason(layer, is_head)
            unsupported.append(f"layer {index} {type(layer).__name__}: {reason}")
            stop_at = index + 1
            break
        try:
            _Builder(shapes, dry_run=True).convert(layer, f"l{index}", terms)
        except _Unsupported as err:
            unsupported.append(f"layer {index} {type(layer).__name__}: {err}")
            stop_at = index + 1
            break
        terms = builder.convert(layer, f"l{index}", terms)
        exported.append(index)
        last_shape = _output_shape(builder, terms, last_shape)
    for index in range(stop_at, len(layers)):
        layer = layers[index]
        is_head = index == len(layers) - 1
        if sources[index] == [index - 1] and not is_head:
            try:
                _Builder(shapes, dry_run=True).convert(layer, f"l{index}", ["x"])
                unsupported.append(f"layer {index} {type(layer).__name__}: expressible, but its input is not exported")
                continue
            except _Unsupported as err:
                unsupported.append(f"layer {index} {type(layer).__name__}: {err}")
                continue
        unsupported.append(f"layer {index} {type(layer).__name__}: {unsupported_reason(layer, is_head)}")
    if len(terms) > 1:  # one summing node before Output (nirtorch reads a single edge into Output)
        terms = [builder.add("sum", nir.Scale(scale=np.ones(last_shape, dtype=np.float32)), terms)]
    builder.add("output", nir.Output(output_type={"output": np.array(last_shape)}), terms)
    graph = nir.NIRGraph(nodes=builder.nodes, edges=builder.edges,
                         metadata={"producer": "spikeyolo", "imgsz": int(imgsz),
                                   "max_level": spike_model.max_level,
                                   "time_steps": time_steps, "exported_layers": list(exported)})
    report = NirExportReport(file=None, exported_layers=exported, output_shape=[int(s) for s in last_shape],
                             unsupported=unsupported, num_nodes=len(graph.nodes), num_edges=len(graph.edges))
    return graph, report


def _output_shape(builder: _Builder, terms: list[str], fallback: list[int]) -> list[int]:
    node = builder.nodes.get(terms[-1])
    output = getattr(node, "output_type", None) or {}
    shape = output.get("output")
    return [int(s) for s in shape] if shape is not None else fallback


def export_nir(model: nn.Module, file: str | Path, imgsz: int, spike_driven: bool = False) -> NirExportReport:
    """Write the NIR graph of ``model``'s spike-driven path to ``file`` (HDF5, ``nir.read`` loads it).

    Args:
        model: an integer-path SpikeYOLO (converted here) or, with ``spike_driven=True``, an already
            converted one. Not modified.
        file: the .nir file.
        imgsz: square input size (a multiple of the largest stride).
    """
    import nir  # optional dependency (the export extra)

    if not isinstance(model, SpikeYOLO):
        raise ExportError(f"NIR export covers SpikeYOLO models (a layer list with I-LIF neurons), not "
                          f"{type(model).__name__}; use format=onnx")
    spike_model = model if spike_driven else to_spike_driven(model.float())
    graph, report = to_nir(spike_model, imgsz)
    file = Path(file)
    with atomic_path(file) as tmp:
        nir.write(str(tmp), graph)
    report.file = str(file)
    return report
