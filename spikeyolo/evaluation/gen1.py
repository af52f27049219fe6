"""Event-camera evaluation protocols: the SpikeYOLO reference's, Prophesee's (psee toolbox / RVT) and Cordone et al.'s,
for Gen1 (:data:`GEN1_PROTOCOLS`) and, with the 1 Megapixel camera's settings, for Gen4 (:data:`GEN4_PROTOCOLS`).

Published Gen1 mAPs are computed three different ways; a number means something only with its protocol.

``spikeyolo``  reference ``SpikeYOLO_for_Gen1`` (training-and-eval reference §6): every sample of the val split
               (the test folder), labels cleaned up by ``pre_gen1.py`` (last box per track, clamped, no size
               filter), the reference's ultralytics (8.0.197) matching and 101-point AP
               (:func:`~spikeyolo.evaluation.ap.reference_match_predictions`,
               :func:`~spikeyolo.evaluation.ap.reference_ap_per_class`) closed at recall 1; the
               bit-for-bit reference value (a perfect detector: 0.995) is ``reference_map50[_95]``.
``prophesee``  the prophesee-automotive-dataset-toolbox evaluator (``coco_eval.evaluate_detection`` after
               ``box_filtering.filter_boxes``) with the settings RVT passes for Gen1 (``evaluate_list(...,
               camera='gen1')``): the label file's boxes as they are, ``filter_boxes`` on ground truth and
               detections alike (t > 0.5 s, diagonal >= 30 px, both sides >= 10 px), one COCO image per
               (recording, label time) that keeps a box, detections within +-50 ms of it, pycocotools. (The
               toolbox's own command line, ``psee_evaluator.py --camera GEN1``, skips only t <= 0.1 s and keeps sides
               >= 20 px.)
``cordone``    Cordone et al. 2022 (loiccordone/object-detection-with-spiking-neural-networks): labels with both
               corners clamped (last box per track, w/h = 0 dropped), samples without a box or without an event
               in the model's window dropped, then ``filter_boxes`` (diagonal >= 30 px, both sides >= 20 px) on
               ground truth and detections, pycocotools over all remaining samples (annotation ids from 1, below).
               Their 100 ms is their model's input window (``sample_size``), not part of the metric: every
               protocol scores the detections of one pass at the model's own window.

On the 1 Megapixel camera (1280x720):

``prophesee_gen4``  RVT's evaluation of the 1Mpx dataset (``evaluate_list(..., camera='gen4',
               downsampled_by_2=True)``): the toolbox's ``filter_boxes`` defaults, which are its 1Mpx thresholds
               (t > 0.5 s, diagonal >= 60 px, sides >= 20 px at 1280x720), applied at the size RVT evaluates,
               640x360 (boxes halved, thresholds 30 and 10); RVT's ground truth (classes 0-2, cropped to
               [0, W - 1] x [0, H - 1], sides >= 5 px; halved with the far corner clamped to 639 x 359); each label
               frame scored with its own detections; pycocotools.
``spikeyolo_gen4``  the ``spikeyolo`` metric (8.0.197 matching and AP) on the labels the gen4 pipeline trains on
               (RVT's ground truth above, no size or time filter): the project's own protocol, on this camera.

Cordone et al. evaluated Gen1 only; their filter is Gen1's, so there is no gen4 variant.

Samples are scored in (recording, label time) order whatever order they are passed in, so tied scores give one
result. The COCO protocols do their box arithmetic (widths, the size filter, COCO areas) in float32, as the
originals do on their float32 box fields; the ``spikeyolo`` protocols keep the boxes they are given (float64 from
float32 detections is exact) and compute IoU in float32 as ultralytics. Cordone's code numbers annotations
from 0, and pycocotools reads a detection matched to annotation 0 as unmatched (a false positive that leaves
its box unfound); here annotations are numbered from 1.

:func:`score_gen1` is the evaluator of an inference pass over an event loader: the pass's
:class:`~spikeyolo.structures.Predictions` carry the dataset's ``EventSample`` records.

See docs/events.md ("Gen1 evaluation protocols", "The 1 Megapixel dataset") for the sources, the settings and the
measured differences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from spikeyolo.data import postprocess_boxes
from spikeyolo.data.events.cameras import GEN1, GEN4, Camera
from spikeyolo.data.sources.prophesee.labels import drop_classes
from spikeyolo.evaluation.ap import evaluate_yolo_ap
from spikeyolo.evaluation.coco import STAT_NAMES, evaluate_coco
from spikeyolo.structures import Predictions, Score

__all__ = ["EventProtocol", "camera_protocols", "GEN1_PROTOCOLS", "GEN4_PROTOCOLS", "PROTOCOLS", "get_protocol",
           "protocol_ground_truth", "evaluate_gen1", "score_gen1"]

#: RVT's conservative filter of its 1Mpx ground truth: sides >= 5 px (preprocess_dataset.py L213-219, used since
#: its filter_gen4.yaml sets apply_psee_bbox_filter: False, L282-285).
RVT_MIN_SIDE = 5.0


@dataclass(frozen=True)
class EventProtocol:
    """What one event-camera protocol scores, on one camera (``camera``: its class names, sensor size and the
    field's box filter, from the catalog :mod:`spikeyolo.data.events.cameras`).

    Attributes:
        name: ``spikeyolo``, ``prophesee``, ``cordone``, ``prophesee_gen4`` or ``spikeyolo_gen4``.
        ground_truth: ``reference`` / ``corners`` (:func:`~spikeyolo.data.postprocess_boxes` with that
            clamp), ``raw`` (the label file's boxes at that time, untouched) or ``rvt`` (RVT's 1Mpx ground truth:
            classes below ``keep_classes``, corners clamped to [0, W - 1] x [0, H - 1], sides >= 5 px, in float32).
        metric: ``ultralytics`` (the reference's 101-point AP of matched predictions) or ``coco`` (pycocotools).
        skip_us: boxes (ground truth and detections) at t <= skip_us are dropped; None keeps all.
        min_diag, min_side: boxes (ground truth and detections) with a smaller diagonal or side are dropped; in
            sensor pixels (with ``scale``, compared at the scaled size against ``min_diag * scale``).
        time_tol_us: None: one image per sample, scored against its own detections. Otherwise the psee
            matching: one image per recording time that keeps a ground-truth box, with the detections of that
            recording within +-time_tol_us (inclusive; 0: its own).
        drop_empty: samples without a ground-truth box (before the size filter) or without events are dropped.
        float32_boxes: box widths, the size filter and COCO areas in float32 (detection width = x2 - x1 in
            float32), as the originals compute them on float32 box fields; otherwise in float64.
        scale: the size boxes are scored at, relative to the sensor (RVT's 1Mpx: 0.5, 640x360): detections and
            ground truth are multiplied by it, the ground truth's far corner clamped to ``size * scale - 1`` and
            boxes left flat dropped (RVT's ``ObjectLabels.scale_``); COCO's area ranges then count scaled pixels.
        keep_classes: ``rvt`` ground truth: class ids below it are kept (RVT's 1Mpx: 3).
        camera: the camera the protocol scores: its class names (COCO categories 1..C) and its sensor size (the
            COCO image size when no sample gives one).
    """

    name: str
    ground_truth: str
    metric: str
    skip_us: int | None = None
    min_diag: float = 0.0
    min_side: float = 0.0
    time_tol_us: int | None = None
    drop_empty: bool = False
    float32_boxes: bool = False
    scale: float = 1.0
    keep_classes: int | None = None
    camera: Camera = GEN1

    @classmethod
    def prophesee(cls, name: str, camera: Camera, **settings: Any) -> "EventProtocol":
        """The psee toolbox's evaluation on ``camera``: COCO metric, float32 boxes and the camera's box filter
        (:attr:`~spikeyolo.data.events.cameras.Camera.box_filter`: skip_us, min_diag, min_side) unless
        ``settings`` give them."""
        box_filter = camera.box_filter
        defaults = {"metric": "coco", "skip_us": box_filter.skip_us, "min_diag": box_filter.min_diag,
                    "min_side": box_filter.min_side, "float32_boxes": True}
        return cls(name, camera=camera, **{**defaults, **settings})


GEN1_PROTOCOLS: dict[str, EventProtocol] = {
    "spikeyolo": EventProtocol("spikeyolo", ground_truth="reference", metric="ultralytics"),
    "prophesee": EventProtocol.prophesee("prophesee", GEN1, ground_truth="raw", time_tol_us=50_000),
    "cordone": EventProtocol("cordone", ground_truth="corners", metric="coco", min_diag=30.0, min_side=20.0,
                            drop_empty=True, float32_boxes=True),
}
#: The 1 Megapixel camera: RVT's evaluation (utils/evaluation/prophesee/evaluation.py L22-38 with camera='gen4',
#: downsampled_by_2=True: the toolbox's filter_boxes defaults (box_filtering.py L23: skip 0.5 s, diagonal 60,
#: side 20) halved with the boxes) and the project's own metric on the same labels.
GEN4_PROTOCOLS: dict[str, EventProtocol] = {
    "spikeyolo_gen4": EventProtocol("spikeyolo_gen4", ground_truth="rvt", metric="ultralytics", keep_classes=3,
                                   camera=GEN4),
    "prophesee_gen4": EventProtocol.prophesee("prophesee_gen4", GEN4, ground_truth="rvt", time_tol_us=0, scale=0.5,
                                              keep_classes=3),
}
#: Every protocol by name (the evaluator registry serves each).
PROTOCOLS: dict[str, EventProtocol] = {**GEN1_PROTOCOLS, **GEN4_PROTOCOLS}


def camera_protocols(camera: Camera | str) -> dict[str, EventProtocol]:
    """The protocols that score one camera (a :class:`Camera` or its name), by name."""
    name = camera if isinstance(camera, str) else camera.name
    return {key: protocol for key, protocol in PROTOCOLS.items() if protocol.camera.name == name}


def get_protocol(protocol: str | EventProtocol) -> EventProtocol:
    """A protocol by name (or the protocol itself)."""
    if isinstance(protocol, EventProtocol):
        return protocol
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown event protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[protocol]


def protocol_ground_truth(protocol: str | EventProtocol, sample: Any) -> np.ndarray:
    """The ground-truth boxes of a sample under a protocol, before its size / time filter (at the scored size).

    Args:
        sample: an ``EventSample`` (``boxes`` raw, ``width``, ``height``).

    Returns:
        [M] boxes in the sample's box dtype (``BOX_DTYPE``), multiplied by ``protocol.scale``.
    """
    protocol = get_protocol(protocol)
    if protocol.ground_truth == "rvt":
        boxes = drop_classes(sample.boxes, protocol.keep_classes if protocol.keep_classes is not None else 256)
        boxes = postprocess_boxes(boxes, width=sample.width, height=sample.height, clamp="rvt", min_size=RVT_MIN_SIDE)
        return _scale_rvt(boxes, protocol.scale, sample.width, sample.height)
    if protocol.ground_truth == "raw":
        return sample.boxes
    if protocol.ground_truth == "corners" and protocol.float32_boxes:
        return _corner_boxes_float32(sample.boxes, sample.width, sample.height)
    return postprocess_boxes(sample.boxes, width=sample.width, height=sample.height, clamp=protocol.ground_truth)


def _corner_boxes_float32(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Last box per track, both corners clamped to the sensor, w or h = 0 dropped, in float32 throughout.

    As Cordone et al.'s ``create_targets``: x2 = x + w in float32, then w = clamp(x2) - clamp(x) in float32, so a
    width can differ from the file's by a float32 rounding (which matters at the size filter's bounds). Boxes are
    in the order of each track's last box.
    """
    boxes = np.asarray(boxes)
    if len(boxes):
        _, first_in_reversed = np.unique(boxes["track_id"][::-1], return_index=True)
        boxes = boxes[np.sort(len(boxes) - 1 - first_in_reversed)]
    x, y = boxes["x"], boxes["y"]                                     # float32
    x1, x2 = np.clip(x, 0, width), np.clip(x + boxes["w"], 0, width)
    y1, y2 = np.clip(y, 0, height), np.clip(y + boxes["h"], 0, height)
    w, h = (x2 - x1).astype(np.float32), (y2 - y1).astype(np.float32)
    keep = (w != 0) & (h != 0)
    out = boxes[keep]                                                 # a copy (boolean index)
    out["x"], out["y"], out["w"], out["h"] = x1[keep], y1[keep], w[keep], h[keep]
    return out


def _scale_rvt(boxes: np.ndarray, scale: float, width: int, height: int) -> np.ndarray:
    """RVT's ``ObjectLabels.scale_`` (data/genx_utils/labels.py L316-334) in float32: x2 = min((x + w) * s, W * s - 1),
    x = x * s, w = x2 - x (likewise y), then boxes with w or h <= 0 dropped."""
    if scale == 1.0:
        return boxes
    factor = np.float32(scale)
    x2 = np.minimum((boxes["x"] + boxes["w"]) * factor, np.float32(width * scale - 1))
    y2 = np.minimum((boxes["y"] + boxes["h"]) * factor, np.float32(height * scale - 1))
    x, y = boxes["x"] * factor, boxes["y"] * factor
    w, h = x2 - x, y2 - y
    keep = (w > 0) & (h > 0)
    out = boxes[keep]                                                 # a copy (boolean index)
    out["x"], out["y"], out["w"], out["h"] = x[keep], y[keep], w[keep], h[keep]
    return out


def _keep(protocol: EventProtocol, t_us: int, xywh: np.ndarray) -> np.ndarray:
    """psee ``filter_boxes``: (t > skip) & (w^2 + h^2 >= diag^2) & (w >= side) & (h >= side), in xywh's dtype.

    Args:
        xywh: [N, 4] float32 or float64 at the scored size; in float32 the squares, their sum and the comparisons
            stay float32 (the bounds 30^2 = 900, 10 and 20, the 1Mpx ones halved included, are exact in float32),
            as numpy computes them on the toolbox's float32 box fields.
    """
    width, height = xywh[:, 2], xywh[:, 3]
    bound = xywh.dtype.type
    diag, side = protocol.min_diag * protocol.scale, protocol.min_side * protocol.scale
    keep = (width ** 2 + height ** 2 >= bound(diag ** 2)) & (width >= bound(side)) & (height >= bound(side))
    if protocol.skip_us is not None and t_us <= protocol.skip_us:
        keep[:] = False
    return keep


def _frame_rows(protocol: EventProtocol, samples: Sequence[Any], detections: Sequence[Any]):
    """Per kept sample, in (recording, t) order: (recording, t, gt xywh [M, 4], gt class [M], det xywh [N, 4],
    det score [N], det class [N]); boxes in float32 or float64 (``protocol.float32_boxes``)."""
    if len(samples) != len(detections):
        raise ValueError(f"{len(samples)} samples but {len(detections)} detection entries")
    box_type = np.float32 if protocol.float32_boxes else np.float64
    rows = []
    for index in sorted(range(len(samples)), key=lambda i: (str(samples[i].recording), int(samples[i].t_us))):
        sample = samples[index]
        gt = protocol_ground_truth(protocol, sample)
        if protocol.drop_empty and (len(gt) == 0 or sample.num_events == 0):
            continue
        gt_xywh = np.stack((gt["x"], gt["y"], gt["w"], gt["h"]), axis=1).astype(box_type).reshape(-1, 4)
        gt_keep = _keep(protocol, sample.t_us, gt_xywh)
        dets = torch.as_tensor(detections[index]).detach().cpu().reshape(-1, 6)   # x1 y1 x2 y2 score class
        corners = dets[:, :4].numpy().astype(box_type)                             # float64 of float32: exact
        if protocol.scale != 1.0:
            corners = corners * box_type(protocol.scale)                           # a power of 2: exact
        det_xywh = np.concatenate((corners[:, :2], corners[:, 2:] - corners[:, :2]), axis=1)   # [N, 4]
        det_keep = _keep(protocol, sample.t_us, det_xywh)
        scores = dets[:, 4].double().numpy()
        rows.append((sample.recording, int(sample.t_us), gt_xywh[gt_keep], gt["class_id"][gt_keep].astype(np.int64),
                     det_xywh[det_keep], scores[det_keep], dets[det_keep, 5].numpy().astype(np.int64)))
    return rows


def _images(protocol: EventProtocol, rows: list) -> list[tuple[str, int, tuple, tuple]]:
    """COCO images: (recording, t, (gt xywh, gt class), (det xywh, score, class))."""
    if protocol.time_tol_us is None:
        return [(rec, t, (gx, gc), (dx, ds, dc)) for rec, t, gx, gc, dx, ds, dc in rows]
    images = []
    recordings: dict[str, list] = {}
    for row in rows:      # rows come in (recording, t) order
        recordings.setdefault(row[0], []).append(row)
    for recording, recording_rows in recordings.items():
        det_times = np.array([row[1] for row in recording_rows], np.int64)
        for _, t_us, gt_xywh, gt_class, *_ in recording_rows:
            if len(gt_xywh) == 0:   # psee: only times that keep at least one ground-truth box are images
                continue
            near = [recording_rows[i] for i in np.flatnonzero(np.abs(det_times - t_us) <= protocol.time_tol_us)]
            dets = (np.concatenate([row[4] for row in near]).reshape(-1, 4), np.concatenate([row[5] for row in near]),
                    np.concatenate([row[6] for row in near]))
            images.append((recording, t_us, (gt_xywh, gt_class), dets))
    return images


def _coco_metrics(images: list, names: Sequence[str], width: int, height: int, backend: str,
                  zero_without_detections: bool = False) -> dict[str, float]:
    """pycocotools over the images; annotation ids from 1 (pycocotools takes a match to id 0 for none).

    With ``zero_without_detections`` (the toolbox's ``evaluate_detection``, i.e. the ``prophesee`` protocols), no
    detection in any image gives every stat 0.0 without running COCOeval, as the toolbox's ``_coco_eval`` returns
    its six APs (uzh-rpg/RVT ``b80f5683a6e2d5de65d4bde8105d796ccb50dbb1``,
    ``utils/evaluation/prophesee/metrics/coco_eval.py`` L104-115: "Corner case at the very beginning of the
    training"); this includes no image at all (no frame keeps a ground-truth box), where pycocotools' mAP would
    be -1 ("undefined"). The six recalls, which RVT does not report, are 0.0 too.

    Areas are computed in the boxes' dtype: the ground truth's here (``w * h``), the detections' by pycocotools
    from the bbox values, which are passed as numpy scalars of that dtype (float32 for the COCO protocols, as the
    toolbox's box fields). faster-coco-eval gives the same numbers on tests/fixtures/events/protocol_cases.json
    (to 2.2e-16), float32 area bounds included.
    """
    if zero_without_detections and not any(len(image[3][0]) for image in images):
        return {name: 0.0 for name in STAT_NAMES}
    coco_images, annotations, results = [], [], []
    for image_id, (recording, t_us, (gt_xywh, gt_class), (det_xywh, det_score, det_class)) in enumerate(images, 1):
        coco_images.append({"id": image_id, "file_name": f"{recording}@{t_us}", "height": height, "width": width})
        for box, cls in zip(gt_xywh, gt_class.tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(cls) + 1,
                                "bbox": box.tolist(), "area": float(box[2] * box[3]), "iscrowd": 0})
        for box, score, cls in zip(det_xywh, det_score.tolist(), det_class.tolist()):
            results.append({"image_id": image_id, "category_id": int(cls) + 1, "bbox": list(box), "score": score})
    categories = [{"id": index + 1, "name": str(name)} for index, name in enumerate(names)]
    result = evaluate_coco({"images": coco_images, "annotations": annotations, "categories": categories}, results,
                           backend=backend)
    return {name: float(getattr(result, name)) for name in STAT_NAMES}


def _yolo_metrics(images: list) -> dict[str, float]:
    def xyxy(xywh: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.concatenate((xywh[:, :2], xywh[:, :2] + xywh[:, 2:]), axis=1).reshape(-1, 4))

    predictions = [torch.cat((xyxy(dx), torch.from_numpy(np.stack((ds, dc.astype(np.float64)), axis=1)
                                                         .reshape(-1, 2))), 1) for _, _, _, (dx, ds, dc) in images]
    result = evaluate_yolo_ap(predictions, [xyxy(gx) for _, _, (gx, _), _ in images],
                              [torch.from_numpy(gc) for _, _, (_, gc), _ in images])
    # the reference's AP arithmetic (ultralytics 8.0.197), closed at recall 1 (a perfect detector scores 1.0),
    # and bit for bit as the reference (0.995 at most); precision / recall at the max-F1 confidence
    metrics = {name: float(result[f"closed_{name}"]) for name in ("map50_95", "map50", "map75")}
    metrics.update({f"reference_{name}": float(result[f"reference_{name}"]) for name in ("map50_95", "map50")})
    metrics.update({name: float(result[name]) for name in ("precision", "recall")})
    return metrics


def evaluate_gen1(protocol: str | EventProtocol, samples: Sequence[Any], detections: Sequence[Any],
                  names: Sequence[str] | None = None, backend: str = "pycocotools") -> dict[str, Any]:
    """Score detections of event samples under one protocol.

    Args:
        protocol: a name of :data:`PROTOCOLS` or a :class:`EventProtocol`.
        samples: [S] ``EventSample`` (recording, t_us, raw boxes, num_events, size), e.g. an event loader's
            ``dataset.samples``; scored in (recording, t_us) order, whatever order they come in.
        detections: [S] per sample [N, 6] (x1, y1, x2, y2, score, class index) in sensor pixels.
        names: class names (class index i is COCO category i + 1); None: the protocol's camera's
            (``protocol.camera.names``).
        backend: pycocotools or faster (``coco`` metric).

    Returns:
        {"protocol", "metric", "images", "gt_boxes", "detections"} plus, for ``coco``, the 12 COCOeval stats
        (map50_95, map50, ...), for ``ultralytics`` map50_95, map50, map75 (closed at recall 1),
        reference_map50_95, reference_map50 (the reference's values bit for bit), precision, recall.
    """
    protocol = get_protocol(protocol)
    names = tuple(names) if names is not None else protocol.camera.names
    images = _images(protocol, _frame_rows(protocol, samples, detections))
    counts = {"images": len(images), "gt_boxes": int(sum(len(image[2][0]) for image in images)),
              "detections": int(sum(len(image[3][0]) for image in images))}
    if protocol.metric == "coco":
        width = round(max((s.width for s in samples), default=protocol.camera.width) * protocol.scale)
        height = round(max((s.height for s in samples), default=protocol.camera.height) * protocol.scale)
        metrics = _coco_metrics(images, names, width, height, backend,
                                zero_without_detections=protocol.time_tol_us is not None)
    else:
        metrics = _yolo_metrics(images)
    return {"protocol": protocol.name, "metric": protocol.metric, **metrics, **counts}


def score_gen1(protocol: str | EventProtocol, predictions: Predictions, spec: Any = None,
               backend: str = "pycocotools") -> Score:
    """One event protocol of a pass over an event loader (its ``samples``, detections in sensor pixels).

    Args:
        protocol: a name of :data:`PROTOCOLS` or a :class:`EventProtocol`.
        predictions: the pass; ``samples`` must hold the dataset's ``EventSample`` records.
        spec: the dataset (its ``names``); None: the protocol's camera's names.
        backend: pycocotools or faster (``coco`` metric).

    Returns:
        Score whose metrics are :func:`evaluate_gen1`'s dict.

    Raises:
        ValueError: the pass carries no event samples (not a Gen1 / Gen4 loader).
    """
    if predictions.samples is None:
        raise ValueError(f"the event protocol {get_protocol(protocol).name!r} scores Gen1 samples (or 1Mpx ones); "
                         f"this loader's dataset has none (list it among the evaluators of Gen1 / Gen4 data configs "
                         f"only)")
    names = tuple(spec.names) if spec is not None else None
    metrics = evaluate_gen1(protocol, predictions.samples, predictions.detections, names, backend)
    return Score(metrics=metrics)
