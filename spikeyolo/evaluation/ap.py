"""The ultralytics-style AP: the second evaluation protocol (what ``yolo val`` prints).

It differs from COCOeval: no crowd/ignore regions, no area ranges, no
max-detections cap, predictions are matched to labels per image (below), and AP is
the trapezoid integral of the precision envelope sampled at 101 recall points. Its
mAP is averaged over the classes that have labels. The installed ultralytics'
arithmetic is reached through ``spikeyolo._ultralytics.ops``.

Two versions of that arithmetic matter. The installed ultralytics (8.4.x) closes the precision-recall curve
with a drop to precision 0 at the highest recall reached (``ultralytics/ultralytics#24175``, April 2026);
the SpikeYOLO reference trained and reported with ultralytics 8.0.197 (training-and-eval reference §3), whose
``compute_ap`` closes it with one sentinel at (recall 1, precision 0), so the envelope falls *linearly* from
the last recall reached to 0 at recall 1. For a detector that finds half the objects with precision 1 the
two give 0.495 and 0.750. :func:`reference_ap_per_class` is the 8.0.197 arithmetic, written here (the
installed package no longer has it), so numbers comparable with the paper's can be reported.

The two versions also match predictions to labels differently. 8.4 (``match_predictions``) takes the predictions
in descending score order and gives each the unclaimed label of highest IoU. 8.0.197 lists every (label,
prediction) pair over the threshold by descending IoU, lets each prediction keep its best label (claimed or
not), then gives each label to the first (highest-scoring) prediction that kept it; a prediction whose best label
went to a higher-scoring one is a false positive even when another label was free.
:func:`reference_match_predictions` is that matching; the ``reference_*`` and ``closed_*`` results of
:func:`evaluate_yolo_ap` use it, its plain results (``map50`` ...) the installed 8.4's. Tied scores are ordered
by position (a stable sort in :func:`reference_ap_per_class`), where the reference's ``np.argsort`` leaves an
order that depends on the numpy build and the CPU.

The two versions also match in different frames. 8.0.197's validator maps the predictions back to the original
image with ``scale_boxes``, which clips them to it, and matches there (BICLab/SpikeYOLO ``309ef5e5``,
``ultralytics/models/yolo/detect/val.py`` L112, L120); 8.4.190's ``DetectionValidator`` matches
the predictions *unclipped* in the padded network-input frame (``_process_batch`` on the NMS output, labels
scaled to the input size). IoU does not change under the letterbox's per-axis scale and shift, so 8.4's matching
here takes the unclipped boxes in original pixels (:attr:`~spikeyolo.structures.Predictions.unclipped_boxes`) and
the reference's the clipped ones; clipping a box that reaches outside the image shrinks it towards a label at the
border, so matching clipped boxes read 0.015-0.026 mAP@50 above ultralytics' own figure on the demo run (issue 25).
tests/test_evaluation.py checks the equality with ultralytics' validator.

Both versions score a perfect detector 0.995, not 1: the closing sentinel lands on the real point at recall
1, and ``np.interp`` at the last of several equal abscissae returns the sentinel's 0, so the trapezoid loses
half of the last 0.01 step. ``closed_end=True`` keeps the envelope's value at recall 1 when a class reaches
it (the sentinel is only needed past the last recall reached); on every curve that stops short of full
recall it is bit-identical to the reference.

:func:`score_yolo_ap` is the evaluator of an inference pass (:class:`~spikeyolo.structures.Predictions`):
``yolo_map50_95`` / ``yolo_map50`` (8.4), ``reference_map50_95`` / ``reference_map50`` (8.0.197) and
``precision`` / ``recall``, against the labels the pass read.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from spikeyolo._ultralytics import ops
from spikeyolo.structures import Predictions, Score

__all__ = ["IOU_THRESHOLDS", "match_image", "interpolated_ap", "reference_match_predictions", "reference_ap_per_class",
           "evaluate_yolo_ap", "score_yolo_ap"]

# IoU 0.50:0.05:0.95, as ultralytics' DetectionValidator.iouv.
IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10)

_RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def interpolated_ap(recall: np.ndarray, precision: np.ndarray, closed_end: bool = False) -> float:
    """101-point interpolated AP of one precision-recall curve, as ultralytics 8.0.197 ``compute_ap``.

    Args:
        recall: [N] recall after each prediction, in descending score order (non-decreasing).
        precision: [N] precision after each prediction.
        closed_end: if the curve reaches recall 1, integrate the envelope's value there instead of the
            closing sentinel's 0 (module docstring); curves that stop short of recall 1 are unchanged.

    Returns:
        the trapezoid integral over recall 0, 0.01, ..., 1 of the linearly interpolated precision envelope
        of the curve with the sentinels (0, 1) in front and (1, 0) behind.
    """
    recall, precision = np.asarray(recall, np.float64), np.asarray(precision, np.float64)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))     # precision envelope: max precision at recall >= r
    if closed_end and recall.size and recall[-1] >= 1.0:
        # cut after the first point at full recall: its envelope value is the best precision at recall 1, and
        # neither the later points (same recall, lower envelope) nor the sentinel take part in the integral
        last = 1 + int(np.argmax(recall >= 1.0))
        mrec, mpre = mrec[:last + 1], mpre[:last + 1]
    return float(np.trapezoid(np.interp(_RECALL_POINTS, mrec, mpre), _RECALL_POINTS))


def reference_ap_per_class(tp: np.ndarray, conf: np.ndarray, pred_classes: np.ndarray, target_classes: np.ndarray,
                           eps: float = 1e-16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class AP with the SpikeYOLO reference's arithmetic (ultralytics 8.0.197 ``ap_per_class``).

    Args:
        tp: [N, T] true-positive matrix of all predictions (:func:`match_image` with ``matching="reference"``).
        conf: [N] prediction scores.
        pred_classes: [N] predicted class indices.
        target_classes: [L] class index of every label.
        eps: added to the label count in the recall, as the reference.

    Returns:
        (class_index [C] of the classes with labels, ap [C, T] as the reference, ap [C, T] closed at recall 1
        (:func:`interpolated_ap`)); a class without predictions has AP 0 in both.
    """
    # the reference sorts with np.argsort's default (unstable) kind, whose order of tied scores depends on the numpy
    # build and the CPU (AVX-512 sorting networks); a stable sort keeps ties in the order given: image by image,
    # and within an image by descending score (match_image)
    order = np.argsort(-np.asarray(conf, np.float64), kind="stable")
    tp = np.asarray(tp, bool)[order].astype(np.float64)
    pred_classes = np.asarray(pred_classes)[order]
    class_index, label_counts = np.unique(np.asarray(target_classes), return_counts=True)
    ap = np.zeros((class_index.shape[0], tp.shape[1]))
    ap_closed = np.zeros_like(ap)
    for row, (cls, num_labels) in enumerate(zip(class_index, label_counts)):
        mine = pred_classes == cls
        if not mine.any():
            continue
        tp_cum, fp_cum = tp[mine].cumsum(0), (1.0 - tp[mine]).cumsum(0)     # [n, T]
        recall, precision = tp_cum / (num_labels + eps), tp_cum / (tp_cum + fp_cum)
        for column in range(tp.shape[1]):
            ap[row, column] = interpolated_ap(recall[:, column], precision[:, column])
            ap_closed[row, column] = interpolated_ap(recall[:, column], precision[:, column], closed_end=True)
    return class_index, ap, ap_closed


def reference_match_predictions(pred_classes: np.ndarray, true_classes: np.ndarray, iou: np.ndarray,
                                iou_thresholds: np.ndarray) -> np.ndarray:
    """Prediction-to-label matching of ultralytics 8.0.197 (``BaseValidator.match_predictions``, no scipy).

    At each threshold: the (label, prediction) pairs of one class with IoU >= threshold, by descending IoU; each
    prediction keeps its first (best) pair, then each label its first prediction by index. With the predictions
    in descending score order, a label goes to the highest-scoring prediction whose best label it is.

    Args:
        pred_classes: [N] predicted class indices, in descending score order.
        true_classes: [M] label class indices.
        iou: [M, N] IoU of labels (rows) with predictions (columns), float32 as ultralytics' ``box_iou`` gives it.
        iou_thresholds: [T] IoU thresholds.

    Returns:
        [N, T] bool: prediction n is a true positive at threshold t.
    """
    iou = np.asarray(iou)
    same_class = np.asarray(true_classes).reshape(-1, 1) == np.asarray(pred_classes).reshape(1, -1)   # [M, N]
    iou = np.where(same_class, iou, np.zeros((), iou.dtype))
    thresholds = np.asarray(iou_thresholds, np.float32).reshape(-1)
    correct = np.zeros((iou.shape[1], thresholds.shape[0]), dtype=bool)   # [N, T]
    for column, threshold in enumerate(thresholds):
        labels, preds = np.nonzero(iou >= threshold)     # pairs in row-major order
        if labels.size > 1:
            # descending IoU; tied IoUs come out last pair first, as the reference's sort leaves them for the
            # few pairs of an image (numpy sorts up to 16 elements by insertion, a stable sort)
            by_iou = np.argsort(iou[labels, preds], kind="stable")[::-1]
            labels, preds = labels[by_iou], preds[by_iou]
            _, best = np.unique(preds, return_index=True)     # each prediction's best label, by prediction index
            labels, preds = labels[best], preds[best]
            _, first = np.unique(labels, return_index=True)   # each label's first prediction (the highest score)
            preds = preds[first]
        correct[preds, column] = True
    return correct


def match_image(predictions: torch.Tensor, gt_boxes: torch.Tensor, gt_classes: torch.Tensor,
                iou_thresholds: torch.Tensor = IOU_THRESHOLDS,
                matching: str = "installed") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True-positive matrix of one image's predictions.

    Args:
        predictions: [N, 6] (x1, y1, x2, y2, score, class_index).
        gt_boxes: [M, 4] xyxy, in the same pixel space as the predictions.
        gt_classes: [M] class indices.
        iou_thresholds: [T] IoU thresholds.
        matching: ``installed`` (ultralytics 8.4's ``match_predictions``) or ``reference``
            (:func:`reference_match_predictions`, 8.0.197).

    Returns:
        (tp [N, T] bool, scores [N], classes [N]), the predictions sorted by descending score
        (stable), which is the order the matching needs.
    """
    if matching not in ("installed", "reference"):
        raise ValueError(f"matching must be 'installed' or 'reference', got {matching!r}")
    tp, reference_tp, scores, classes = _match_both(predictions, gt_boxes, gt_classes, iou_thresholds,
                                                    installed=matching == "installed",
                                                    reference=matching == "reference")
    return (tp if matching == "installed" else reference_tp), scores, classes


def _match_both(predictions: torch.Tensor, gt_boxes: torch.Tensor, gt_classes: torch.Tensor,
                iou_thresholds: torch.Tensor, installed: bool = True,
                reference: bool = True) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray, np.ndarray]:
    """(tp of 8.4, tp of 8.0.197, scores, classes) of one image from one IoU matrix; a tp not asked for is None."""
    order = torch.argsort(predictions[:, 4], descending=True, stable=True)
    predictions = predictions[order].detach().cpu()  # [N, 6]
    scores, classes = predictions[:, 4].numpy().astype(np.float64), predictions[:, 5].numpy().astype(np.float64)
    num_thresholds = iou_thresholds.shape[0]
    if predictions.shape[0] == 0 or gt_boxes.shape[0] == 0:
        empty = np.zeros((predictions.shape[0], num_thresholds), dtype=bool)
        return (empty if installed else None), (empty.copy() if reference else None), scores, classes
    gt_boxes, gt_classes = gt_boxes.detach().cpu(), gt_classes.detach().cpu().reshape(-1)
    iou = ops.box_iou(gt_boxes, predictions[:, :4])  # [M, N] float32
    tp = reference_tp = None
    if installed:
        tp = ops.match_predictions(predictions[:, 5], gt_classes.to(predictions.dtype), iou,
                                                   iou_thresholds.cpu())  # [N, T]
    if reference:
        reference_tp = reference_match_predictions(predictions[:, 5].numpy(), gt_classes.to(predictions.dtype).numpy(),
                                                   iou.numpy(), iou_thresholds.cpu().numpy())  # [N, T]
    return tp, reference_tp, scores, classes


def evaluate_yolo_ap(predictions: Sequence[torch.Tensor], gt_boxes: Sequence[torch.Tensor],
                     gt_classes: Sequence[torch.Tensor], iou_thresholds: torch.Tensor = IOU_THRESHOLDS,
                     reference_predictions: Sequence[torch.Tensor] | None = None) -> dict[str, float | np.ndarray]:
    """Ultralytics-style detection metrics over a data set.

    Args:
        predictions: per image [N_i, 6] (x1, y1, x2, y2, score, class_index).
        gt_boxes: per image [M_i, 4] xyxy, same pixel space as the predictions.
        gt_classes: per image [M_i] class indices.
        iou_thresholds: [T] IoU thresholds; index 0 must be 0.5 and index 5 0.75 for the
            ``map50`` / ``map75`` entries to mean what they say.
        reference_predictions: per image the same detections (same rows) with their boxes clipped to the
            image, for the reference's (8.0.197) matching, which clips (module docstring); ``predictions`` are
            then the unclipped boxes 8.4 matches. None: ``predictions`` for both.

    Returns:
        dict with the scalars ``map50_95``, ``map50``, ``map75``, ``precision``, ``recall``
        (means over classes with labels; precision/recall at the max-mean-F1 confidence,
        0.0 when there are no labels) and the arrays over those C classes: ``class_index``
        [C], ``ap`` [C, T], ``ap50_95`` [C], ``ap50`` [C], ``precision_per_class`` [C],
        ``recall_per_class`` [C], ``f1_per_class`` [C], and for plotting ``recall_grid``
        [1000] and ``precision_curve`` [C, 1000] (precision vs recall at IoU 0.5), all from the installed
        ultralytics' matching and arithmetic. The reference's (8.0.197) matching
        (:func:`reference_match_predictions`) and arithmetic (:func:`reference_ap_per_class`): ``reference_ap``
        [C, T] with the scalars ``reference_map50_95`` / ``reference_map50`` / ``reference_map75``, and closed at
        recall 1: ``closed_ap`` and ``closed_map50_95`` / ``closed_map50`` / ``closed_map75``.
    """
    if not len(predictions) == len(gt_boxes) == len(gt_classes):
        raise ValueError(f"got {len(predictions)} prediction, {len(gt_boxes)} box and "
                         f"{len(gt_classes)} class entries; need one per image")
    if reference_predictions is not None and len(reference_predictions) != len(predictions):
        raise ValueError(f"got {len(reference_predictions)} reference prediction entries for "
                         f"{len(predictions)} images")
    num_thresholds = iou_thresholds.shape[0]
    tp_parts, reference_parts = [np.zeros((0, num_thresholds), bool)], [np.zeros((0, num_thresholds), bool)]
    score_parts, class_parts, target_parts = [], [], []
    for index, (image_predictions, image_boxes, image_classes) in enumerate(zip(predictions, gt_boxes, gt_classes)):
        if reference_predictions is None:
            tp, reference_tp, scores, classes = _match_both(image_predictions, image_boxes, image_classes,
                                                            iou_thresholds)
        else:
            clipped = reference_predictions[index]
            if clipped.shape[0] != image_predictions.shape[0] or not torch.equal(
                    clipped[:, 4:6].double().cpu(), image_predictions[:, 4:6].double().cpu()):
                raise ValueError(f"image {index}: reference_predictions must hold the same detections (scores, "
                                 "classes, rows) as predictions")
            # the stable sort by score orders both alike, so the rows of the two tp matrices are the same detections
            tp, _, scores, classes = _match_both(image_predictions, image_boxes, image_classes, iou_thresholds,
                                                 reference=False)
            _, reference_tp, _, _ = _match_both(clipped, image_boxes, image_classes, iou_thresholds, installed=False)
        tp_parts.append(tp)
        reference_parts.append(reference_tp)
        score_parts.append(scores)
        class_parts.append(classes)
        target_parts.append(image_classes.detach().cpu().reshape(-1).numpy().astype(np.float64))
    tp = np.concatenate(tp_parts, 0)  # [N, T]
    reference_tp = np.concatenate(reference_parts, 0)  # [N, T]
    scores = np.concatenate([np.zeros(0), *score_parts])  # [N]
    classes = np.concatenate([np.zeros(0), *class_parts])  # [N]
    targets = np.concatenate([np.zeros(0), *target_parts])  # [L]

    per_class = ops.ap_per_class(tp, scores, classes, targets)
    ap = per_class["ap"]  # [C, T]
    has_classes = ap.shape[0] > 0
    extra: dict[str, float | np.ndarray] = {}
    _, reference_ap, closed_ap = reference_ap_per_class(reference_tp, scores, classes, targets)
    for prefix, other in (("reference", reference_ap), ("closed", closed_ap)):
        extra[f"{prefix}_ap"] = other
        extra[f"{prefix}_map50_95"] = float(other.mean()) if has_classes else 0.0
        extra[f"{prefix}_map50"] = float(other[:, 0].mean()) if has_classes else 0.0
        extra[f"{prefix}_map75"] = float(other[:, 5].mean()) if has_classes and num_thresholds > 5 else 0.0
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
        **extra,
    }


def score_yolo_ap(predictions: Predictions, spec: object = None, backend: str = "pycocotools") -> Score:
    """The ultralytics protocol of a pass: ``yolo_map50_95``, ``yolo_map50`` (the installed 8.4's matching and AP),
    ``reference_map50_95``, ``reference_map50`` (the reference's 8.0.197 matching and AP), ``precision``, ``recall``.

    Args:
        predictions: the pass; scored against its ground truth in original pixels, 8.4's figures with its
            ``unclipped_boxes`` (when it kept them), the reference's with its clipped ``detections``.
        spec, backend: unused (the evaluator signature).

    Returns:
        Score with those metrics and the full :func:`evaluate_yolo_ap` dict (per-class arrays, PR curve).
    """
    detections, clipped = predictions.detections, None
    if predictions.unclipped_boxes is not None:   # 8.4 matches the unclipped boxes, 8.0.197 the clipped ones
        detections, clipped = [torch.cat((boxes.to(dets.dtype), dets[:, 4:6]), 1)
                               for boxes, dets in zip(predictions.unclipped_boxes, predictions.detections)], detections
    result = evaluate_yolo_ap(detections, predictions.gt_xyxy(), predictions.gt_classes, reference_predictions=clipped)
    metrics = {"yolo_map50_95": float(result["map50_95"]), "yolo_map50": float(result["map50"]),
               "reference_map50_95": float(result["reference_map50_95"]),
               "reference_map50": float(result["reference_map50"]),
               "precision": float(result["precision"]), "recall": float(result["recall"])}
    return Score(metrics=metrics, result=result)
