"""A stock ultralytics YOLOv8 (benchmarks and the ANN comparison): model and loss, built offline."""

from __future__ import annotations

from typing import Any

import torch

from spikeyolo._ultralytics.env import hyperparameters
from ultralytics.utils.loss import v8DetectionLoss

__all__ = ["yolov8_detection_model", "yolov8_loss"]


def yolov8_detection_model(scale: str = "s", num_classes: int = 80, in_chs: int = 3) -> torch.nn.Module:
    """An untrained ultralytics YOLOv8 DetectionModel of a scale (built from its bundled yaml, no download)."""
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel(f"yolov8{scale}.yaml", ch=in_chs, nc=num_classes, verbose=False)
    model.args = hyperparameters()
    return model


def yolov8_loss(model: torch.nn.Module):
    """YOLOv8's own loss for a :func:`yolov8_detection_model`: ``loss(preds, batch) -> {"total": ...}``."""
    criterion = v8DetectionLoss(model)

    def loss(preds: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        total, _ = criterion(preds, batch)
        return {"total": total.sum()}

    return loss
