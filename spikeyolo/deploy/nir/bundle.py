"""An exported NIR model read back: its stage graphs, its rest of the network, and the loop that runs them.

    exported = NirBundle.load("model.nir")                   # model.stage0.nir ..., model.rest.pt
    stages = [norse.torch.from_nir(file, dt=DT) for file in exported.files]   # any consumer's importer, on the
    decoded, maps = exported.run(stages, images)             # stage files or the read graphs (exported.graphs)

``images`` are [B, C, H, W] with [C, H, W] = ``exported.input_shape``, the export's square size (typed graphs hold
per-neuron arrays of that size): letterbox pictures to imgsz x imgsz squares, as ``spikeyolo.Detector.from_nir`` does.

``run`` steps the stages and the glue between them in the rest's schedule, one consumer step per time step (the
same image every step, or frame t of an event clip [T, B, C, H, W]), and gives the kept values of every step to
the rest's finish (the head's mean over T and decoding, or the output neuron). A loaded stage is called as ``out, state = stage(x, state)``, which is
how snnTorch's, norse's, sinabs' and nirtorch's modules all step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from spikeyolo.deploy.nir.graph import DT
from spikeyolo.deploy.nir.rest import RestOfNetwork
from spikeyolo.errors import ExportError
from spikeyolo.torchfile import read_torch_zip

__all__ = ["NirBundle", "NirStages", "bundle_paths", "nirtorch_node_map", "sinabs_ready", "DT"]


def bundle_paths(file: str | Path, num_stages: int) -> tuple[list[Path], Path]:
    """(stage files, rest file) of an export to ``file`` (``model.nir`` -> ``model.stage0.nir``, ``model.rest.pt``)."""
    file = Path(file)
    stem = file.with_suffix("") if file.suffix == ".nir" else file
    return ([stem.with_name(f"{stem.name}.stage{k}.nir") for k in range(num_stages)],
            stem.with_name(f"{stem.name}.rest.pt"))


@dataclass
class NirBundle:
    """The stage graphs (``nir.NIRGraph``) and the rest of the network of one export.

    Attributes:
        graphs: the stage graphs, in order.
        rest: the rest of the network.
        meta: ``time_steps`` (consumer steps per input), ``input_levels`` (the graph input is round(images *
            levels) for a fixed-point export, else images), ``input_shape``, ``family``, the stages' outputs.
        files: the stage files (str paths, in order), for importers that read a path themselves.
    """

    graphs: list[Any]
    rest: RestOfNetwork
    meta: dict[str, Any]
    files: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, file: str | Path) -> "NirBundle":
        """Read the export written to ``file`` (the path given to ``export_nir``)."""
        import nir  # optional dependency (the export extra)

        _, rest_file = bundle_paths(file, 0)
        if not rest_file.is_file():
            raise ExportError(f"no NIR export at {file}: {rest_file} is missing")
        payload = read_torch_zip(rest_file, error=ExportError, what="NIR rest file")   # bounded, no code
        if not isinstance(payload, dict) or not isinstance(payload.get("meta"), str) or "program" not in payload:
            raise ExportError(f"{rest_file} is not the rest file of a spikeyolo NIR export")
        meta = json.loads(payload["meta"])
        stage_files, _ = bundle_paths(file, len(meta["stages"]))
        graphs = [nir.read(str(path), type_check=bool(meta["typed"])) for path in stage_files]
        return cls(graphs, RestOfNetwork(payload["program"]), meta, [str(path) for path in stage_files])

    @property
    def time_steps(self) -> int:
        return int(self.meta["time_steps"])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """[C, H, W] of the images the graphs take: the first stage's Input, the export's square imgsz."""
        return tuple(int(s) for s in self.graphs[0].nodes["input"].input_type["input"])

    @property
    def imgsz(self) -> int:
        """The square input size the stages were exported at (``input_shape``'s H = W)."""
        return int(self.input_shape[-1])

    def check_input(self, images: torch.Tensor) -> None:
        """Refuse images whose [C, H, W] is not ``input_shape`` (one line: the graphs' shapes are fixed)."""
        shape = tuple(int(s) for s in images.shape[-3:])
        if images.dim() not in (4, 5) or shape != self.input_shape:
            raise ExportError(f"the NIR stages take images [B, {', '.join(map(str, self.input_shape))}] (the export's "
                              f"imgsz, square), got {list(images.shape)}: letterbox pictures to {self.imgsz}x"
                              f"{self.imgsz} squares (rect=False; NirBundle.detector does) or export at another "
                              "imgsz")

    def stage_input(self, images: torch.Tensor, step: int) -> torch.Tensor:
        """The first stage's input at consumer step ``step``: [B, C, H, W] (images, or frame ``step`` of a clip)."""
        frame = images[step] if images.dim() == 5 else images
        levels = int(self.meta["input_levels"])
        return torch.round(frame * levels) if levels > 1 else frame

    @torch.no_grad()
    def run(self, stages: list[Callable], images: torch.Tensor,
            outputs: list[list[torch.Tensor]] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the loaded stages and the glue between them over the time steps, then the rest of the network.

        Args:
            stages: one loaded module per graph, each called ``out, state = stage(x, state)``.
            images: [B, C, H, W] in [0, 1] (repeated every step) or an event clip [T, B, C, H, W].
            outputs: if a list is given, each stage's outputs per step are appended to it (one list per stage).

        Returns:
            (decoded [B, 4 + num_classes, A], raw maps), the model's eval contract.
        """
        if len(stages) != len(self.graphs):
            raise ExportError(f"{len(self.graphs)} stages exported, {len(stages)} given")
        self.check_input(images)
        collected: list[list[torch.Tensor]] = [[] for _ in stages]
        states: list[Any] = [None] * len(stages)
        kept: list[dict[str, torch.Tensor]] = []
        self.rest.reset()
        for step in range(self.time_steps):
            values = {"images": self.stage_input(images, step).float()}
            for item in self.rest.schedule:
                if "stage" in item:
                    number = item["stage"]
                    values[item["output"]], states[number] = stages[number](values[item["input"]], states[number])
                    collected[number].append(values[item["output"]])
                else:
                    values[item["output"]] = self.rest.glue(item, [values[name] for name in item["inputs"]])
            kept.append({name: values[name] for name in self.rest.kept})
        if outputs is not None:
            outputs.extend(collected)
        return self.rest.finish(kept)

    def module(self, stages: list[Callable]) -> NirStages:
        """The loaded stages and the rest of the network as one module: ``forward(images) -> (decoded, maps)``."""
        return NirStages(self, stages)


class NirStages(nn.Module):
    """Loaded stages run by their bundle (:meth:`NirBundle.run`), with what :class:`spikeyolo.api.Detector` reads
    of a model (``Detector.from_nir``) (``strides``, parameters for the dtype); eval only.

    Args:
        bundle: the export read back; stages: one loaded module per graph (any importer).
    """

    def __init__(self, bundle: NirBundle, stages: list[Callable]) -> None:
        super().__init__()
        self.bundle = bundle
        self.stages = nn.ModuleList(stages)
        self.strides = [int(s) for s in bundle.rest.program["decode"]["strides"]]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.bundle.run(list(self.stages), images)


class _Memoryless(nn.Module):
    """nir.LIF at tau = DT for nirtorch: z = [x > v_threshold] (graph.py); stateless."""

    def __init__(self, threshold: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("threshold", torch.as_tensor(np.asarray(threshold, dtype=np.float32)))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        x = _summed(inputs)
        return (x > self.threshold.to(x.dtype)).to(x.dtype)


class _Conv(nn.Conv2d):
    """A nir.Conv2d with its groups built right (in_channels = weight.shape[1] * groups)."""

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return super().forward(_summed(inputs))


def _summed(inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """nirtorch 2.6 sums a node's inputs; 2.0.2's nir_to_torch passes them as separate arguments."""
    total = inputs[0]
    for more in inputs[1:]:
        total = total + more
    return total


def _conv(node: Any) -> nn.Conv2d:
    weight = torch.as_tensor(np.asarray(node.weight, dtype=np.float32))
    groups = int(node.groups)
    conv = _Conv(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), tuple(int(s) for s in node.stride),
                 tuple(int(p) for p in node.padding), tuple(int(d) for d in node.dilation), groups)
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(torch.as_tensor(np.asarray(node.bias, dtype=np.float32)))
    return conv


def sinabs_ready(graph: Any) -> Any:
    """``graph`` (a read stage) as sinabs 2.0.3's importer takes it; returns it (changed in place).

    sinabs checks a nir.LIF with ``any(node.v_leak) != 0``, which iterates the first axis and so fails on the typed
    [C, H, W] arrays ("truth value of an array ... is ambiguous"); v_leak is all zeros and the layer sinabs builds
    does not read it, so it is flattened to 1-D. The other parameters keep their shape.
    """
    import nir  # optional dependency (the export extra)

    for node in graph.nodes.values():
        if isinstance(node, nir.LIF):
            node.v_leak = np.asarray(node.v_leak).reshape(-1)
    return graph


def nirtorch_node_map() -> dict:
    """The node map for ``nirtorch.nir_to_torch``: nir.LIF at tau = DT as a threshold, Conv2d with its groups."""
    import nir  # optional dependency (the export extra)

    return {nir.LIF: lambda node: _Memoryless(node.v_threshold), nir.Conv2d: _conv}
