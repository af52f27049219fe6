"""mAP against simulation length for a converted Spiking-YOLO (seed 001, Fig. 6 / Table 1): what is conversion's.

One simulation per batch runs to the largest T and is read out at every listed T with both
decodings (Vmem and spike count, :meth:`SpikingNetwork.simulate`), so a whole curve costs one run of
T_max steps and one pass over the val loader: :class:`TimestepReadOut` is the read-out of that pass
(:func:`spikeyolo.engine.predict.predict_each` turns its outputs into one set of predictions per
(decoding, T)); every point is scored by the COCO evaluator that scores the ANN and the directly
trained SpikeYOLO (:func:`spikeyolo.engine.validate.validate_timesteps` runs the whole sweep), and
:meth:`TimestepReadOut.sweep` assembles the curve with the energy of each T.

Energy per image at each T (the paper's MAC vs AC comparison): the first conv sees the analog
image once (a constant current: its MACs are done once), every later conv does one addition per
spike entering it per connection: SOPs = sum over convs of (|spikes| entering) x (MACs per input
element of that conv, the dense convention of the energy report). The ANN does every conv's MACs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from spikeyolo.conversion.converter import SpikingConv
from spikeyolo.conversion.spiking_yolo import SpikingYOLO

__all__ = ["TimestepPoint", "TimestepSweep", "TimestepReadOut", "conv_macs"]


@dataclass
class TimestepPoint:
    """One (decoding, T) point of the curve; energies per image in mJ."""

    decoding: str
    time_steps: int
    map50: float
    map50_95: float
    sops: float
    snn_energy_mj: float


@dataclass
class TimestepSweep:
    """The curve for one converted model, with the dense (ANN) cost and firing at T_max.

    ``firing_rates``: mean |spikes| per neuron per step of each hidden layer (Eq. 6); ``channel_rates``:
    per hidden layer, each channel's mean net spike count per neuron per step (|signed count| / T; the
    per-channel spread that layer-wise normalisation cannot see, Fig. 3/4).
    """

    points: list[TimestepPoint]
    dense_macs: float
    first_layer_macs: float
    ann_energy_mj: float
    firing_rates: list[float] = field(default_factory=list)
    channel_rates: list[list[float]] = field(default_factory=list)
    e_mac_pj: float = 4.6
    e_ac_pj: float = 0.9
    images: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def curve(self, decoding: str, key: str = "map50") -> tuple[list[int], list[float]]:
        points = sorted((p for p in self.points if p.decoding == decoding), key=lambda p: p.time_steps)
        return [p.time_steps for p in points], [getattr(p, key) for p in points]


def conv_macs(model: SpikingYOLO, imgsz: int) -> list[tuple[SpikingConv, float, float]]:
    """(conv, MACs per image and step, MACs per input element) of every SpikingConv, from shapes."""
    rows: list[tuple[SpikingConv, float, float]] = []
    shapes: dict[int, tuple[torch.Size, torch.Size]] = {}

    def hook(module, inputs, output):
        shapes[id(module)] = (inputs[0].shape, output.shape)

    convs = [layer for layer in model.network.layers if isinstance(layer, SpikingConv)]
    handles = [layer.conv.register_forward_hook(hook) for layer in convs]
    try:
        device = next(model.parameters()).device
        model.eval()
        model.network(torch.zeros(1, 3, imgsz, imgsz, device=device), 1)
    finally:
        for handle in handles:
            handle.remove()
    for layer in convs:
        in_shape, out_shape = shapes[id(layer.conv)]
        conv = layer.conv
        k = conv.kernel_size[0] * conv.kernel_size[1]
        macs = out_shape[1] * (in_shape[1] // conv.groups) * k * out_shape[2] * out_shape[3]
        rows.append((layer, float(macs), float(macs) / float(in_shape[1] * in_shape[2] * in_shape[3])))
    return rows


class TimestepReadOut:
    """The read-out of the sweep's one pass: per batch one simulation to T_max, decoded at every (decoding, T).

    Called by the inference loop with each batch's network input; returns the decoded outputs per
    ``(decoding, T)`` and accumulates what the energy and firing figures need (input spikes per conv at each T,
    hidden-layer firing rates and per-channel rates at T_max, images seen).

    Args:
        model: a converted SpikingYOLO (on the device of the input).
        timesteps: the T values (one simulation to their maximum per batch).
        decodings: output decodings to read out.
    """

    def __init__(self, model: SpikingYOLO, timesteps: Sequence[int], decodings: Sequence[str] = ("vmem", "spike")):
        self.model = model
        self.marks = sorted({int(t) for t in timesteps})
        self.decodings = tuple(decodings)
        self.imgsz: int | None = None
        self.images = 0
        self.batches = 0
        self.spikes_in: dict[int, list[float] | None] = {t: None for t in self.marks}
        self.hidden_spikes: list[float] | None = None
        self.channel_sums: list[torch.Tensor] | None = None

    def __call__(self, images: torch.Tensor) -> dict[tuple[str, int], torch.Tensor]:
        """Network input [B, C, H, W] -> {(decoding, T): decoded [B, 4 + C, A]} (decoded on the CPU)."""
        self.imgsz = int(images.shape[-1])
        states = self.model.network.simulate(images, self.marks)
        outputs = {}
        for t in self.marks:
            for decoding in self.decodings:
                outputs[(decoding, t)] = self.model.head.decode([states[t][decoding].cpu()])
            counts = states[t]["input_spikes"]
            self.spikes_in[t] = counts if self.spikes_in[t] is None else [a + b for a, b in zip(self.spikes_in[t],
                                                                                                   counts)]
        rates = self.model.firing_rates()
        self.hidden_spikes = rates if self.hidden_spikes is None else [a + b for a, b in zip(self.hidden_spikes, rates)]
        per_channel = [(layer.neuron.spike_count.abs().mean((0, 2, 3)) / max(layer.neuron.time_steps, 1)).cpu()
                       for layer in self.model.network.layers[:-1]
                       if isinstance(layer, SpikingConv) and layer.neuron.spike_count is not None]
        self.channel_sums = per_channel if self.channel_sums is None else [a + b for a, b in
                                                                           zip(self.channel_sums, per_channel)]
        self.images += int(images.shape[0])
        self.batches += 1
        return outputs

    def sweep(self, maps: Mapping[tuple[str, int], tuple[float, float]], e_mac_pj: float = 4.6,
              e_ac_pj: float = 0.9) -> TimestepSweep:
        """The curve from the pass this read-out took part in.

        Args:
            maps: (decoding, T) -> (mAP@50, mAP@50:95) of that point's predictions.
            e_mac_pj, e_ac_pj: energy per MAC and per accumulate (pJ).

        Raises:
            ValueError: the pass saw no image.
        """
        if self.images == 0:
            raise ValueError("the validation loader yielded no images")
        firing = [value / self.batches for value in (self.hidden_spikes or [])]
        channels = [(value / self.batches).tolist() for value in (self.channel_sums or [])]
        macs = conv_macs(self.model, self.imgsz)
        dense = sum(m for _, m, _ in macs)
        first = macs[0][1]
        points = []
        for t in self.marks:
            sops = sum(count * per_input for count, (_, _, per_input) in zip(self.spikes_in[t], macs[1:])) / self.images
            snn_mj = (first * e_mac_pj + sops * e_ac_pj) * 1e-9
            for decoding in self.decodings:
                map50, map50_95 = maps[(decoding, t)]
                points.append(TimestepPoint(decoding, t, map50, map50_95, sops, snn_mj))
        return TimestepSweep(points=points, dense_macs=dense, first_layer_macs=first,
                             ann_energy_mj=dense * e_mac_pj * 1e-9, firing_rates=firing, channel_rates=channels,
                             e_mac_pj=e_mac_pj, e_ac_pj=e_ac_pj, images=self.images)
