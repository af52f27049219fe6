"""Detection losses. The YOLOv8 loss (task-aligned assigner, BCE, CIoU, DFL) is ultralytics' code
behind spikeyolo._ultralytics.loss; this module picks the loss that fits a head."""

from __future__ import annotations

from torch import nn

__all__ = ["build_detection_loss"]


def build_detection_loss(head: nn.Module, box: float = 7.5, cls: float = 0.5, dfl: float = 1.5,
                         tal_topk: int = 10):
    """YOLOv8 detection loss for an anchor-free DFL head.

    Returns a callable ``loss(raw_maps, batch) -> dict`` with the gain-weighted terms
    ``box``, ``cls``, ``dfl`` and ``total`` (sum x batch size, what is back-propagated).
    """
    from spikeyolo._ultralytics.loss import DetectionLoss

    return DetectionLoss(head, box_gain=box, cls_gain=cls, dfl_gain=dfl, tal_topk=tal_topk)
