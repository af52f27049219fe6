"""The ultralytics-style AP: the second evaluation protocol (what ``yolo val`` prints).

It differs from COCOeval: no crowd/ignore regions, no area ranges, no
max-detections cap, predictions are matched greedily per image in descending
score order (``match_predictions``), and AP is the trapezoid integral of the
precision envelope sampled at 101 recall points. Its mAP is averaged over the
classes that have labels. The arithmetic is ultralytics' own, reached through
``spikeyolo.ultralytics_adapter``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["IOU_THRESHOLDS", "match_image", "evaluate_yolo_ap"]

# IoU 0.50:0.05:0.95, as ultralytics' DetectionValidator.iouv.
IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10)


def match_image(predictions: torch.Tensor, gt_boxes: torch.Tensor, gt_classes: torch.Tensor,
                iou_thresholds: torch.Tensor = IOU_THRESHOLDS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True-positive matrix of one image's predictions.

    Args:
        predictions: [N, 6] (x1, y1, x2, y2, score, class_index).
        gt_boxes: [M, 4] xyxy, in the same pixel space as the predictions.
        gt_classes: [M] class indices.
        iou_thresholds: [T] IoU thresholds.

    Returns:
        (tp [N, T] bool, scores [N], classes [N]), the predictions sorted by descending score
        (stable), which is the order the matching needs.
    """
    from spikeyolo import ultralytics_adapter  # imports ultralytics (seconds): only when used

    order = torch.argsort(predictions[:, 4], descending=True, stable=True)
    predictions = predictions[order].detach().cpu()  # [N, 6]
    scores, classes = predictions[:, 4].numpy().astype(np.float64), predictions[:, 5].numpy().astype(np.float64)
    num_thresholds = iou_thresholds.shape[0]
    if predictions.shape[0] == 0 or gt_boxes.shape[0] == 0:
        return np.zeros((predictions.shape[0], num_thresholds), dtype=bool), scores, classes
    gt_boxes, gt_classes = gt_boxes.detach().cpu(), gt_classes.detach().cpu().reshape(-1)
    iou = ultralytics_adapter.box_iou(gt_boxes, predictions[:, :4])  # [M, N]
    tp = ultralytics_adapter.match_predictions(predictions[:, 5], gt_classes.to(predictions.dtype), iou,
                                               iou_thresholds.cpu())  # [N, T]
    return tp, scores, classes


def evaluate_yolo_ap(predictions: Sequence[torch.Tensor], gt_boxes: Sequence[torch.Tensor],
                     gt_classes: Sequence[torch.Tensor],
                     iou_thresholds: torch.Tensor = IOU_THRESHOLDS) -> dict[str, float | np.ndarray]:
    """Ultralytics-style detection metrics over a data set.

    Args:
        predictions: per image [N_i, 6] (x1, y1, x2, y2, score, class_index).
        gt_boxes: per image [M_i, 4] xyxy, same pixel space as the predictions.
        gt_classes: per image [M_i] class indices.
        iou_thresholds: [T] IoU thresholds; index 0 must be 0.5 and index 5 0.75 for the
            ``map50`` / ``map75`` entries to mean what they say.

    Returns:
        dict with the scalars ``map50_95``, ``map50``, ``map75``, ``precision``, ``recall``
        (means over classes with labels; precision/recall at the max-mean-F1 confidence,
        0.0 when there are no labels) and the arrays over those C classes: ``class_index``
        [C], ``ap`` [C, T], ``ap50_95`` [C], ``ap50`` [C], ``precision_per_class`` [C],
        ``recall_per_class`` [C], ``f1_per_class`` [C], and for plotting ``recall_grid``
        [1000] and ``precision_curve`` [C, 1000] (precision vs recall at IoU 0.5).
    """
    if not len(predictions) == len(gt_boxes) == len(gt_classes):
        raise ValueError(f"got {len(predictions)} prediction, {len(gt_boxes)} box and "
                         f"{len(gt_classes)} class entries; need one per image")
    num_thresholds = iou_thresholds.shape[0]
    tp_parts, score_parts, class_parts, target_parts = [np.zeros((0, num_thresholds), bool)], [], [], []
    for image_predictions, image_boxes, image_classes in zip(predictions, gt_boxes, gt_classes):
        tp, scores, classes = match_image(image_predictions, image_boxes, image_classes, iou_thresholds)
        tp_parts.append(tp)
        score_parts.append(scores)
        class_parts.append(classes)
        target_parts.append(image_classes.detach().cpu().reshape(-1).numpy().astype(np.float64))
    tp = np.concatenate(tp_parts, 0)  # [N, T]
    scores = np.concatenate([np.zeros(0), *score_parts])  # [N]
    classes = np.concatenate([np.zeros(0), *class_parts])  # [N]
    targets = np.concatenate([np.zeros(0), *target_parts])  # [L]

    from spikeyolo import ultralytics_adapter

    per_class = ultralytics_adapter.ap_per_class(tp, scores, classes, targets)
    ap = per_class["ap"]  # [C, T]
    has_classes = ap.shape[0] > 0
    return {
        "map50_95": float(ap.mean()) if has_classes else 0.0,
        "map50": float(ap[:, 0].mean()) if has_classes else 0.0,
        "map75": float(ap[:, 5].mean()) if has_classes and num_thresholds > 5 else 0.0,
        "precision": float(per_class["precision"].mean()) if has_classes else 0.0,
        "recall": float(per_class["recall"].mean()) if has_classes else 0.0,
        "class_index": per_class["class_index"],
        "ap": ap,
        "ap50_95": ap.mean(1),
        "ap50": ap[:, 0],
        "precision_per_class": per_class["precision"],
        "recall_per_class": per_class["recall"],
        "f1_per_class": per_class["f1"],
        "recall_grid": per_class["recall_grid"],
        "precision_curve": per_class["precision_curve"],
    }
