"""mAP against simulation length for a converted Spiking-YOLO (seed 001, Fig. 6 / Table 1).

One simulation per batch runs to the largest T and is read out at every listed T with both
decodings (Vmem and spike count, :meth:`SpikingNetwork.simulate`), so a whole curve costs one run of
T_max steps. Every (decoding, T) point is then scored by the framework's own evaluator
(:func:`spikeyolo.engine.validate.validate`: NMS, COCO protocol, ultralytics protocol), the same
one that scores the ANN and the directly trained SpikeYOLO, by replaying the recorded outputs.

Energy per image at each T (the paper's MAC vs AC comparison): the first conv sees the analog
image once (a constant current: its MACs are done once), every later conv does one addition per
spike entering it per connection: SOPs = sum over convs of (|spikes| entering) x (MACs per input
element of that conv, the dense convention of the energy report). The ANN does every conv's MACs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from spikeyolo.conversion.converter import SpikingConv
from spikeyolo.conversion.spiking_yolo import SpikingYOLO

__all__ = ["TimestepPoint", "TimestepSweep", "conv_macs", "evaluate_timesteps"]


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


class _Replay(nn.Module):
    """Stands in for the model inside ``validate``: returns recorded raw maps in loader order."""

    def __init__(self, head: nn.Module, maps: list[torch.Tensor]) -> None:
        super().__init__()
        self.head = head
        self.maps = list(maps)
        self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)  # dtype/device for validate

    def forward(self, images: torch.Tensor):
        raw = self.maps.pop(0).to(images.device)
        return self.head.decode([raw]), [raw]


@torch.no_grad()
def evaluate_timesteps(model: SpikingYOLO, loader, spec, device: torch.device, timesteps: Sequence[int],
                       decodings: Sequence[str] = ("vmem", "spike"), e_mac_pj: float = 4.6,
                       e_ac_pj: float = 0.9, progress: bool = False, conf: float = 0.001, iou: float = 0.7,
                       max_det: int = 300) -> TimestepSweep:
    """mAP@50 and mAP@50:95 at every T in ``timesteps`` for each decoding, with energy per image.

    Args:
        model: a converted SpikingYOLO (eval mode is used).
        loader: the validation loader of ``spec`` (iterated once to simulate and once per point to score).
        timesteps: the T values (one simulation to their maximum per batch).
        decodings: output decodings to score.
        e_mac_pj, e_ac_pj: energy per MAC and per accumulate (pJ).
        conf, iou, max_det: NMS settings of the scoring (as ``spikeyolo-eval``).
    """
    from spikeyolo.engine.validate import validate
    from spikeyolo.structures import model_input

    marks = sorted({int(t) for t in timesteps})
    model = model.to(device).eval()
    imgsz = None
    recorded: dict[tuple[str, int], list[torch.Tensor]] = {(d, t): [] for d in decodings for t in marks}
    spikes_in = {t: None for t in marks}
    images_seen = 0
    hidden_spikes: list[float] | None = None
    channel_sums: list[torch.Tensor] | None = None
    iterator = loader
    if progress:
        from tqdm import tqdm

        iterator = tqdm(loader, desc="simulate", leave=False)
    for batch in iterator:
        images = model_input(batch["img"], device)
        imgsz = int(images.shape[-1])
        states = model.network.simulate(images, marks)
        for t in marks:
            for decoding in decodings:
                recorded[(decoding, t)].append(states[t][decoding].cpu())
            counts = states[t]["input_spikes"]
            spikes_in[t] = counts if spikes_in[t] is None else [a + b for a, b in zip(spikes_in[t], counts)]
        rates = model.firing_rates()
        hidden_spikes = rates if hidden_spikes is None else [a + b for a, b in zip(hidden_spikes, rates)]
        per_channel = [(layer.neuron.spike_count.abs().mean((0, 2, 3)) / max(layer.neuron.time_steps, 1)).cpu()
                       for layer in model.network.layers[:-1]
                       if isinstance(layer, SpikingConv) and layer.neuron.spike_count is not None]
        channel_sums = per_channel if channel_sums is None else [a + b for a, b in zip(channel_sums, per_channel)]
        images_seen += int(images.shape[0])
    if images_seen == 0:
        raise ValueError("the validation loader yielded no images")
    batches = len(recorded[(decodings[0], marks[0])])
    firing = [value / batches for value in (hidden_spikes or [])]
    channels = [(value / batches).tolist() for value in (channel_sums or [])]

    macs = conv_macs(model, imgsz)
    dense = sum(m for _, m, _ in macs)
    first = macs[0][1]
    points = []
    for t in marks:
        sops = sum(count * per_input for count, (_, _, per_input) in zip(spikes_in[t], macs[1:])) / images_seen
        snn_mj = (first * e_mac_pj + sops * e_ac_pj) * 1e-9
        for decoding in decodings:
            result = validate(_Replay(model.head, recorded[(decoding, t)]), loader, spec, torch.device("cpu"),
                              conf, iou, max_det)
            points.append(TimestepPoint(decoding, t, result.metrics["map50"], result.metrics["map50_95"], sops, snn_mj))
    return TimestepSweep(points=points, dense_macs=dense, first_layer_macs=first, ann_energy_mj=dense * e_mac_pj * 1e-9,
                         firing_rates=firing, channel_rates=channels, e_mac_pj=e_mac_pj, e_ac_pj=e_ac_pj,
                         images=images_seen)
