"""Building one NIR stage graph: node names, order, grouped convs, and the memoryless firing node.

Conventions every consumer importer needs (measured with snntorch 1.0.0, norse 1.1.0, sinabs 2.0.3, nirtorch 2.6;
docs/user-guide.md, "NIR"):

- **Names** are ``input``, ``output`` and ``n00012_<what>`` (lower-case letters, digits, ``_``): no dots (torch
  module names), no Python keywords, not starting with a digit (torch.fx).
- **Order.** ``nir.read`` returns the nodes in alphabetical order (HDF5 groups), so the zero-padded index makes
  that order topological. The edges are written sorted by (source, target) index: nirtorch's legacy ``load``
  (norse, sinabs) runs the nodes in depth-first pre-order over this edge order, which is topological because the
  several forward inputs of any node here are all ancestors of one another (a chain of residual terms); the only
  other inputs are recurrent edges (a later node into an earlier one), which every executor reads from the
  previous time step.
- **One Input, one Output** per graph (nirtorch 2.6 loops forever on two Output nodes), and the Output is the
  node the legacy executor runs last (it returns that node's value): recurrent helper nodes are created before
  their source's other children.
- **Several inputs to a node are summed** by every executor; no Sum node is written.
- **Firing node**: ``nir.LIF`` with ``tau = DT = 1e-4`` (snnTorch's fixed step), ``r = 1``, ``v_leak = 0``,
  ``v_reset = 0``: at a step of DT its membrane is exactly its input (snnTorch: beta = 1 - DT / tau = 0; sinabs:
  exp(-1 / tau) = 0; norse with ``dt=DT``), so it is a memoryless threshold, z = [input > v_threshold]. Membranes
  that must persist are explicit recurrent edges (see spikeyolo_stages / spiking_yolo_stages). ``nir.IF`` is not
  used: snnTorch builds it as Leaky(beta=0.9) returning a tuple, norse resets it to 0, sinabs fires several spikes
  per step and floors its membrane at -v_threshold. (sinabs 2.0.3 builds nir.LIF with multi-spike output too,
  floor(v / v_threshold) spikes: its layers need ``spike_fn = SingleSpike``, docs/user-guide.md.)
- **Types** (``typed``, the default). nir 1.0.8's reader, ``nir.read(path)`` with its type check on (sinabs',
  norse's and nirtorch's importers call it when given a path), types a Conv2d's input as ``[weight.shape[1], H,
  W]``, the channels of ONE group, and a neuron's input and output as the shape of its parameters. So a grouped conv
  never matches the node that feeds it and a neuron with one shared threshold never matches its conv: no compact
  form passes that check. The typed form writes every conv with one group and every neuron's parameters as [C, H,
  W] arrays; each edge then joins equal shapes, and :meth:`StageGraph.to_nir` runs nir's check before anything is
  written. The arrays fix [H, W]: the graphs take the export's ``imgsz`` x ``imgsz`` input only (the Input node
  says so; ``NirBundle.run`` refuses another size). ``typed=False`` writes the compact form (grouped convs, one
  threshold per node), read with ``nir.read(path, type_check=False)`` only; the file sizes of both are in
  docs/user-guide.md, "NIR".
- **Groups** (compact form only). The importers build ``Conv2d(in_channels=weight.shape[1], groups=g)``, which torch accepts only if
  weight.shape[1] is a multiple of g (and nirtorch 2.6's default swaps in and out channels, with the same
  condition). ``groups="compatible"`` (default) writes the largest group count that passes, ``"exact"`` one group
  per channel (the smallest file; valid NIR, but these importers mis-build it), ``"dense"`` one group.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["DT", "GROUP_MODES", "ConvStats", "StageGraph", "regroup", "group_count"]

DT = 1e-4
GROUP_MODES = ("compatible", "exact", "dense")


def group_count(in_per_group: int, natural_groups: int, mode: str) -> int:
    """Groups to write for a conv whose structure has ``natural_groups`` blocks of ``in_per_group`` inputs."""
    if mode == "exact" or natural_groups == 1:
        return natural_groups
    if mode == "dense":
        return 1
    best = 1
    for groups in range(1, natural_groups + 1):
        if natural_groups % groups == 0 and (in_per_group * (natural_groups // groups)) % groups == 0:
            best = groups
    return best


def regroup(weight: np.ndarray, natural_groups: int, groups: int) -> np.ndarray:
    """[Cout, Cin/natural, k, k] -> [Cout, Cin/groups, k, k]: merge natural groups into block-diagonal ones."""
    if groups == natural_groups:
        return weight
    merge = natural_groups // groups
    out_chs, in_per, *kernel = weight.shape
    out_per = out_chs // natural_groups
    merged = np.zeros((out_chs, in_per * merge, *kernel), dtype=weight.dtype)
    for group in range(natural_groups):
        rows = slice(group * out_per, (group + 1) * out_per)
        start = (group % merge) * in_per
        merged[rows, start:start + in_per] = weight[rows]
    return merged


@dataclass
class ConvStats:
    """Weights written against those the convs' structure needs (the zeros of merged or dense groups)."""

    written: int = 0
    needed: int = 0
    merged_convs: int = 0

    @property
    def zero_fraction(self) -> float:
        return 1.0 - self.needed / self.written if self.written else 0.0


@dataclass
class StageGraph:
    """Nodes and edges of one stage while it is built; :meth:`to_nir` makes the ``nir.NIRGraph``.

    Args:
        groups: one of GROUP_MODES.
        typed: per-neuron parameter arrays and dense convs (passes nir.read's type check; the default).
    """

    groups: str = "compatible"
    typed: bool = True
    nodes: dict[str, Any] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)
    stats: ConvStats = field(default_factory=ConvStats)
    order: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import nir  # optional dependency (the export extra)

        self.nir = nir

    def add(self, label: str, node: Any, sources: list[str]) -> str:
        """Add ``node`` fed by ``sources`` (summed); returns its name."""
        if label in ("input", "output"):
            name = label
        else:
            name = f"n{len(self.order):05d}_" + re.sub(r"[^a-z0-9_]", "_", label.lower())
        if name in self.nodes:
            raise RuntimeError(f"duplicate NIR node name {name}")
        self.order[name] = -1 if name == "input" else 10 ** 9 if name == "output" else len(self.order)
        self.nodes[name] = node
        self.edges += [(source, name) for source in sources]
        return name

    def recurrent(self, source: str, target: str) -> None:
        """An edge from a later node back into an earlier one: read at the next time step."""
        self.edges.append((source, target))

    def input(self, shape: tuple[int, ...]) -> str:
        return self.add("input", self.nir.Input(input_type={"input": np.array(shape)}), [])

    def output(self, shape: tuple[int, ...], source: str) -> str:
        return self.add("output", self.nir.Output(output_type={"output": np.array(shape)}), [source])

    def conv(self, label: str, weight: np.ndarray, bias: np.ndarray, natural_groups: int, input_hw: tuple[int, int],
             sources: list[str], stride: int = 1, padding: int = 0) -> str:
        """A Conv2d; ``weight`` [Cout, Cin/natural_groups, k, k] is written with the mode's group count."""
        groups = 1 if self.typed else group_count(weight.shape[1], natural_groups, self.groups)
        written = regroup(np.asarray(weight, dtype=np.float32), natural_groups, groups)
        self.stats.written += written.size
        self.stats.needed += int(weight.size)
        self.stats.merged_convs += int(groups != natural_groups)
        node = self.nir.Conv2d(input_shape=tuple(int(s) for s in input_hw), weight=written,
                               stride=(int(stride), int(stride)), padding=(int(padding), int(padding)),
                               dilation=(1, 1), groups=int(groups), bias=np.asarray(bias, dtype=np.float32))
        return self.add(label, node, sources)

    def fire(self, label: str, shape: tuple[int, ...], threshold: float, sources: list[str]) -> str:
        """A memoryless firing node: z = [input > threshold] at every step (see the module docstring)."""
        size = tuple(int(s) for s in shape) if self.typed else (1,)

        def constant(value: float) -> np.ndarray:  # a read-only view of one value: no memory until written
            return np.broadcast_to(np.float32(value), size)

        node = self.nir.LIF(tau=constant(DT), r=constant(1.0), v_leak=constant(0.0), v_threshold=constant(threshold),
                            v_reset=constant(0.0))
        return self.add(label, node, sources)

    def to_nir(self, metadata: dict[str, Any]) -> Any:
        """The ``nir.NIRGraph``, edges sorted for the legacy executor; a typed graph passes nir's type check here
        (the check ``nir.read`` runs), a compact one is built without it (see the module docstring)."""
        edges = sorted(set(self.edges), key=lambda edge: (self.order[edge[0]], self.order[edge[1]]))
        if len(edges) != len(self.edges):
            raise RuntimeError("duplicate NIR edges")  # snnTorch's importer would reorder them
        return self.nir.NIRGraph(nodes=dict(self.nodes), edges=edges, metadata=metadata, type_check=self.typed)
