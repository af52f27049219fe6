"""Layers of the SpikeYOLO layer list: time expansion, downsampling, meta SNN blocks, SPPF, upsample, concat.

Every class here has ``build(in_chs, scale, neuron, **args) -> (module, out_chs)``, which
derives its channel width from the scale (the YOLOv8 width/depth rules, reference
section 4), so the config only holds the layer list and the true choices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from spikeyolo.nn.layers import NeuronFactory, RepConv, SepConv, SpikeConv
from spikeyolo.nn.neurons import SpikeCoding

__all__ = ["Scale", "TimeExpand", "DownSampling", "StandardConv", "AllConvBlock", "ConvBlock", "SPPF",
           "Upsample", "Concat"]


def make_divisible(value: float, divisor: int) -> int:
    """Smallest multiple of ``divisor`` >= value."""
    return int(math.ceil(value / divisor) * divisor)


@dataclass(frozen=True)
class Scale:
    """YOLOv8 scale multipliers.

    Args:
        depth: depth multiple (repeats).
        width: width multiple (channels).
        max_channels: channel cap before the width multiple.
    """

    depth: float
    width: float
    max_channels: int

    def repeats(self, count: int) -> int:
        """max(round(n * depth), 1) for n > 1 (Python round: half to even)."""
        return max(round(count * self.depth), 1) if count > 1 else count

    def capped(self, chs: int) -> int:
        """min(int(c * width), int(max_channels * width)): StandardConv widths."""
        return min(int(chs * self.width), int(self.max_channels * self.width))


class TimeExpand(nn.Module):
    """Layer 0: put the input on the flat time-major layout [T*B, C, H, W].

    A static image [B, C, H, W] is repeated T times (direct encoding); an event
    clip [T, B, C, H, W] is flattened.

    Args:
        coding: the detector's :class:`~spikeyolo.nn.neurons.SpikeCoding`; T is read from it at each forward.
    """

    def __init__(self, coding: SpikeCoding) -> None:
        super().__init__()
        self.coding = coding

    @property
    def time_steps(self) -> int:
        return self.coding.time_steps

    @classmethod
    def build(cls, in_chs: list[int], scale: Scale, neuron: NeuronFactory, coding: SpikeCoding):
        return cls(coding), in_chs[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            # [B, C, H, W] -> [T*B, C, H, W]
            return x.unsqueeze(0).expand(self.time_steps, *x.shape).reshape(-1, *x.shape[1:])
        if x.dim() == 5:
            if x.shape[0] != self.time_steps:
                raise ValueError(f"input has {x.shape[0]} time steps but the model was built with "
                                 f"time_steps={self.time_steps}")
            # [T, B, C, H, W] -> [T*B, C, H, W]
            return x.flatten(0, 1)
        raise ValueError(f"expected input [B, C, H, W] or [T, B, C, H, W], got shape {tuple(x.shape)}")


class DownSampling(nn.Module):
    """[neuron] -> kxk conv with bias (stride s) -> BN. The first layer has no neuron (real pixels in).

    Args:
        in_chs, out_chs: channels.
        neuron: neuron factory.
        kernel_size, stride, padding: conv geometry.
        first_layer: True for the stem (no neuron before the conv).
    """

    def __init__(self, in_chs: int, out_chs: int, neuron: NeuronFactory, kernel_size: int = 3, stride: int = 2,
                 padding: int = 1, first_layer: bool = False) -> None:
        super().__init__()
        self.first_layer = first_layer
        self.neuron = nn.Identity() if first_layer else neuron()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, bias=True)
        self.bn = nn.BatchNorm2d(out_chs)

    reference_key_map = (("encode_conv.", "conv."), ("encode_bn.", "bn."))

    @classmethod
    def build(cls, in_chs: list[int], scale: Scale, neuron: NeuronFactory, out_chs: int, kernel_size: int = 3,
              stride: int = 2, padding: int = 1, first_layer: bool = False):
        width = int(out_chs * scale.width)
        return cls(in_chs[0], width, neuron, kernel_size, stride, padding, first_layer), width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.neuron(x)))


class StandardConv(SpikeConv):
    """Spiking standard conv (neuron -> conv -> BN) of the neck; width capped by max_channels."""

    @classmethod
    def build(cls, in_chs: list[int], scale: Scale, neuron: NeuronFactory, out_chs: int, kernel_size: int = 1,
              stride: int = 1):
        width = scale.capped(out_chs)
        return cls(in_chs[0], width, neuron, kernel_size, stride), width


class _MetaBlock(nn.Module):
    """Meta SNN block (Eq. 2-3): x = x + SepConv(x); out = x + ChannelMixer(x).

    Subclasses build their channel mixer (C -> hidden -> C) in :meth:`build_channel_mixer`.

    Args:
        chs: channels C.
        neuron: neuron factory.
        mlp_ratio: channel-mixer expansion r (hidden = int(C * r)).
        kernel_size: SepConv depthwise kernel.
        reparam: False puts a neuron inside the SepConv's last stage (Table 5 ablation).
    """

    def __init__(self, chs: int, neuron: NeuronFactory, mlp_ratio: float = 4, kernel_size: int = 7,
                 reparam: bool = True) -> None:
        super().__init__()
        self.token_mixer = SepConv(chs, neuron, kernel_size, reparam=reparam)
        self.build_channel_mixer(chs, int(chs * mlp_ratio), neuron)

    @classmethod
    def build(cls, in_chs: list[int], scale: Scale, neuron: NeuronFactory, mlp_ratio: float = 4,
              kernel_size: int = 7, reparam: bool = True):
        return cls(in_chs[0], neuron, mlp_ratio, kernel_size, reparam), in_chs[0]

    def build_channel_mixer(self, chs: int, hidden: int, neuron: NeuronFactory) -> None:
        raise NotImplementedError

    def channel_mixer(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token_mixer(x)  # Eq. 2
        return x + self.channel_mixer(x)  # Eq. 3


class AllConvBlock(_MetaBlock):
    """SNN-Block-1 (Eq. 5): channel mixer of two standard 3x3 spiking convs, C -> rC -> C (Args: ``_MetaBlock``)."""

    reference_key_map = (("Conv.", "token_mixer."), ("conv1.", "mixer1."), ("conv2.", "mixer2."))

    def build_channel_mixer(self, chs: int, hidden: int, neuron: NeuronFactory) -> None:
        self.mixer1 = SpikeConv(chs, hidden, neuron, 3)
        self.mixer2 = SpikeConv(hidden, chs, neuron, 3)

    def channel_mixer(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixer2(self.mixer1(x))


class ConvBlock(_MetaBlock):
    """SNN-Block-2 (Eq. 6-7): channel mixer of two re-parameterisable convs, C -> rC -> C (Args: ``_MetaBlock``).

    Each RepConv is followed by its own extra BN (two BNs in a row, as in the reference).
    """

    reference_key_map = (("Conv.", "token_mixer."), ("conv1.", "mixer1."), ("conv2.", "mixer2."),
                         ("bn1.", "bn1."), ("bn2.", "bn2."))

    def build_channel_mixer(self, chs: int, hidden: int, neuron: NeuronFactory) -> None:
        self.neuron1 = neuron()
        self.mixer1 = RepConv(chs, hidden)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.neuron2 = neuron()
        self.mixer2 = RepConv(hidden, chs)
        self.bn2 = nn.BatchNorm2d(chs)

    def channel_mixer(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn1(self.mixer1(self.neuron1(x)))
        return self.bn2(self.mixer2(self.neuron2(h)))


class SPPF(nn.Module):
    """Spiking SPPF: 1x1 reduce, three chained 5x5 max-pools on real values, concat, 1x1 fuse.

    Args:
        in_chs, out_chs: channels.
        neuron: neuron factory.
        pool_size: max-pool kernel (5, stride 1).
    """

    def __init__(self, in_chs: int, out_chs: int, neuron: NeuronFactory, pool_size: int = 5) -> None:
        super().__init__()
        hidden = in_chs // 2
        self.reduce = SpikeConv(in_chs, hidden, neuron, 1)
        self.fuse = SpikeConv(hidden * 4, out_chs, neuron, 1)
        self.pool = nn.MaxPool2d(pool_size, stride=1, padding=pool_size // 2)

    reference_key_map = (("cv1.", "reduce."), ("cv2.", "fuse."))

    @classmethod
    def build(cls, in_chs: list[int], scale: Scale, neuron: NeuronFactory, out_chs: int, pool_size: int = 5):
        width = make_divisible(min(out_chs, scale.max_channels) * scale.width, 8)
        return cls(in_chs[0], width, neuron, pool_size), width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.reduce(x)
        y1 = self.pool(a)
        y2 = self.pool(y1)
        y3 = self.pool(y2)
        return self.fuse(torch.cat([a, y1, y2, y3], dim=1))


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling of H and W."""

    def __init__(self, scale_factor: int = 2) -> None:
        super().__init__()
        self.scale_factor = scale_factor

    @classmethod
    def build(cls, in_chs: list[int], scale: Scale, neuron: NeuronFactory, scale_factor: int = 2):
        return cls(scale_factor), in_chs[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale_factor, mode="nearest")


class Concat(nn.Module):
    """Channel concatenation of several earlier outputs."""

    @classmethod
    def build(cls, in_chs: list[int], scale: Scale, neuron: NeuronFactory):
        return cls(), sum(in_chs)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, dim=1)
