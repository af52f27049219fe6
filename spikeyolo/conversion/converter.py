"""ANN-to-SNN conversion of a leaky-ReLU conv chain (Tiny YOLO) into Spiking-YOLO.

Steps (seed 001, section "Proposed methods"):

1. Flatten the ANN into *units*: ``ConvUnit`` = conv with its BatchNorm folded in, then
   leaky-ReLU (slope alpha) / ReLU (alpha 0) / nothing (the linear output layer), and
   ``PoolUnit`` = optional padding + max-pooling.
2. Calibrate: run the units on training images and take lambda per layer or per channel
   (normalize.py, Eq. 4/5); rescale the weights so activations fit in [-1, 1] * Vth.
3. Replace every activation by a spiking neuron (IBT Eq. 7 by default; the symmetric signed
   neuron or the plain IF neuron as baselines), reset by subtraction.
4. Max-pooling becomes the gated spiking max-pool of Rueckauer et al. 2017, which the paper
   follows: each pooling window passes on, at every step, the spike of the input neuron with
   the largest accumulated (signed) spike count so far. Its rate tends to the max of the input
   rates, i.e. to the ANN's max-pool of the normalised activations.
5. Simulate T steps: the image is a constant analog current into the first conv (no input
   spike coding); the output layer's neuron is the symmetric signed neuron with Vth = 1 whose
   state is decoded as ``vmem`` (accumulated membrane / T, seed 001's Vmem decoding) or
   ``spike`` (spike count * Vth / T; the remainder is lost), then multiplied back by the output
   layer's lambda.

Shapes: inside the simulation tensors are [t, B, C, H, W] for a chunk of t steps.
"""

from __future__ import annotations

import copy
import logging
from functools import partial
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from spikeyolo.conversion.neurons import ConversionNeuron, IBTNeuron, SignedNeuron
from spikeyolo.conversion.normalize import activation_scales, fold_batchnorm, normalize_units

log = logging.getLogger(__name__)

__all__ = ["ConvUnit", "PoolUnit", "ann_units", "SpikingConv", "SpikingMaxPool", "SpikingNetwork", "convert",
           "DECODINGS"]

DECODINGS = ("vmem", "spike")
NeuronFactory = Callable[[], ConversionNeuron]
_PAD_TYPES = (nn.ZeroPad2d, nn.ConstantPad2d, nn.ReplicationPad2d, nn.ReflectionPad2d)
_SKIP_TYPES = (nn.Identity, nn.Dropout, nn.Dropout2d)


class ConvUnit(nn.Module):
    """Analog unit: conv (BN folded, with bias), then leaky-ReLU(negative_slope) or nothing.

    Args:
        conv: the folded conv.
        negative_slope: leaky slope alpha (0 = ReLU), or None for a linear (output) layer.
    """

    def __init__(self, conv: nn.Conv2d, negative_slope: float | None) -> None:
        super().__init__()
        self.conv = conv
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return out if self.negative_slope is None else F.leaky_relu(out, self.negative_slope)


class PoolUnit(nn.Module):
    """Analog unit: optional padding, then max-pooling."""

    def __init__(self, pool: nn.MaxPool2d, pad: nn.Module | None = None) -> None:
        super().__init__()
        if pool.dilation not in (1, (1, 1)) or pool.ceil_mode:
            raise ValueError("max-pooling with dilation or ceil_mode is not supported by the converter")
        self.pad = pad if pad is not None else nn.Identity()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.pad(x))


def ann_units(model: nn.Module) -> nn.Sequential:
    """Flatten an ANN into folded ConvUnits and PoolUnits (a copy; the model is not changed).

    The model either has ``conversion_layers()`` (an ordered module list, as TinyYOLO does) or is
    read as its leaf modules in registration order. Accepted leaves: Conv2d, BatchNorm2d (after a
    conv), LeakyReLU / ReLU, MaxPool2d with padding modules before it, Identity / Dropout. The last
    conv must have no activation (the linear detection layer).

    Raises:
        TypeError: a module the converter cannot map (named in the message).
    """
    layers = list(model.conversion_layers()) if hasattr(model, "conversion_layers") else [
        m for m in model.modules() if not list(m.children())]
    units: list[nn.Module] = []
    conv, bn, pad = None, None, None

    def close_conv(slope: float | None) -> None:
        nonlocal conv, bn
        units.append(ConvUnit(fold_batchnorm(copy.deepcopy(conv), copy.deepcopy(bn)), slope))
        conv, bn = None, None

    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            if conv is not None:
                close_conv(None)
            conv = layer
        elif isinstance(layer, nn.BatchNorm2d):
            if conv is None or bn is not None:
                raise TypeError("BatchNorm2d must directly follow a Conv2d for BN folding")
            bn = layer
        elif isinstance(layer, (nn.LeakyReLU, nn.ReLU)):
            if conv is None:
                raise TypeError(f"{type(layer).__name__} must follow a Conv2d (+ BatchNorm2d)")
            close_conv(float(layer.negative_slope) if isinstance(layer, nn.LeakyReLU) else 0.0)
        elif isinstance(layer, _PAD_TYPES):
            if conv is not None:
                close_conv(None)
            pad = copy.deepcopy(layer)
        elif isinstance(layer, nn.MaxPool2d):
            if conv is not None:
                close_conv(None)
            units.append(PoolUnit(copy.deepcopy(layer), pad))
            pad = None
        elif isinstance(layer, _SKIP_TYPES):
            continue
        else:
            raise TypeError(f"cannot convert {type(layer).__name__}: the converter maps Conv2d, BatchNorm2d, "
                            "LeakyReLU/ReLU, padding and MaxPool2d")
    if conv is not None:
        close_conv(None)
    if pad is not None:
        raise TypeError("a padding module must be followed by MaxPool2d")
    conv_units = [u for u in units if isinstance(u, ConvUnit)]
    if not conv_units or not isinstance(units[-1], ConvUnit) or units[-1].negative_slope is not None:
        raise TypeError("the network must end in a conv without activation (the linear output layer)")
    if any(u.negative_slope is None for u in conv_units[:-1]):
        raise TypeError("two convs in a row without activation: fold them before converting")
    return nn.Sequential(*units)


class SpikingConv(nn.Module):
    """conv (normalised weights) -> spiking neuron, over a chunk of steps.

    Args:
        conv: the normalised conv.
        neuron: its neuron.
    """

    def __init__(self, conv: nn.Conv2d, neuron: ConversionNeuron) -> None:
        super().__init__()
        self.conv = conv
        self.neuron = neuron

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        steps, batch = x_seq.shape[:2]
        current = self.conv(x_seq.flatten(0, 1))  # [t, B, C, H, W] -> [t*B, C', H', W']
        return self.neuron(current.view(steps, batch, *current.shape[1:]))  # -> [t, B, C', H', W']


class SpikingMaxPool(nn.Module):
    """Gated spiking max-pool (Rueckauer et al. 2017): pass the spike of the window's input neuron
    with the largest accumulated signed spike count (first one on ties).

    Args:
        pool: the ANN's MaxPool2d (kernel, stride, padding).
        pad: padding module applied before pooling (to counts and spikes alike), or None.
    """

    def __init__(self, pool: nn.MaxPool2d, pad: nn.Module | None = None) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(pool.kernel_size, pool.stride, pool.padding, return_indices=True)
        self.pad = pad if pad is not None else nn.Identity()
        self.count: torch.Tensor | None = None

    def reset(self) -> None:
        self.count = None

    def forward(self, s_seq: torch.Tensor) -> torch.Tensor:
        steps, batch = s_seq.shape[:2]
        if self.count is None or self.count.shape != s_seq.shape[1:]:
            self.count = torch.zeros_like(s_seq[0])
        counts = self.count.unsqueeze(0) + s_seq.cumsum(0)  # [t, B, C, H, W] counts including step t
        self.count = counts[-1]
        counts = self.pad(counts.flatten(0, 1))            # [t*B, C, Hp, Wp]
        spikes = self.pad(s_seq.flatten(0, 1))
        # MaxPool2d's own padding (-inf) never wins; its indices point into the unpadded counts
        _, index = self.pool(counts)                       # [t*B, C, H', W'] flat indices into Hp*Wp
        out = spikes.flatten(2).gather(2, index.flatten(2)).view_as(index)
        return out.view(steps, batch, *out.shape[1:])      # [t*B, C, H', W'] -> [t, B, C, H', W']


class SpikingNetwork(nn.Module):
    """The converted chain: SpikingConv / SpikingMaxPool layers; the last SpikingConv is the output layer.

    Args:
        layers: the spiking layers in order (the first is a SpikingConv fed with the analog image).
        output_scale: [C_out] lambda of the output layer (decoded rates are multiplied by it).
        time_steps: T simulated per forward.
        decoding: ``vmem`` or ``spike``.
        time_chunk: steps pushed through the whole chain at once (memory vs. speed; results identical).
    """

    def __init__(self, layers: list[nn.Module], output_scale: torch.Tensor, time_steps: int = 500,
                 decoding: str = "vmem", time_chunk: int = 16) -> None:
        super().__init__()
        if not layers or not isinstance(layers[0], SpikingConv) or not isinstance(layers[-1], SpikingConv):
            raise ValueError("a spiking network starts and ends with a SpikingConv")
        self.layers = nn.ModuleList(layers)
        self.register_buffer("output_scale", output_scale.detach().clone().float())
        self.time_steps = int(time_steps)
        self.decoding = decoding
        self.time_chunk = int(time_chunk)
        self._check()

    def _check(self) -> None:
        if self.time_steps < 1:
            raise ValueError(f"time_steps must be >= 1, got {self.time_steps}")
        if self.decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {DECODINGS}, got {self.decoding!r}")
        if self.time_chunk < 1:
            raise ValueError(f"time_chunk must be >= 1, got {self.time_chunk}")

    @property
    def output_neuron(self) -> ConversionNeuron:
        return self.layers[-1].neuron

    def reset(self) -> None:
        """Reset every neuron and pool (the one reset place; called at the start of each forward)."""
        for module in self.modules():
            if isinstance(module, (ConversionNeuron, SpikingMaxPool)):
                module.reset()

    @torch.no_grad()
    def forward(self, images: torch.Tensor, time_steps: int | None = None, decoding: str | None = None) -> torch.Tensor:
        """Simulate and decode.

        Args:
            images: [B, 3, H, W] analog input (constant current to the first layer).
            time_steps: T (default ``self.time_steps``).
            decoding: ``vmem`` / ``spike`` (default ``self.decoding``).

        Returns:
            [B, C_out, H_out, W_out] the decoded output in the ANN's units.
        """
        time_steps = int(time_steps or self.time_steps)
        decoding = decoding or self.decoding
        if decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {DECODINGS}, got {decoding!r}")
        return self.simulate(images, [time_steps])[time_steps][decoding]

    @torch.no_grad()
    def simulate(self, images: torch.Tensor, marks: Iterable[int]) -> dict[int, dict[str, torch.Tensor]]:
        """One simulation up to max(marks), read out at every mark: the mAP-vs-T curve in one run.

        Decoding at step t reads the state after t steps, so the output at mark t equals a separate
        ``forward(images, t)`` exactly (the simulation is causal; chunks stop at the marks).

        Returns:
            {t: {"vmem": [B, C, H, W], "spike": [B, C, H, W], "input_spikes": [per SpikingConv after the
            first: sum of |spikes| entering it over steps 1..t, whole batch]}}.
        """
        marks = sorted({int(m) for m in marks})
        if not marks or marks[0] < 1:
            raise ValueError(f"time steps must be >= 1, got {marks}")
        self.reset()
        convs = [layer for layer in self.layers[1:] if isinstance(layer, SpikingConv)]
        entering = [0.0] * len(convs)

        def count(index: int):
            def hook(_module, inputs):
                entering[index] += float(inputs[0].abs().sum())
            return hook

        handles = [conv.register_forward_pre_hook(count(i)) for i, conv in enumerate(convs)]
        first = self.layers[0]
        current = first.conv(images)  # [B, C, H, W], the same every step
        results: dict[int, dict[str, torch.Tensor]] = {}
        done = 0
        try:
            for mark in marks:
                while done < mark:
                    steps = min(self.time_chunk, mark - done)
                    x = first.neuron(current.unsqueeze(0).expand(steps, *current.shape))  # [t, B, C, H, W]
                    for layer in self.layers[1:]:
                        x = layer(x)
                    done += steps
                neuron = self.output_neuron
                scale = self.output_scale.view(1, -1, 1, 1)
                results[mark] = {"vmem": neuron.vmem_rate() * scale, "spike": neuron.rate() * scale,
                                 "input_spikes": list(entering)}
        finally:
            for handle in handles:
                handle.remove()
        return results

    def firing_rates(self) -> list[float]:
        """Mean |spikes| per neuron per step of each hidden SpikingConv in the last forward (Eq. 6)."""
        rates = []
        for layer in self.layers[:-1]:
            if isinstance(layer, SpikingConv) and layer.neuron.spike_count is not None:
                neuron = layer.neuron
                rates.append(neuron.num_spikes / (neuron.spike_count.numel() * max(neuron.time_steps, 1)))
        return rates


def _hidden_neuron(factory: NeuronFactory, negative_slope: float) -> ConversionNeuron:
    neuron = factory()
    if not isinstance(neuron, ConversionNeuron):
        raise TypeError(f"neuron factory must build a ConversionNeuron, got {type(neuron).__name__}")
    if isinstance(neuron, IBTNeuron) and abs(neuron.alpha - negative_slope) > 1e-6:
        log.warning("IBT alpha %.4g differs from the ANN's leaky-ReLU slope %.4g", neuron.alpha, negative_slope)
    return neuron


def spiking_network(units: nn.Sequential, neuron: NeuronFactory = IBTNeuron, time_steps: int = 500,
                    decoding: str = "vmem", time_chunk: int = 16) -> SpikingNetwork:
    """The spiking structure of a unit chain (weights copied as they are; no normalisation)."""
    layers: list[nn.Module] = []
    for unit in units:
        if isinstance(unit, ConvUnit):
            out_neuron = (SignedNeuron(1.0) if unit.negative_slope is None
                          else _hidden_neuron(neuron, unit.negative_slope))
            layers.append(SpikingConv(copy.deepcopy(unit.conv), out_neuron))
        else:
            layers.append(SpikingMaxPool(unit.pool, copy.deepcopy(unit.pad)))
    output_chs = layers[-1].conv.out_channels
    return SpikingNetwork(layers, torch.ones(output_chs), time_steps, decoding, time_chunk)


@torch.no_grad()
def convert(model: nn.Module, calibration: Iterable[torch.Tensor], norm: str = "channel",
            neuron: NeuronFactory = partial(IBTNeuron, 1.0, 0.1), percentile: float | None = None,
            time_steps: int = 500, decoding: str = "vmem", time_chunk: int = 16) -> SpikingNetwork:
    """Convert a leaky-ReLU conv net into a calibrated, normalised SpikingNetwork.

    Args:
        model: the ANN (eval mode is used; it is not modified).
        calibration: batches of images [B, 3, H, W] in [0, 1] (training images).
        norm: ``channel`` (Eq. 5) or ``layer`` (Eq. 4).
        neuron: factory of the hidden neurons (IBTNeuron, SignedNeuron, IFNeuron partials).
        percentile: lambda percentile (default 99.9 channel-wise, 100 layer-wise).
        time_steps, decoding, time_chunk: simulation defaults (see :class:`SpikingNetwork`).
    """
    units = ann_units(model).eval()
    scales = activation_scales(units, calibration, norm, percentile)
    snn = spiking_network(units, neuron, time_steps, decoding, time_chunk)
    load_normalised(snn, units, scales)
    return snn


@torch.no_grad()
def load_normalised(snn: SpikingNetwork, units: nn.Sequential, scales: list[torch.Tensor]) -> None:
    """Normalise a copy of ``units`` with ``scales`` (Eq. 5) and put the weights into ``snn``.

    A spike of a hidden neuron stands for its Vth, so the next conv's weights get that gain.
    """
    units = copy.deepcopy(units)
    spiking_convs = [layer for layer in snn.layers if isinstance(layer, SpikingConv)]
    gains = [1.0] + [layer.neuron.v_threshold for layer in spiking_convs[:-1]]
    normalize_units(units, scales, gains)
    for layer, unit in zip(spiking_convs, [u for u in units if isinstance(u, ConvUnit)]):
        layer.conv.load_state_dict(unit.conv.state_dict())
    snn.output_scale.copy_(scales[-1])
