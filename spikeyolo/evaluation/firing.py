"""Firing rates: recorded by forward hooks during the inference pass, reported as ``firing/<group>`` metrics.

The recorder lives here rather than in ``engine`` because it is the measurement half of one concept whose
report is the scorer below; it needs only :class:`~spikeyolo.nn.neurons.SpikingNeuron` (``nn`` is below
``evaluation``), and :func:`spikeyolo.engine.predict.predict` attaches it around its one pass.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from spikeyolo.nn.detector import SpikeYOLO
from spikeyolo.nn.neurons import SpikingNeuron
from spikeyolo.structures import Predictions, Score

__all__ = ["FiringRecorder", "score_firing"]


class FiringRecorder:
    """Forward hooks on every spiking neuron: mean emitted value per neuron, grouped by layer group.

    Groups: ``backbone`` (layers 1-9), ``neck`` (10-25), ``head`` (26); the firing rate of a
    group is the mean spike count over its neurons divided by D (so it lies in [0, 1]).
    """

    def __init__(self, model: nn.Module) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.handles = []
        head_index = len(model.layers) - 1 if isinstance(model, SpikeYOLO) else -1
        for name, module in model.named_modules():
            if not isinstance(module, SpikingNeuron) or module.max_level <= 0:
                continue
            parts = name.split(".")
            index = int(parts[1]) if len(parts) > 1 and parts[0] == "layers" and parts[1].isdigit() else -1
            group = "head" if index == head_index else ("backbone" if 0 <= index <= 9 else "neck")
            self.handles.append(module.register_forward_hook(self._hook(name, group, module.max_level)))

    def _hook(self, name: str, group: str, max_level: int):
        def hook(_module, _inputs, output):
            value = float(output.detach().float().mean()) / max_level
            for key in (name, f"group/{group}", "group/all"):
                self.sums[key] = self.sums.get(key, 0.0) + value
                self.counts[key] = self.counts.get(key, 0) + 1
        return hook

    def rates(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in self.sums}

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


def score_firing(predictions: Predictions, spec: Any = None, backend: str = "pycocotools") -> Score:
    """``firing/<group>`` of the rates recorded during the pass (none for a model without spiking neurons).

    Args:
        predictions: a pass with ``firing`` recorded (:class:`FiringRecorder`).
        spec, backend: unused (the evaluator signature).
    """
    metrics = {f"firing/{key.split('/', 1)[1]}": value for key, value in predictions.firing.items()
               if key.startswith("group/")}
    return Score(metrics=metrics, result=dict(predictions.firing))
