"""Detection losses: the YOLOv8 loss (task-aligned assigner, BCE, CIoU, DFL) of the anchor-free head.

The loss is ultralytics' code behind :mod:`spikeyolo._ultralytics.loss` (ultralytics is a required
dependency, imported here at module import, which also sets its offline environment: the one
import-time side effect the project allows). The anchor-based heads' YOLOv2 loss lives beside its
head, in :mod:`spikeyolo.nn.anchor_head`. Models build their loss with ``model.build_loss(**gains)``.
"""

from __future__ import annotations

from torch import nn

from spikeyolo._ultralytics.loss import DetectionLoss

__all__ = ["build_detection_loss"]


def build_detection_loss(head: nn.Module, box: float = 7.5, cls: float = 0.5, dfl: float = 1.5,
                         tal_topk: int = 10) -> DetectionLoss:
    """YOLOv8 detection loss for an anchor-free DFL head.

    Returns a callable ``loss(raw_maps, batch) -> dict`` with the gain-weighted terms
    ``box``, ``cls``, ``dfl`` and ``total`` (sum x batch size, what is back-propagated).
    """
    return DetectionLoss(head, box_gain=box, cls_gain=cls, dfl_gain=dfl, tal_topk=tal_topk)
