"""Tiny YOLO v2 (darknet ``yolov2-tiny-voc.cfg``): the ANN that Spiking-YOLO converts.

Layout (channels at width_multiple 1):

    conv3x3 16  - maxpool 2/2        conv3x3 256  - maxpool 2/2
    conv3x3 32  - maxpool 2/2        conv3x3 512  - maxpool 2/1 (same size)
    conv3x3 64  - maxpool 2/2        conv3x3 1024
    conv3x3 128 - maxpool 2/2        conv3x3 1024
                                     conv1x1 A*(5+nc), bias, linear (the AnchorHead)

every 3x3 conv is conv (no bias) + BatchNorm + leaky-ReLU(0.1). One output level at stride 32.
The stride-1 max-pool pads one pixel right and bottom by replication, which equals darknet's
pooling that ignores out-of-range pixels. ``conversion_layers()`` lists the leaf modules in
order for :func:`spikeyolo.conversion.convert`.
"""

from __future__ import annotations

import torch
from torch import nn

from spikeyolo.nn.anchor_head import AnchorHead, AnchorLoss, anchor_loss
from spikeyolo.nn.protocol import DetectorMixin

__all__ = ["TinyYOLO", "ConvBNLeaky"]

TINY_YOLO_V2_CHANNELS = (16, 32, 64, 128, 256, 512, 1024, 1024)


class ConvBNLeaky(nn.Module):
    """3x3 conv (no bias) -> BatchNorm -> leaky-ReLU.

    Args:
        in_chs, out_chs: channels.
        negative_slope: leaky slope alpha (0.1 in Tiny YOLO).
    """

    def __init__(self, in_chs: int, out_chs: int, negative_slope: float = 0.1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.LeakyReLU(negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class TinyYOLO(DetectorMixin, nn.Module):
    """Tiny YOLO v2 with an anchor head; a :class:`~spikeyolo.nn.protocol.DetectorModel` without T and D.

    Args:
        num_classes: number of classes.
        anchors: [[w0, h0, ...]] in input pixels (one level).
        channels: the eight conv widths at width_multiple 1.
        width_multiple: channel scale (``max(1, round(c * width_multiple))``).
        negative_slope: leaky-ReLU alpha.
        in_chs: input channels.
        neuron: the framework's neuron factory; accepted and ignored (this is the ANN; Spiking-YOLO
            gets its neurons from the converter).
    """

    time_steps: None = None  # an ANN: no time steps and no spike levels
    max_level: None = None

    def __init__(self, num_classes: int, anchors: list[list[float]],
                 channels: tuple[int, ...] | list[int] = TINY_YOLO_V2_CHANNELS, width_multiple: float = 1.0,
                 negative_slope: float = 0.1, in_chs: int = 3, neuron=None) -> None:
        super().__init__()
        del neuron
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if len(channels) != 8:
            raise ValueError(f"Tiny YOLO v2 has 8 conv widths, got {len(channels)}")
        widths = [max(1, round(c * float(width_multiple))) for c in channels]
        layers: list[nn.Module] = []
        previous = in_chs
        for index, width in enumerate(widths):
            layers.append(ConvBNLeaky(previous, width, negative_slope))
            previous = width
            if index < 5:
                layers.append(nn.MaxPool2d(2, 2))
            elif index == 5:
                layers.append(nn.ReplicationPad2d((0, 1, 0, 1)))  # darknet "same" pooling at stride 1
                layers.append(nn.MaxPool2d(2, 1))
        self.backbone = nn.Sequential(*layers)
        self.num_classes = int(num_classes)
        self.in_chs = int(in_chs)
        self.negative_slope = float(negative_slope)
        self.head = AnchorHead([previous], self.num_classes, anchors)
        stride = 1
        for layer in self.backbone:
            if isinstance(layer, nn.MaxPool2d):
                stride *= layer.stride if isinstance(layer.stride, int) else layer.stride[0]
        self.head.stride.fill_(float(stride))
        self.head.init_biases()

    def forward(self, images: torch.Tensor):
        """images [B, 3, H, W] in [0, 1], H and W multiples of 32. Train: [raw map]; eval: (decoded, [raw map])."""
        return self.head([self.backbone(images)])

    def conversion_layers(self) -> list[nn.Module]:
        """Leaf modules in execution order (backbone, then the linear detection conv)."""
        return [m for m in self.backbone.modules() if not list(m.children())] + [self.head.pred[0]]

    def build_loss(self, **gains: float) -> AnchorLoss:
        """The YOLOv2 loss of the anchor head (``trainer.loss.anchor_*`` gains); the YOLOv8 gains
        (box, cls, dfl, tal_topk) belong to the anchor-free head and are ignored."""
        return anchor_loss(self.head, **gains)
