"""ultralytics' detection operations: NMS, box IoU, prediction matching, per-class AP, anchors and box decoding."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import torch

from spikeyolo._ultralytics import env  # noqa: F401  (offline environment before ultralytics)
from ultralytics.engine.validator import BaseValidator as _UlBaseValidator
from ultralytics.utils.metrics import ap_per_class as _ul_ap_per_class
from ultralytics.utils.metrics import box_iou as _ul_box_iou
from ultralytics.utils.nms import non_max_suppression as _ul_nms
from ultralytics.utils.tal import dist2bbox, make_anchors

__all__ = ["non_max_suppression", "box_iou", "match_predictions", "ap_per_class", "make_anchors", "dist2bbox"]


def non_max_suppression(prediction: torch.Tensor, conf_thres: float = 0.001, iou_thres: float = 0.7,
                        max_det: int = 300, multi_label: bool = True, agnostic: bool = False) -> list[torch.Tensor]:
    """Class-aware NMS with the reference validation settings, every image of the batch processed.

    ultralytics' NMS stops after ``2.0 + max_time_img * batch`` seconds of wall time (0.05 s per image by
    default), logs "NMS time limit exceeded" and returns no detections for the rest of the batch, so on a busy
    machine a score or a prediction loses images at random (issue 25: mAP@50 0.2946 once, 0.3568 four times on
    the same checkpoint). Here the limit is infinite (``max_time_img=inf``: the check ``elapsed > inf`` never
    holds): the same computation with nothing cut off. An image with many candidates (an untrained model at
    conf 0.001 reaches the 30,000 of ``max_nms``, ultralytics' deterministic cap, kept) takes its full time,
    seconds on a CPU, instead of losing its boxes.

    Args:
        prediction: [B, 4 + num_classes, A] decoded boxes (xywh pixels) and class scores.

    Returns:
        per image a [N, 6] tensor (x1, y1, x2, y2, score, class).
    """
    return _ul_nms(prediction, conf_thres=conf_thres, iou_thres=iou_thres, max_det=max_det,
                   multi_label=multi_label, agnostic=agnostic, max_time_img=math.inf)


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes, computed in float32 as ultralytics' validator does.

    Args:
        boxes1: [N, 4] xyxy.
        boxes2: [M, 4] xyxy.

    Returns:
        [N, M] IoU.
    """
    return _ul_box_iou(boxes1, boxes2)


def match_predictions(pred_classes: torch.Tensor, true_classes: torch.Tensor, iou: torch.Tensor,
                      iou_thresholds: torch.Tensor) -> np.ndarray:
    """ultralytics' greedy prediction-to-label matching (``BaseValidator.match_predictions``).

    Args:
        pred_classes: [N] predicted class indices, in descending-confidence order.
        true_classes: [M] label class indices.
        iou: [M, N] IoU of labels (rows) with predictions (columns).
        iou_thresholds: [T] IoU thresholds (0.50:0.05:0.95 in the protocol).

    Returns:
        [N, T] bool: prediction n is a true positive at threshold t.
    """
    shim = SimpleNamespace(iouv=iou_thresholds)  # the only attribute the method reads
    return _UlBaseValidator.match_predictions(shim, pred_classes, true_classes, iou).numpy()


def ap_per_class(tp: np.ndarray, conf: np.ndarray, pred_classes: np.ndarray,
                 target_classes: np.ndarray) -> dict[str, np.ndarray]:
    """ultralytics' per-class AP (101-point interpolation, trapezoid rule) and max-F1 P/R.

    Args:
        tp: [N, T] bool true-positive matrix of all predictions of the data set.
        conf: [N] prediction scores.
        pred_classes: [N] predicted class indices.
        target_classes: [L] class index of every label of the data set.

    Returns:
        dict of arrays over the C classes that have labels: ``class_index`` [C], ``ap`` [C, T],
        ``precision`` / ``recall`` / ``f1`` [C] at the max-mean-F1 confidence, ``tp`` / ``fp`` [C]
        counts there, ``recall_grid`` [1000] and ``precision_curve`` [C, 1000] (the IoU=0.5
        precision-recall curve, one row per class), ``precision_conf`` / ``recall_conf`` /
        ``f1_conf`` [C, 1000] against ``conf_grid`` [1000].
    """
    (tp_count, fp_count, precision, recall, f1, ap, class_index, precision_conf, recall_conf, f1_conf,
     grid, precision_curve) = _ul_ap_per_class(tp, conf, pred_classes, target_classes)
    return {"class_index": class_index, "ap": ap, "precision": precision, "recall": recall, "f1": f1,
            "tp": tp_count, "fp": fp_count, "recall_grid": grid, "precision_curve": precision_curve,
            "conf_grid": grid, "precision_conf": precision_conf, "recall_conf": recall_conf,
            "f1_conf": f1_conf}
