"""Anchor-based detection head (YOLOv2 style) and its loss.

Per level l a 1x1 conv with bias maps [B, in_chs[l], H, W] to the raw map
[B, A_l * (5 + num_classes), H, W]; channels per anchor a are
(t_x, t_y, t_w, t_h, t_obj, class logits...). Decoding (YOLOv2, Redmon & Farhadi 2017):

    x = (sigmoid(t_x) + c_x) * stride        w = anchor_w * exp(t_w)
    y = (sigmoid(t_y) + c_y) * stride        h = anchor_h * exp(t_h)
    score_k = sigmoid(t_obj) * sigmoid(t_cls_k)

Anchors are given in **input pixels** (at the training image size), per level as a flat list
``[w0, h0, w1, h1, ...]`` (YOLOv3/v5 convention; the darknet Tiny YOLO v2 anchors are in grid
units and are multiplied by 32 in configs/model/tiny_yolo.yaml). ``scripts/kmeans_anchors.py``
computes them from a label folder.

Loss (YOLOv2 with two documented simplifications: class BCE instead of softmax cross-entropy
(YOLOv3), and the anchor of best shape-IoU over all levels is the one responsible):

    box  MSE of sigmoid(t_xy) against the centre's offset in its cell, plus MSE of t_wh against
         log(gt_wh / anchor_wh), weighted (2 - w*h / image area); mean over assigned anchors
    obj  BCE, target 1 at assigned anchors, 0 elsewhere except predictions whose decoded box already
         overlaps a ground truth with IoU > ignore_iou (not penalised); mean over counted cells
    cls  BCE against one-hot classes at assigned anchors; mean over them
    total = (box_gain * box + obj_gain * obj + cls_gain * cls) * batch_size
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_iou

__all__ = ["AnchorHead", "AnchorLoss", "anchor_loss"]

_MAX_LOG_SCALE = 8.0  # clamp of t_w, t_h before exp (exp(8) ~ 3000x the anchor)


class AnchorHead(nn.Module):
    """YOLOv2-style anchor head over one or more levels.

    Args:
        in_chs: channels of each input level.
        num_classes: number of classes.
        anchors: per level, [w0, h0, w1, h1, ...] in input pixels; every level has the same count.
        neuron: accepted for interface parity with the spiking heads and ignored (the head is a plain conv).

    Buffers: ``anchors`` [L, A, 2] (pixels), ``stride`` [L] (set by the model).
    """

    def __init__(self, in_chs: list[int], num_classes: int, anchors: list[list[float]], neuron=None) -> None:
        super().__init__()
        del neuron
        if len(anchors) != len(in_chs):
            raise ValueError(f"{len(anchors)} anchor levels for {len(in_chs)} input levels")
        counts = {len(level) for level in anchors}
        if len(counts) != 1 or next(iter(counts)) % 2 or next(iter(counts)) == 0:
            raise ValueError("anchors: every level needs the same, even number of values [w0, h0, w1, h1, ...]")
        self.num_classes = int(num_classes)
        self.num_anchors = len(anchors[0]) // 2
        self.num_outputs = 5 + self.num_classes
        self.pred = nn.ModuleList(nn.Conv2d(c, self.num_anchors * self.num_outputs, 1, bias=True) for c in in_chs)
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float).view(len(in_chs), -1, 2))
        self.register_buffer("stride", torch.zeros(len(in_chs)), persistent=False)

    def init_biases(self, reference_size: int = 416) -> None:
        """Objectness prior ~8 objects per image, class prior 1 / num_classes (YOLOv5 ``_initialize_biases``)."""
        if self.stride.is_meta:   # built on the meta device (spikeyolo.models' size check): no values to set
            return
        for conv, stride in zip(self.pred, self.stride.tolist()):
            bias = conv.bias.data.view(self.num_anchors, self.num_outputs)
            bias[:, 4] = math.log(8 / (reference_size / max(stride, 1.0)) ** 2)
            bias[:, 5:] = math.log(0.6 / max(self.num_classes - 0.99, 0.01))

    def forward(self, feats: list[torch.Tensor]):
        maps = [conv(x) for conv, x in zip(self.pred, feats)]  # [B, A*(5+nc), H_l, W_l] each
        if self.training:
            return maps
        return self.decode(maps), maps

    def split(self, raw: torch.Tensor) -> torch.Tensor:
        """[B, A*(5+nc), H, W] -> [B, A, H, W, 5+nc]."""
        batch, _, height, width = raw.shape
        return raw.view(batch, self.num_anchors, self.num_outputs, height, width).permute(0, 1, 3, 4, 2)

    def boxes(self, pred: torch.Tensor, level: int) -> torch.Tensor:
        """Decoded xywh (pixels) [B, A, H, W, 4] of a split map [B, A, H, W, 5+nc]."""
        height, width = pred.shape[2:4]
        ys = torch.arange(height, device=pred.device, dtype=pred.dtype)
        xs = torch.arange(width, device=pred.device, dtype=pred.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack((grid_x, grid_y), -1).view(1, 1, height, width, 2)
        stride = self.stride[level].to(pred.dtype)
        centre = (pred[..., :2].sigmoid() + grid) * stride
        size = pred[..., 2:4].clamp(max=_MAX_LOG_SCALE).exp() * self.anchors[level].view(1, -1, 1, 1, 2)
        return torch.cat((centre, size), -1)

    def decode(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """Raw maps -> [B, 4 + num_classes, sum_l A*H_l*W_l]: xywh in input pixels and sigmoid(obj)*sigmoid(cls)."""
        outputs = []
        for level, raw in enumerate(maps):
            pred = self.split(raw)
            scores = pred[..., 4:5].sigmoid() * pred[..., 5:].sigmoid()
            out = torch.cat((self.boxes(pred, level), scores), -1)  # [B, A, H, W, 4+nc]
            outputs.append(out.flatten(1, 3))                       # -> [B, A*H*W, 4+nc]
        return torch.cat(outputs, 1).transpose(1, 2)                # -> [B, 4+nc, total]


def _xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    centre, size = boxes[..., :2], boxes[..., 2:4]
    return torch.cat((centre - size / 2, centre + size / 2), -1)


class AnchorLoss:
    """The YOLOv2 loss of an :class:`AnchorHead` (see the module docstring).

    Args:
        head: the head (for anchors, strides, num_classes).
        box, obj, cls: term gains.
        ignore_iou: predictions overlapping a ground truth above this IoU get no "no object" loss.

    Call: ``loss(raw_maps, batch) -> {box, obj, cls, total}`` (gain-weighted terms, detached) with an
    ultralytics batch dict (``batch_idx`` [N], ``cls`` [N, 1], ``bboxes`` [N, 4] normalised xywh, ``img`` [B, 3, H, W]).
    """

    def __init__(self, head: AnchorHead, box: float = 1.0, obj: float = 1.0, cls: float = 1.0,
                 ignore_iou: float = 0.6, object_scale: float = 5.0) -> None:
        self.head = head
        self.gains = {"box": float(box), "obj": float(obj), "cls": float(cls)}
        self.ignore_iou = float(ignore_iou)
        self.object_scale = float(object_scale)

    def __call__(self, maps: list[torch.Tensor], batch: dict) -> dict[str, torch.Tensor]:
        head = self.head
        device = maps[0].device
        batch_size = maps[0].shape[0]
        # input size from the first level's grid and stride (the batch may not carry the images)
        img_h, img_w = (int(n * head.stride[0].item()) for n in maps[0].shape[-2:])
        image_idx = batch["batch_idx"].to(device).long().view(-1)
        classes = batch["cls"].to(device).long().view(-1)
        gt = batch["bboxes"].to(device).float().view(-1, 4) * torch.tensor([img_w, img_h, img_w, img_h],
                                                                          device=device, dtype=torch.float)
        # best anchor by shape IoU (boxes aligned at a common centre), over all levels: [N, L*A]
        anchors = head.anchors.view(-1, 2).to(device)
        inter = torch.min(gt[:, None, 2:], anchors[None]).prod(-1)
        shape_iou = inter / (gt[:, None, 2:].prod(-1) + anchors[None].prod(-1) - inter + 1e-9)
        best = shape_iou.argmax(1) if len(gt) else torch.zeros(0, dtype=torch.long, device=device)
        best_level, best_anchor = best // head.num_anchors, best % head.num_anchors
        gt_xyxy = _xywh_to_xyxy(gt)

        zero = maps[0].sum() * 0.0
        box_sum, cls_sum, obj_sum = zero, zero, zero
        num_pos, num_obj_cells = 0, 0
        for level, raw in enumerate(maps):
            pred = head.split(raw).float()                    # [B, A, H, W, 5+nc]
            height, width = pred.shape[2:4]
            stride = float(head.stride[level])
            obj_target = torch.zeros(pred.shape[:4], device=device)
            counted = torch.ones(pred.shape[:4], dtype=torch.bool, device=device)
            with torch.no_grad():  # ignore confident overlaps (YOLOv2 "noobj" rule)
                decoded = _xywh_to_xyxy(head.boxes(pred.detach(), level))  # [B, A, H, W, 4]
                for image in range(batch_size):
                    boxes_here = gt_xyxy[image_idx == image]
                    if len(boxes_here):
                        iou = box_iou(decoded[image].view(-1, 4), boxes_here).amax(1)
                        counted[image] &= (iou <= self.ignore_iou).view(counted.shape[1:])
            mine = best_level == level
            if mine.any():
                boxes, anchor = gt[mine], best_anchor[mine]
                img = image_idx[mine]
                cell = boxes[:, :2] / stride
                col = cell[:, 0].long().clamp(0, width - 1)
                row = cell[:, 1].long().clamp(0, height - 1)
                chosen = pred[img, anchor, row, col]              # [n, 5+nc]
                offset = cell - torch.stack((col, row), 1).float()
                log_scale = torch.log(boxes[:, 2:] / head.anchors[level, anchor].to(device) + 1e-9)
                weight = 2.0 - boxes[:, 2:].prod(1) / float(img_h * img_w)
                box_err = ((chosen[:, :2].sigmoid() - offset).pow(2).sum(1)
                           + (chosen[:, 2:4] - log_scale).pow(2).sum(1))
                box_sum = box_sum + (weight * box_err).sum()
                one_hot = F.one_hot(classes[mine], head.num_classes).float()
                cls_sum = cls_sum + F.binary_cross_entropy_with_logits(chosen[:, 5:], one_hot, reduction="sum")
                obj_target[img, anchor, row, col] = 1.0
                counted[img, anchor, row, col] = True
                num_pos += int(mine.sum())
            obj_bce = F.binary_cross_entropy_with_logits(pred[..., 4], obj_target, reduction="none")
            # darknet's object_scale (5) on the responsible cells, noobject_scale 1 on the counted rest
            obj_weight = torch.where(obj_target > 0, self.object_scale, 1.0) * counted
            obj_sum = obj_sum + (obj_bce * obj_weight).sum()
            num_obj_cells += int(counted.sum())
        terms = {"box": box_sum / max(num_pos, 1), "obj": obj_sum / max(num_pos, 1),
                 "cls": cls_sum / max(num_pos * head.num_classes, 1)}
        terms = {name: self.gains[name] * value for name, value in terms.items()}  # gain-weighted, like v8
        total = sum(terms.values()) * batch_size
        return {**{name: value.detach() for name, value in terms.items()}, "total": total}


def anchor_loss(head: AnchorHead, anchor_box: float = 1.0, anchor_obj: float = 1.0, anchor_cls: float = 1.0,
                anchor_ignore_iou: float = 0.6, **ignored: float) -> AnchorLoss:
    """The :class:`AnchorLoss` of ``head`` from the trainer's loss settings (``trainer.loss.anchor_*``).

    The YOLOv8 gains of the anchor-free head (box, cls, dfl, tal_topk) are in ``ignored``, so every model
    takes the same settings. Used by every model with an anchor head (TinyYOLO, SpikingYOLO, SpikeYOLO with
    ``model.head=anchor_based``).
    """
    del ignored
    return AnchorLoss(head, box=anchor_box, obj=anchor_obj, cls=anchor_cls, ignore_iou=anchor_ignore_iou)
