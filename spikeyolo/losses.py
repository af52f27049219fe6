"""Detection losses: the YOLOv8 loss (task-aligned assigner, BCE, CIoU, DFL) of the anchor-free head.

The loss is ultralytics' code behind :mod:`spikeyolo._ultralytics.loss` (ultralytics is a required
dependency, imported here at module import, which also sets its offline environment: the one
import-time side effect the project allows). The anchor-based heads' YOLOv2 loss lives beside its
head, in :mod:`spikeyolo.nn.anchor_head`. Models build their loss with ``model.build_loss(**gains)``; the
trainer builds it with :func:`build_training_loss`, which also sets the assigner's small-box rule
(``trainer.loss.tal_small_box_floor``, see :class:`~spikeyolo._ultralytics.loss.DetectionLoss`).
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from spikeyolo._ultralytics.loss import DetectionLoss

__all__ = ["build_detection_loss", "build_training_loss", "family_small_box_floor"]


def build_detection_loss(head: nn.Module, box: float = 7.5, cls: float = 0.5, dfl: float = 1.5,
                         tal_topk: int = 10, small_box_floor: bool | None = None) -> DetectionLoss:
    """YOLOv8 detection loss for an anchor-free DFL head.

    Returns a callable ``loss(raw_maps, batch) -> dict`` with the gain-weighted terms
    ``box``, ``cls``, ``dfl`` and ``total`` (sum x batch size, what is back-propagated).
    """
    return DetectionLoss(head, box_gain=box, cls_gain=cls, dfl_gain=dfl, tal_topk=tal_topk,
                         small_box_floor=small_box_floor)


def family_small_box_floor(model: nn.Module) -> bool:
    """The small-box rule a model family trains with when ``trainer.loss.tal_small_box_floor`` is null: on (as
    ultralytics 8.4 trains it) for the YOLOv8 family, the stock ANN yardstick; off (ultralytics 8.0.197, the
    engine of the SpikeYOLO reference) for every other family."""
    return bool(getattr(type(model), "small_box_floor", False))   # nn.yolov8.YOLOv8 sets it (this module is below nn)


def build_training_loss(model: nn.Module, settings: dict[str, Any]) -> Callable:
    """``model.build_loss(**settings)`` (the ``trainer.loss`` node), with the assigner's small-box rule set on a
    YOLOv8 (DFL) loss: ``settings["tal_small_box_floor"]``, or the family's (:func:`family_small_box_floor`) when
    it is null or absent. Other losses (the anchor heads') have no such rule."""
    settings = dict(settings)
    floor = settings.pop("tal_small_box_floor", None)
    loss = model.build_loss(**settings)
    if isinstance(loss, DetectionLoss):
        loss.small_box_floor = family_small_box_floor(model) if floor is None else bool(floor)
    return loss
