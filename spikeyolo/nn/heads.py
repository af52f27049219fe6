"""Anchor-free (DFL) detection head of SpikeYOLO, YOLOv8 style.

Per level l: a box branch (spiking 3x3, 3x3, then 1x1 with bias to 4*reg_max) and a
class branch (same pattern to num_classes). The head averages over T and returns
[B, 4*reg_max + num_classes, H_l, W_l] per level; in eval mode it also decodes
boxes (DFL expectation, distances around grid-cell centres) into
[B, 4 + num_classes, A] with xywh in input pixels and sigmoid class scores.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from spikeyolo.losses import build_detection_loss
from spikeyolo.nn.anchor_head import AnchorHead, anchor_loss
from spikeyolo.nn.blocks import Scale
from spikeyolo.nn.layers import NeuronFactory, SpikeConv, SpikeConvOut
from spikeyolo.nn.neurons import SpikeCoding

__all__ = ["DFL", "AnchorFreeHead", "SpikingAnchorHead", "decode_dfl", "make_anchors"]


def make_anchors(feats: list[torch.Tensor], strides: torch.Tensor, offset: float = 0.5):
    """Anchor points at grid-cell centres.

    Args:
        feats: per-level maps [B, C, H_l, W_l].
        strides: [L] stride of each level.

    Returns:
        points [A, 2] (x, y in grid units of each level) and stride per anchor [A, 1].
    """
    points, stride_list = [], []
    for feat, stride in zip(feats, strides):
        height, width = feat.shape[-2:]
        xs = torch.arange(width, device=feat.device, dtype=feat.dtype) + offset
        ys = torch.arange(height, device=feat.device, dtype=feat.dtype) + offset
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((grid_x, grid_y), -1).view(-1, 2))  # [H*W, 2]
        stride_list.append(torch.full((height * width, 1), float(stride), device=feat.device, dtype=feat.dtype))
    return torch.cat(points), torch.cat(stride_list)


class DFL(nn.Module):
    """Distribution focal loss integral: softmax over reg_max bins, expectation with fixed weights 0..reg_max-1.

    The weights are a frozen parameter (counted in the parameter total, as in the reference).
    """

    def __init__(self, reg_max: int = 16) -> None:
        super().__init__()
        self.reg_max = reg_max
        self.conv = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(reg_max, dtype=torch.float).view(1, reg_max, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, anchors = x.shape
        # [B, 4*reg_max, A] -> [B, reg_max, 4, A] -> softmax over bins -> [B, 4, A]
        probs = x.view(batch, 4, self.reg_max, anchors).transpose(2, 1).softmax(1)
        return self.conv(probs).view(batch, 4, anchors)


class AnchorFreeHead(nn.Module):
    """SpikeYOLO's detect head (reference section 5).

    Args:
        in_chs: channels of the three input levels.
        num_classes: number of classes.
        neuron: neuron factory.
        coding: the detector's :class:`~spikeyolo.nn.neurons.SpikeCoding`; T is averaged out at the output.
        reg_max: DFL bins (16).

    Buffers: ``stride`` [L], set by the detector from a dummy forward (not saved in checkpoints).
    """

    def __init__(self, in_chs: list[int], num_classes: int, neuron: NeuronFactory, coding: SpikeCoding,
                 reg_max: int = 16) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.coding = coding
        self.num_outputs = num_classes + 4 * reg_max
        box_chs = max(16, in_chs[0] // 4, reg_max * 4)
        cls_chs = max(in_chs[0], min(num_classes, 100))
        self.box_branches = nn.ModuleList(
            nn.Sequential(SpikeConv(c, box_chs, neuron, 3), SpikeConv(box_chs, box_chs, neuron, 3),
                          SpikeConvOut(box_chs, 4 * reg_max, neuron)) for c in in_chs)
        self.cls_branches = nn.ModuleList(
            nn.Sequential(SpikeConv(c, cls_chs, neuron, 3), SpikeConv(cls_chs, cls_chs, neuron, 3),
                          SpikeConvOut(cls_chs, num_classes, neuron)) for c in in_chs)
        self.dfl = DFL(reg_max)
        # derived from the layer list by the detector (a dummy forward); not saved in checkpoints
        self.register_buffer("stride", torch.zeros(len(in_chs)), persistent=False)

    reference_key_map = (("cv2.", "box_branches."), ("cv3.", "cls_branches."), ("dfl.", "dfl."))

    @classmethod
    def build(cls, in_chs: list[int], scale: Scale, neuron: NeuronFactory, num_classes: int, coding: SpikeCoding,
              reg_max: int = 16):
        return cls(in_chs, num_classes, neuron, coding, reg_max), None

    def build_loss(self, box: float = 7.5, cls: float = 0.5, dfl: float = 1.5, tal_topk: int = 10, **_: float):
        """YOLOv8 loss (task-aligned assigner, BCE, CIoU, DFL): ``loss(raw_maps, batch) -> dict``."""
        return build_detection_loss(self, box=box, cls=cls, dfl=dfl, tal_topk=tal_topk)

    def init_biases(self, reference_size: int = 640) -> None:
        """Box bias 1.0; class bias log(5 / nc / (640 / stride)^2) (reference ``bias_init``)."""
        if self.stride.is_meta:   # built on the meta device (spikeyolo.models' size check): no values to set
            return
        for box, cls_branch, stride in zip(self.box_branches, self.cls_branches, self.stride.tolist()):
            box[-1].conv.bias.data[:] = 1.0
            cls_branch[-1].conv.bias.data[: self.num_classes] = math.log(
                5 / self.num_classes / (reference_size / stride) ** 2)

    def forward(self, feats: list[torch.Tensor]):
        maps = []
        for level, x in enumerate(feats):
            out = torch.cat((self.box_branches[level](x), self.cls_branches[level](x)), 1)
            # [T*B, no, H, W] -> [T, B, no, H, W] -> mean over T -> [B, no, H, W]
            maps.append(out.view(self.coding.time_steps, -1, *out.shape[1:]).mean(0))
        if self.training:
            return maps
        return self.decode(maps), maps

    def decode(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """Raw maps -> [B, 4 + num_classes, A]: xywh (input pixels) and sigmoid class scores."""
        return decode_dfl(maps, self.num_classes, self.reg_max, self.dfl, self.stride)


def decode_dfl(maps: list[torch.Tensor], num_classes: int, reg_max: int, dfl: DFL, strides: torch.Tensor) -> torch.Tensor:
    """Raw anchor-free maps (per level [B, 4*reg_max + num_classes, H, W]) -> [B, 4 + num_classes, A]: xywh in input
    pixels (DFL expectation of the distances around each grid-cell centre) and sigmoid class scores."""
    batch = maps[0].shape[0]
    # [B, no, H, W] per level -> [B, no, A]
    flat = torch.cat([m.view(batch, 4 * reg_max + num_classes, -1) for m in maps], 2)
    box_dist, cls_logits = flat.split((4 * reg_max, num_classes), 1)
    points, stride_per_anchor = make_anchors(maps, strides)
    points = points.transpose(0, 1).unsqueeze(0)  # [1, 2, A]
    distances = dfl(box_dist)  # [B, 4, A] = (left, top, right, bottom)
    left_top, right_bottom = distances.chunk(2, 1)
    top_left = points - left_top
    bottom_right = points + right_bottom
    centre = (top_left + bottom_right) / 2
    size = bottom_right - top_left
    boxes = torch.cat((centre, size), 1) * stride_per_anchor.transpose(0, 1)
    return torch.cat((boxes, cls_logits.sigmoid()), 1)


class SpikingAnchorHead(AnchorHead):
    """Anchor-based (YOLOv2/v5-style) head for the SpikeYOLO detector (``model.head=anchor_based``).

    Per level: a spiking 3x3 conv and a spiking 1x1 conv with bias to A * (5 + num_classes),
    averaged over T; decoding and loss are those of :class:`spikeyolo.nn.anchor_head.AnchorHead`.

    Args:
        in_chs: channels of the input levels.
        num_classes: classes.
        neuron: neuron factory.
        coding: the detector's :class:`~spikeyolo.nn.neurons.SpikeCoding` (T).
        anchors: per level [w0, h0, w1, h1, ...] in input pixels.
    """

    def __init__(self, in_chs: list[int], num_classes: int, neuron: NeuronFactory, coding: SpikeCoding,
                 anchors: list[list[float]]) -> None:
        super().__init__(in_chs, num_classes, anchors)
        self.coding = coding
        outputs = self.num_anchors * self.num_outputs
        self.pred = nn.ModuleList(nn.Sequential(SpikeConv(c, c, neuron, 3), SpikeConvOut(c, outputs, neuron))
                                  for c in in_chs)

    @classmethod
    def build(cls, in_chs: list[int], scale: Scale, neuron: NeuronFactory, num_classes: int, coding: SpikeCoding,
              anchors: list[list[float]]):
        return cls(in_chs, num_classes, neuron, coding, anchors), None

    def init_biases(self, reference_size: int = 640) -> None:
        if self.stride.is_meta:   # built on the meta device (spikeyolo.models' size check): no values to set
            return
        for branch, stride in zip(self.pred, self.stride.tolist()):
            bias = branch[-1].conv.bias.data.view(self.num_anchors, self.num_outputs)
            bias[:, 4] = math.log(8 / (reference_size / max(stride, 1.0)) ** 2)
            bias[:, 5:] = math.log(0.6 / max(self.num_classes - 0.99, 0.01))

    def forward(self, feats: list[torch.Tensor]):
        maps = []
        for branch, x in zip(self.pred, feats):
            out = branch(x)
            # [T*B, A*(5+nc), H, W] -> mean over T -> [B, A*(5+nc), H, W]
            maps.append(out.view(self.coding.time_steps, -1, *out.shape[1:]).mean(0))
        if self.training:
            return maps
        return self.decode(maps), maps

    def build_loss(self, **gains: float):
        """YOLOv2-style anchor loss (its own ``anchor_*`` gains; the YOLOv8 gains do not apply)."""
        return anchor_loss(self, **gains)
