"""NIR export: the stage graphs (``.stageK.nir``) and the rest of the network (``.rest.pt``) of a model.

What is in the graphs (docs/user-guide.md, "NIR"):

- SpikeYOLO: every conv and neuron of the spike-driven path (fixed-point weights by default, as the ONNX export),
  in stages; upsampling, concatenation and SPPF's max-pooling run between them, the head's mean over T and its
  decoding after them, in the rest (spikeyolo_stages.py); T >= 1 (one consumer step per time step, the I-LIF
  membrane on recurrent edges), any D (D channels per neuron).
- Spiking-YOLO (converted): every conv with its IF / signed / IBT neuron, one stage per conv; the gated max-pools
  between them, the output neuron and the decoding in the rest (spiking_yolo_stages.py).
- Typed (the default): dense convs and per-neuron parameter arrays, so ``nir.read(path)`` accepts every stage file
  with its type check on; the graphs then take the export's ``imgsz`` x ``imgsz`` input only (graph.py, "Types").
- Refused with one line (:class:`~spikeyolo.errors.ExportError`): an ANN (Tiny YOLO: convert it first), a model
  with a layer that neither NIR nor the rest of the network maps (e.g. the transformer block ablation).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spikeyolo.deploy.fixed_point import to_fixed_point
from spikeyolo.deploy.nir.bundle import bundle_paths
from spikeyolo.deploy.nir.graph import DT, GROUP_MODES, ConvStats
from spikeyolo.deploy.nir.rest import spiking_yolo_program, spikeyolo_program
from spikeyolo.deploy.nir.spiking_yolo_stages import build_spiking_stages, is_converted, spiking_stage_layers
from spikeyolo.deploy.nir.spikeyolo_stages import build_stages, plan_stages, stem_levels
from spikeyolo.deploy.spike_driven import to_spike_driven
from spikeyolo.errors import ExportError
from spikeyolo.io import atomic_path
from spikeyolo.nn.detector import SpikeYOLO

__all__ = ["NirExportReport", "export_nir", "to_nir"]


@dataclass
class NirExportReport:
    """What a NIR export holds.

    Attributes:
        file: the path given (the stage files and the rest file sit beside it; ``NirBundle.load(file)`` reads them).
        files: the stage graphs, in order; ``rest_file``: the rest of the network.
        family: ``spikeyolo`` or ``spiking_yolo``.
        exported_layers: model layers wholly in the graphs (SpikeYOLO: layer indices; Spiking-YOLO: indices into
            ``network.layers``, the convs).
        stage_outputs: what each stage's Output holds (SpikeYOLO: ``l4`` layer 4's output, ``l9_reduce`` SPPF's first
            conv, ``head_box0`` / ``head_cls0`` the head's branches at level 0; Spiking-YOLO: a layer's spikes).
        output_shapes: [C, H, W] of each stage's output.
        unsupported: one line per layer (or kind of layer) not in the graphs, with the reason.
        time_steps, max_level: T (consumer steps per input) and D (channels per neuron; None for Spiking-YOLO).
        input_levels: the graph input is round(images * input_levels) (255, fixed point) or the images (1).
        input_shape: [C, H, W] the first stage's Input declares: the export's square ``imgsz``, the only size the
            graphs take (typed parameter arrays are per neuron; letterbox pictures to squares, not rect shapes).
        groups, typed, fixed_point: the export options; ``grouped_zero_fraction``: share of the written conv
            weights that are zeros because groups were merged (typed: every conv dense; else the ``groups`` mode)
            against the convs' structure.
        num_nodes, num_edges: summed over the stages.
    """

    file: str | None
    files: list[str]
    rest_file: str | None
    family: str
    exported_layers: list[int]
    stage_outputs: list[str]
    output_shapes: list[list[int]]
    unsupported: list[str] = field(default_factory=list)
    time_steps: int = 1
    max_level: int | None = None
    input_levels: int = 1
    input_shape: list[int] = field(default_factory=list)
    groups: str = "compatible"
    typed: bool = True
    fixed_point: bool = False
    grouped_zero_fraction: float = 0.0
    num_nodes: int = 0
    num_edges: int = 0

    def message(self) -> str:
        """A short human summary: the stages, what NIR cannot express, how to load it."""
        lines = [f"NIR ({self.family}, T={self.time_steps}{f', D={self.max_level}' if self.max_level else ''}): "
                 f"{len(self.files)} stage graph(s), {self.num_nodes} nodes, {self.num_edges} edges"]
        lines += [f"  {path}: -> {what} {shape}" for path, what, shape in
                  zip(self.files, self.stage_outputs, self.output_shapes)]
        lines.append(f"  rest of the network: {self.rest_file}")
        if self.grouped_zero_fraction and self.typed:
            lines.append(f"  typed: {self.grouped_zero_fraction:.0%} of the written conv weights are zeros (every conv "
                         "dense, as nir.read's type check needs; typed=False writes grouped convs, read without it)")
        elif self.grouped_zero_fraction:
            lines.append(f"  groups={self.groups}: {self.grouped_zero_fraction:.0%} of the written conv weights are "
                         "zeros (convs written with fewer groups than their structure; groups=exact avoids them)")
        if self.unsupported:
            lines.append("not in the graphs:")
            lines += [f"  {line}" for line in self.unsupported]
        size = "x".join(str(s) for s in self.input_shape[1:])
        lines.append(f"load: spikeyolo.deploy.nir.NirBundle.load({self.file!r}); graph input "
                     + ("round(images * 255)" if self.input_levels > 1 else "images in [0, 1]")
                     + f" {self.input_shape} (pictures letterboxed to {size} squares, not rect shapes); "
                     + ("nir.read(stage file) type-checks; " if self.typed else
                        "nir.read(stage file, type_check=False) (compact: no type check); ")
                     + f"neurons are nir.LIF with tau = dt = {DT:g} (docs/user-guide.md, NIR)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_options(groups: str) -> None:
    if groups not in GROUP_MODES:
        raise ExportError(f"groups must be one of {', '.join(GROUP_MODES)}, got {groups!r}")


def to_nir(model: nn.Module, imgsz: int, groups: str = "compatible", typed: bool = True,
           fixed_point: bool = True, mantissa_bits: int | None = None) -> tuple[list[Any], dict[str, Any], NirExportReport]:
    """The stage graphs (``nir.NIRGraph``), the rest-of-network program and the report (without files).

    Args:
        model: a SpikeYOLO (integer path; converted here) or a converted Spiking-YOLO. Not modified.
        imgsz: square input size; fixes every node's shape (the graphs take imgsz x imgsz pictures only).
        groups: ``compatible`` | ``exact`` | ``dense`` (graph.py): the compact form's convs (``typed=False``).
        typed: per-neuron parameter arrays and dense convs, so ``nir.read(path)`` passes its type check (the
            default); False: the compact form, read with ``type_check=False`` (graph.py, "Types").
        fixed_point: SpikeYOLO only: export :func:`~spikeyolo.deploy.fixed_point.to_fixed_point` (exact in float32
            in every consumer) instead of the float spike-driven path.
        mantissa_bits: fixed-point grid (None: the default for the model's T).
    """
    _check_options(groups)
    if is_converted(model):
        network = model.network
        graphs = build_spiking_stages(network, imgsz, model.in_chs, groups, typed)
        stages = spiking_stage_layers(network)
        program = spiking_yolo_program(network, model.head, stages)
        shapes = [[int(s) for s in graph.nodes["output"].output_type["output"]] for graph in graphs]
        report = NirExportReport(
            None, [], None, "spiking_yolo", [s[0] for s in stages],
            [f"network.layers[{s[0]}] spikes" for s in stages[:-1]] + [f"network.layers[{stages[-1][0]}] current"],
            shapes, ["gated spiking max-pools (network.layers "
                     + ", ".join(str(i) for i, layer in enumerate(network.layers) if not hasattr(layer, "conv"))
                     + "): no NIR node; they run between the stages in the rest of the network",
                     "output neuron and decoding (vmem / spike, anchor boxes): in the rest of the network"],
            time_steps=int(model.time_steps), max_level=None, input_levels=1, groups=groups, typed=typed)
    elif isinstance(model, SpikeYOLO):
        source = model if next(model.parameters()).dtype == torch.float32 else copy.deepcopy(model).float()
        spike_model = to_fixed_point(source, mantissa_bits) if fixed_point else to_spike_driven(source)
        plan = plan_stages(spike_model)
        graphs = build_stages(spike_model, plan, imgsz, groups, typed)
        program = spikeyolo_program(spike_model, plan)
        shapes = [[int(s) for s in graph.nodes["output"].output_type["output"]] for graph in graphs]
        report = NirExportReport(None, [], None, "spikeyolo", plan.exported_layers, plan.outputs, shapes,
                                 plan.unsupported, time_steps=int(spike_model.time_steps),
                                 max_level=int(spike_model.max_level), input_levels=stem_levels(spike_model),
                                 groups=groups, typed=typed, fixed_point=bool(fixed_point))
    else:
        raise ExportError(f"{type(model).__name__} has no spiking neurons to export to NIR: it is an ANN; convert "
                          "it first (spikeyolo-convert) and export the Spiking-YOLO checkpoint, or use format=onnx")
    stats = ConvStats()
    for graph in graphs:
        stats.written += graph.stats.written
        stats.needed += graph.stats.needed
    report.grouped_zero_fraction = round(stats.zero_fraction, 4)
    report.num_nodes = sum(len(graph.nodes) for graph in graphs)
    report.num_edges = sum(len(graph.edges) for graph in graphs)
    report.input_shape = [int(s) for s in graphs[0].nodes["input"].input_type["input"]]
    meta = {"family": report.family, "time_steps": report.time_steps, "input_levels": report.input_levels,
            "input_shape": report.input_shape, "stages": report.stage_outputs, "typed": typed, "dt": DT,
            "names": [str(name) for name in getattr(model, "names", None) or []]}
    nir_graphs = [graph.to_nir({"producer": "spikeyolo", "stage": number, "of": len(graphs),
                                "output": report.stage_outputs[number], "dt": DT})
                  for number, graph in enumerate(graphs)]
    return nir_graphs, {"meta": json.dumps(meta), "program": program}, report


def export_nir(model: nn.Module, file: str | Path, imgsz: int, groups: str = "compatible", typed: bool = True,
               fixed_point: bool = True, mantissa_bits: int | None = None) -> NirExportReport:
    """Write the stage graphs and the rest of the network of ``model`` beside ``file`` (see :func:`to_nir`).

    ``file`` = ``dir/model.nir`` writes ``dir/model.stage0.nir``, ``dir/model.stage1.nir``, ... and
    ``dir/model.rest.pt``; ``NirBundle.load(file)`` reads them back.
    """
    import nir  # optional dependency (the export extra)

    graphs, rest, report = to_nir(model, imgsz, groups, typed, fixed_point, mantissa_bits)
    stage_files, rest_file = bundle_paths(file, len(graphs))
    for graph, path in zip(graphs, stage_files):
        with atomic_path(path) as tmp:
            nir.write(str(tmp), graph)
    with atomic_path(rest_file) as tmp:
        torch.save(rest, tmp)
    report.file, report.files, report.rest_file = str(file), [str(p) for p in stage_files], str(rest_file)
    return report
