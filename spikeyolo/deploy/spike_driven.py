"""Spike-driven inference: run a trained integer-path SpikeYOLO on T x D binary time steps.

SpikeYOLO Sec. 3.3 (Eq. 11-15): an I-LIF neuron fires an integer s in {0..D} per step; at
inference each s is sent as D binary spikes on "virtual" time steps. The expansion used here
is the thermometer code of the reference (``expand_tensor_cumulative``, reference section 5):

    sub-step k (0-based, k < D) of original step t is 1  <=>  k < s[t]
    flat time index = t * D + k              (time-major, D consecutive sub-steps per step)
    sum_k b[t * D + k] = s[t]                (lossless for integer s in 0..D)

Every conv that follows a neuron becomes a :class:`SpikeDrivenConv`:

    s      = neuron(x)                       # [T*B, C, H, W], integers in 0..D (membrane over T unchanged)
    b      = thermometer(s)                  # [T*D*B, C, H, W], values in {0, 1}
    y_k    = conv(b; W * bn_scale)           # bias-free conv on all T*D binary maps at once
    y[t]   = sum_k y[t*D + k] + bias         # D partial sums per original step, additive terms ONCE

It is exact because conv is linear: W * s_t = sum_k W * b_{t,k}. Every additive term (conv
bias, BN shift, the constant of a re-parameterised RepConv / SepRepConv) is added once per
original step after the sum, never per sub-step. The receiving neuron sees the same real
value as on the integer path (up to float rounding), so neuron dynamics across T (membrane,
decay) are untouched: the decay acts between original steps only.

The stem (layer 1, real pixels) stays a real-valued multiply-accumulate conv (:class:`StemConv`).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from spikeyolo.deploy.fold import fold_conv_bn, fuse_repconv, fuse_seprepconv
from spikeyolo.errors import DeployError
from spikeyolo.nn.blocks import AllConvBlock, ConvBlock, DownSampling
from spikeyolo.nn.layers import SepConv, SpikeConv, SpikeConvOut
from spikeyolo.nn.neurons import SpikingNeuron

__all__ = ["BinaryCheck", "SpikeDrivenConv", "SpikeDrivenMetaBlock", "StemConv", "thermometer_expand",
           "to_spike_driven", "set_binary_check", "spike_driven_convs", "require_spike_levels"]


def thermometer_expand(spikes: torch.Tensor, time_steps: int, max_level: int) -> torch.Tensor:
    """Integer spikes -> binary virtual time steps (thermometer code, ones first).

    Args:
        spikes: [T*B, C, H, W] integers in {0..D} (time-major).
        time_steps: T.
        max_level: D.

    Returns:
        [T*D*B, C, H, W] in {0, 1}, same dtype; flat time index t*D + k (sub-step k of step t).
    """
    batch = spikes.shape[0] // time_steps
    # [T*B, C, H, W] -> [T, 1, B, C, H, W]
    steps = spikes.reshape(time_steps, 1, batch, *spikes.shape[1:])
    levels = torch.arange(max_level, device=spikes.device, dtype=spikes.dtype).view(1, max_level, 1, 1, 1, 1)
    # [T, D, B, C, H, W] -> [T*D*B, C, H, W]
    return (levels < steps).to(spikes.dtype).reshape(time_steps * max_level * batch, *spikes.shape[1:])


@dataclass
class BinaryCheck:
    """Result of the instrumented check of one spike-driven conv's last forward.

    Attributes:
        binary: every element entering the conv was exactly 0 or 1.
        lossless: the D sub-steps summed back to the neuron's integer output (so it was in {0..D}).
    """

    binary: bool
    lossless: bool

    @property
    def ok(self) -> bool:
        return self.binary and self.lossless


class StemConv(nn.Conv2d):
    """The first layer: a real-valued conv (pixels in, MACs), BN folded into weight and bias."""


class SpikeDrivenConv(nn.Module):
    """neuron -> thermometer expansion -> bias-free conv on T*D binary maps -> sum over D -> + bias.

    Args:
        neuron: the I-LIF neuron of the integer model; T and D are read from it (its ``coding``) at each forward.
        weight: folded conv weight [Cout, Cin/groups, k, k] (BN scale inside).
        bias: [Cout] additive term (conv bias, BN shift, RepConv constant), added once per original step.
        stride, padding, groups: conv geometry.
    """

    def __init__(self, neuron: SpikingNeuron, weight: torch.Tensor, bias: torch.Tensor, stride: int = 1,
                 padding: int = 0, groups: int = 1) -> None:
        super().__init__()
        self.neuron = neuron
        out_chs, in_per_group, kernel, _ = weight.shape
        self.conv = nn.Conv2d(in_per_group * groups, out_chs, kernel, stride, padding, groups=groups, bias=False,
                              dtype=weight.dtype, device=weight.device)
        with torch.no_grad():
            self.conv.weight.copy_(weight)
        self.bias = nn.Parameter(bias.detach().clone().to(weight.dtype))
        self.check_binary = False
        self.last_check: BinaryCheck | None = None
        self.expand = True  # False: conv on the integer spikes (the folded integer path; same sums)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spikes = self.neuron(x)  # [T*B, C, H, W] integers 0..D
        if not self.expand:
            return self.conv(spikes) + self.bias.view(1, -1, 1, 1)
        time_steps, max_level = self.neuron.time_steps, self.neuron.max_level
        binary = thermometer_expand(spikes, time_steps, max_level)  # [T*D*B, C, H, W]
        if self.check_binary:
            summed = binary.view(time_steps, max_level, -1, *binary.shape[1:]).sum(1)
            self.last_check = BinaryCheck(
                binary=bool(((binary == 0) | (binary == 1)).all()),
                lossless=bool(torch.equal(summed.reshape(spikes.shape), spikes)))
        partial = self.conv(binary)  # [T*D*B, Cout, H', W']
        # [T*D*B, Cout, H', W'] -> [T, D, B, Cout, H', W'] -> sum over D -> [T*B, Cout, H', W']
        summed = partial.view(time_steps, max_level, -1, *partial.shape[1:]).sum(1)
        return summed.flatten(0, 1) + self.bias.view(1, -1, 1, 1)


class SpikeDrivenMetaBlock(nn.Module):
    """Meta SNN block with converted mixers (Eq. 2-3): x = x + token(x); out = x + channel(x)."""

    def __init__(self, token_mixer: nn.Module, channel_mixer: nn.Module) -> None:
        super().__init__()
        self.token_mixer = token_mixer
        self.channel_mixer = channel_mixer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token_mixer(x)  # Eq. 2
        return x + self.channel_mixer(x)  # Eq. 3


def _dtype_of(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def _sdc(neuron: nn.Module, folded: tuple[torch.Tensor, torch.Tensor], like: nn.Module, stride: int = 1,
         padding: int = 0, groups: int = 1) -> SpikeDrivenConv:
    dtype = _dtype_of(like)
    weight, bias = folded
    return SpikeDrivenConv(neuron, weight.to(dtype), bias.to(dtype), stride, padding, groups)


def _from_conv(neuron: nn.Module, conv: nn.Conv2d, *bns: nn.BatchNorm2d) -> SpikeDrivenConv:
    return _sdc(neuron, fold_conv_bn(conv, *bns), conv, conv.stride[0], conv.padding[0], conv.groups)


def _convert_downsampling(layer: DownSampling) -> nn.Module:
    if layer.first_layer:
        conv = layer.conv
        weight, bias = fold_conv_bn(conv, layer.bn)
        stem = StemConv(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                        bias=True, dtype=conv.weight.dtype, device=conv.weight.device)
        with torch.no_grad():
            stem.weight.copy_(weight.to(conv.weight.dtype))
            stem.bias.copy_(bias.to(conv.weight.dtype))
        return stem
    return _from_conv(layer.neuron, layer.conv, layer.bn)


def _convert_sepconv(sep: SepConv) -> nn.Module:
    return nn.Sequential(OrderedDict(
        expand=_from_conv(sep.neuron1, sep.pw_expand, sep.bn_expand),
        dw=_from_conv(sep.neuron2, sep.dw, sep.bn_dw),
        project=_sdc(sep.neuron3, fuse_seprepconv(sep.pw_project, sep.bn_project), sep.pw_project.pw,
                     padding=1),
    ))


def _convert_allconvblock(block: AllConvBlock) -> nn.Module:
    channel = nn.Sequential(OrderedDict(mixer1=_convert_spikeconv(block.mixer1),
                                        mixer2=_convert_spikeconv(block.mixer2)))
    return SpikeDrivenMetaBlock(_convert_sepconv(block.token_mixer), channel)


def _convert_convblock(block: ConvBlock) -> nn.Module:
    channel = nn.Sequential(OrderedDict(
        mixer1=_sdc(block.neuron1, fuse_repconv(block.mixer1, block.bn1), block.mixer1.pw_in, padding=1),
        mixer2=_sdc(block.neuron2, fuse_repconv(block.mixer2, block.bn2), block.mixer2.pw_in, padding=1),
    ))
    return SpikeDrivenMetaBlock(_convert_sepconv(block.token_mixer), channel)


def _convert_spikeconv(unit: SpikeConv) -> nn.Module:
    return _from_conv(unit.neuron, unit.conv, unit.bn)


def _convert_spikeconvout(unit: SpikeConvOut) -> nn.Module:
    return _from_conv(unit.neuron, unit.conv)


# most specific first (StandardConv is a SpikeConv)
_CONVERTERS = ((DownSampling, _convert_downsampling), (AllConvBlock, _convert_allconvblock),
               (ConvBlock, _convert_convblock), (SepConv, _convert_sepconv), (SpikeConv, _convert_spikeconv),
               (SpikeConvOut, _convert_spikeconvout))


def _convert(module: nn.Module) -> nn.Module:
    for kind, converter in _CONVERTERS:
        if isinstance(module, kind):
            return converter(module)
    for name, child in list(module.named_children()):
        new = _convert(child)
        if new is not child:
            setattr(module, name, new)
    return module


def to_spike_driven(model: nn.Module) -> nn.Module:
    """A copy of an integer-path SpikeYOLO, in eval mode, whose post-neuron convs run on binary spikes.

    BN is folded into the convs, RepConv / SepRepConv are re-parameterised into one 3x3 conv each,
    and every conv that follows a neuron becomes a :class:`SpikeDrivenConv` (T*D binary steps).
    The stem becomes a :class:`StemConv`. The forward contract is the model's (eval: decoded, maps).

    Args:
        model: a SpikeYOLO (any dtype); it is not modified.
    """
    require_spike_levels(model)
    converted = copy.deepcopy(model).eval()
    with torch.no_grad():
        converted = _convert(converted)
    return converted.eval()


def require_spike_levels(model: nn.Module) -> None:
    """Refuse a model without integer spike levels D (an ANN, the converted Spiking-YOLO): the spike-driven path,
    its fixed-point form and spike counting are SpikeYOLO's.

    Raises:
        DeployError: naming the model and the path it runs on instead.
    """
    if getattr(model, "max_level", None) is None:
        name = type(model).__name__
        raise DeployError(f"{name} has no integer spike levels (D): the spike-driven path, its fixed-point form and "
                          f"spike counting (spikeyolo-energy) are SpikeYOLO's; {name} runs on the integer path "
                          f"(spikeyolo-eval deploy=integer, spikeyolo-export fixed_point=false)")


def spike_driven_convs(model: nn.Module) -> list[tuple[str, SpikeDrivenConv]]:
    """All spike-driven convs of a converted model, with their qualified names, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, SpikeDrivenConv)]


def set_binary_check(model: nn.Module, enabled: bool) -> None:
    """Turn the instrumented binary check of every spike-driven conv on or off."""
    for _, module in spike_driven_convs(model):
        module.check_binary = enabled
        module.last_check = None

