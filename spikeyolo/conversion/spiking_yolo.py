"""Spiking-YOLO: a converted detector that follows the framework's forward contract.

``SpikingYOLO`` wraps a :class:`~spikeyolo.conversion.converter.SpikingNetwork` (the converted
backbone + detection conv) and the ANN's head, which only decodes (anchors, strides). It is
rebuilt from a checkpoint by ``spikeyolo.load_checkpoint``: the stored ``model_config`` is the family
``spiking_yolo`` with the ANN's own description nested in it (:func:`spiking_model_config`), which
:mod:`spikeyolo.models` builds with :func:`build_spiking_yolo`; the normalised weights are then loaded.
"""

from __future__ import annotations

import copy
from functools import partial
from typing import Any, Callable, Iterable

import torch
from torch import nn

from spikeyolo.conversion.converter import SpikingNetwork, ann_units, convert, spiking_network
from spikeyolo.conversion.neurons import ConversionNeuron, IBTNeuron
from spikeyolo.nn.anchor_head import AnchorLoss, anchor_loss
from spikeyolo.nn.protocol import DetectorMixin, Streaming

__all__ = ["SpikingYOLO", "build_spiking_yolo", "convert_detector", "spiking_model_config"]


class SpikingYOLO(DetectorMixin, nn.Module):
    """Converted detector; a :class:`~spikeyolo.nn.protocol.DetectorModel` with T and no D.

    Args:
        network: the spiking network; its output is the head's raw map (one level).
        head: the ANN's head (``decode``, ``stride``, ``num_classes``; its convs are unused).

    Forward: images [B, 3, H, W] in [0, 1]; train mode -> [raw map]; eval -> (decoded, [raw map]).
    ``time_steps`` (settable here; it lives in ``network``) and ``network.decoding`` can be changed between
    forwards. ``max_level`` is None: the signed (IBT) neurons emit +-1 spikes against a threshold, not the
    integer levels D of an I-LIF.
    """

    max_level: None = None

    def __init__(self, network: SpikingNetwork, head: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.head = head
        self.num_classes = int(head.num_classes)

    @property
    def in_chs(self) -> int:
        return int(self.network.layers[0].conv.in_channels)

    @property
    def time_steps(self) -> int:
        """T simulated per forward (``network.time_steps``, the one copy)."""
        return self.network.time_steps

    @time_steps.setter
    def time_steps(self, value: int) -> None:
        if int(value) < 1:
            raise ValueError(f"time_steps must be >= 1, got {value}")
        self.network.time_steps = int(value)

    def forward(self, images: torch.Tensor, time_steps: int | None = None):
        maps = [self.network(images, time_steps)]
        if self.training:
            return maps
        return self.head.decode(maps), maps

    def build_loss(self, **gains: float) -> AnchorLoss:
        """The ANN head's loss (``trainer.loss.anchor_*`` gains) on the spiking maps (validation loss; the
        SNN is not trained)."""
        return anchor_loss(self.head, **gains)

    def streaming(self, enabled: bool = True) -> Streaming:
        """Only ``enabled=False``: each forward simulates T steps from reset neurons and decodes rates over
        them, so a membrane carried to the next forward has no meaning here."""
        if enabled:
            raise NotImplementedError("SpikingYOLO resets its neurons and decodes over each forward's T steps; "
                                      "it has no streaming mode")
        return super().streaming(False)

    def firing_rates(self) -> list[float]:
        return self.network.firing_rates()


def build_spiking_yolo(ann: nn.Module, spiking_neuron: Callable[[], ConversionNeuron] = partial(IBTNeuron),
                       time_steps: int = 500, decoding: str = "vmem", time_chunk: int = 16, norm: str = "channel",
                       percentile: float | None = None, num_classes: int | None = None, neuron=None) -> SpikingYOLO:
    """The (uncalibrated) Spiking-YOLO structure of ``ann``; weights come from a checkpoint.

    Args:
        ann: the ANN detector (built by spikeyolo.models from the nested description).
        spiking_neuron: hidden-neuron factory.
        time_steps, decoding, time_chunk: simulation settings.
        norm, percentile: how it was calibrated (recorded only).
        num_classes: must equal the ANN's when given.
        neuron: the framework neuron factory passed by ``build_model``; ignored.
    """
    del neuron, norm, percentile
    if num_classes is not None and int(num_classes) != ann.num_classes:
        raise ValueError(f"num_classes={num_classes} but the converted ANN has {ann.num_classes}")
    units = ann_units(ann)
    network = spiking_network(units, spiking_neuron, time_steps, decoding, time_chunk)
    return SpikingYOLO(network, copy.deepcopy(ann.head))


def convert_detector(ann: nn.Module, calibration: Iterable[torch.Tensor], norm: str = "channel",
                     spiking_neuron: Callable[[], ConversionNeuron] = partial(IBTNeuron),
                     percentile: float | None = None,
                     time_steps: int = 500, decoding: str = "vmem", time_chunk: int = 16) -> SpikingYOLO:
    """Calibrate and convert an ANN detector (TinyYOLO) into SpikingYOLO (see ``converter.convert``)."""
    network = convert(ann, calibration, norm, spiking_neuron, percentile, time_steps, decoding, time_chunk)
    return SpikingYOLO(network, copy.deepcopy(ann.head))


def spiking_model_config(ann_config: dict[str, Any], spiking_neuron: dict[str, Any], time_steps: int,
                         decoding: str, time_chunk: int, norm: str, percentile: float | None) -> dict[str, Any]:
    """The ``model_config`` of a Spiking-YOLO checkpoint, from the ANN checkpoint's ``model_config``.

    Args:
        ann_config: the ANN's checked ``{"model": {"family": "tiny_yolo", ...}, "neuron": ...}``.
        spiking_neuron: the hidden neuron by name and values (``{"kind": "ibt", "v_threshold": 1.0, "alpha": 0.1}``;
            spikeyolo.models.CONVERSION_NEURONS).
    """
    model = {"family": "spiking_yolo", "ann": dict(ann_config["model"]), "spiking_neuron": dict(spiking_neuron),
             "time_steps": int(time_steps), "decoding": decoding, "time_chunk": int(time_chunk), "norm": norm,
             "percentile": None if percentile is None else float(percentile)}
    neuron = ann_config.get("neuron")
    return {"model": model, "neuron": dict(neuron) if neuron else None}
