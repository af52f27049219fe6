"""Shared types and conventions used across modules.

``model_input``  a loader batch's images as network input.
``Predictions``  one inference pass over a loader (:func:`spikeyolo.engine.predict.predict`): the detections
                 of every sample in original-image pixels and the ground truth they are scored against.
``Score``        what one evaluator (:mod:`spikeyolo.evaluation.evaluators`) makes of a ``Predictions``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["model_input", "Predictions", "Score"]


def model_input(images: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """A loader batch's ``img`` as network input: float in [0, 1], time-major for event clips.

    Args:
        images: uint8 [B, C, H, W] (static images) or [B, T, C, H, W] (event frames, as loaders
            batch them).

    Returns:
        float [B, C, H, W] or [T, B, C, H, W] scaled by 1/255.
    """
    if device is not None:
        images = images.to(device, non_blocking=True)
    images = images.float() / 255
    if images.dim() == 5:
        images = images.transpose(0, 1)  # [B, T, C, H, W] -> [T, B, C, H, W]
    return images


@dataclass
class Predictions:
    """One pass of a detector over a loader, per sample in loader order; what every scorer reads.

    The ground truth is the loader's dataset's own labels, read once with the pass, in the form the dataset
    keeps them (so the COCO ground truth built from them is the same to the last bit).

    Attributes:
        detections: per sample [N, 6] float64 (x1, y1, x2, y2, score, class index) in original-image pixels,
            after NMS, clipped to the image.
        im_files: per sample its id: the image path, or ``"<recording>@<t_us>"`` for Gen1.
        shapes: per sample the original (height, width).
        gt_boxes: per sample [M, 4] float64 (cx, cy, w, h) normalised to the original image.
        gt_classes: per sample [M] int64 class indices.
        samples: per sample the dataset's own record when it keeps one with an ``im_file`` (Gen1:
            ``Gen1Sample``, raw boxes, label time and event count, which the Gen1 protocols score); else None.
        firing: firing rates recorded during the pass (mean output / D per spiking neuron by module name, and
            per layer group as ``group/<backbone|neck|head|all>``); empty when not recorded.
        seconds: wall time of the pass (loading, forward, NMS).
        unclipped_boxes: per sample [N, 4] float64 xyxy, the detections' boxes in original-image pixels before
            clipping (same rows as ``detections``): what ultralytics 8.4's validator matches (``yolo_ap``);
            None when the pass did not keep them (``yolo_ap`` then matches ``detections`` as they are).
    """

    detections: list[torch.Tensor]
    im_files: list[str]
    shapes: list[tuple[int, int]]
    gt_boxes: list[torch.Tensor]
    gt_classes: list[torch.Tensor]
    samples: list[Any] | None = None
    firing: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    unclipped_boxes: list[torch.Tensor] | None = None

    @property
    def images(self) -> int:
        """Number of samples."""
        return len(self.detections)

    def gt_xyxy(self) -> list[torch.Tensor]:
        """Per sample the ground-truth boxes [M, 4] float64 xyxy in original-image pixels."""
        boxes = []
        for normalised, (height, width) in zip(self.gt_boxes, self.shapes):
            scale = normalised.new_tensor([width, height, width, height])  # [4]
            centre, size = normalised[:, :2], normalised[:, 2:]
            boxes.append(torch.cat((centre - size / 2, centre + size / 2), 1) * scale)  # [M, 4]
        return boxes


@dataclass
class Score:
    """What one evaluator makes of a :class:`Predictions`.

    Attributes:
        metrics: json-ready numbers, the keys of metrics.json (``map50_95``, ``yolo_map50``, ``firing/neck``,
            or one Gen1 protocol's dict).
        result: the scorer's full result (``CocoResult``, the AP arrays, the firing rates by neuron), or None.
        records: per-detection output the scorer produced (the COCO scorer: the result dicts that
            ``predictions.json`` holds); empty otherwise.
    """

    metrics: dict[str, Any]
    result: Any = None
    records: list[dict] = field(default_factory=list)
