"""COCO-style detection evaluation (the official protocol, via pycocotools or faster-coco-eval).

``evaluate_coco`` runs ``COCOeval`` on a ground-truth instances file and a
results file and returns a :class:`CocoResult`: the 12 standard numbers by
name and a per-class AP table read from ``eval['precision']``.

Two backends compute the same protocol:

- ``"pycocotools"`` (default): the reference implementation.
- ``"faster"``: faster-coco-eval's C++ ``COCOeval_faster`` (optional extra
  ``spikeyolo[fast]``). Not bit-identical: on the 100-image val2014 fixture
  (1.8.0) the 12 stats agree to 1 ulp (1.1e-16, AP50 only) and the per-class
  AP to 2 ulp (2.2e-16); see tests/test_evaluation.py.

``score_coco`` is the evaluator of an inference pass (:class:`~spikeyolo.structures.Predictions`): its
detections as COCO results against the dataset's COCO json, or against a COCO ground truth built from the
labels the pass read (:func:`coco_gt_from_labels`) when the dataset has none.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from spikeyolo.data import DatasetSpec, coco_image_ids
from spikeyolo.evaluation.predictions import to_coco_results
from spikeyolo.structures import Predictions, Score

__all__ = ["STAT_NAMES", "BACKENDS", "ClassAP", "CocoResult", "evaluate_coco", "coco_gt_from_labels", "score_coco"]

# The order of COCOeval.stats for iou_type "bbox" / "segm".
STAT_NAMES: tuple[str, ...] = (
    "map50_95", "map50", "map75", "map_small", "map_medium", "map_large",
    "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large",
)
BACKENDS: tuple[str, ...] = ("pycocotools", "faster")
_IOU_TYPES: tuple[str, ...] = ("bbox", "segm")

PathLike = str | os.PathLike


@dataclass(frozen=True)
class ClassAP:
    """AP of one category (area "all", 100 detections per image).

    Attributes:
        category_id: the COCO category id (non-contiguous, e.g. 1..90).
        name: the category name from the ground truth.
        num_gt: number of non-crowd ground-truth instances of the category.
        ap50_95: AP averaged over IoU 0.50:0.05:0.95; None when the category has no
            non-crowd ground truth (COCOeval leaves such categories out of the mean).
        ap50: AP at IoU 0.50; None likewise.
    """

    category_id: int
    name: str
    num_gt: int
    ap50_95: float | None
    ap50: float | None


@dataclass
class CocoResult:
    """The outcome of one COCO evaluation.

    Attributes:
        map50_95 ... ar_large: the 12 COCOeval numbers (see ``STAT_NAMES`` for the order).
        stats: the same 12 numbers as a list, in COCOeval order.
        per_class: one :class:`ClassAP` per ground-truth category, in category-id order.
        backend: which backend computed it.
        summary: the text COCOeval's ``summarize()`` prints.
    """

    map50_95: float
    map50: float
    map75: float
    map_small: float
    map_medium: float
    map_large: float
    ar1: float
    ar10: float
    ar100: float
    ar_small: float
    ar_medium: float
    ar_large: float
    stats: list[float]
    per_class: list[ClassAP] = field(default_factory=list)
    backend: str = "pycocotools"
    summary: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain, json-serialisable dict of everything (per_class as a list of dicts)."""
        return asdict(self)

    def table(self, markdown: bool = True) -> str:
        """Per-class AP table; a Markdown table, or aligned plain text when ``markdown`` is False."""
        header = ("id", "name", "num_gt", "AP50:95", "AP50")
        rows = [(str(row.category_id), row.name, str(row.num_gt), _fmt(row.ap50_95), _fmt(row.ap50))
                for row in self.per_class]
        rows.append(("", "all", str(sum(row.num_gt for row in self.per_class)),
                     _fmt(self.map50_95), _fmt(self.map50)))
        if markdown:
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(row) + " |" for row in rows]
            return "\n".join(lines)
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
        return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                         for row in (header, *rows))


def evaluate_coco(gt: PathLike | dict, detections: PathLike | Sequence[dict], backend: str = "pycocotools",
                  iou_type: str = "bbox", verbose: bool = False) -> CocoResult:
    """Evaluate detections against COCO ground truth with the official COCOeval protocol.

    Args:
        gt: path to a COCO instances json, or the loaded dict (not modified).
        detections: path to a COCO results json, or a list of result dicts
            ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` (not modified).
            An empty list is valid and gives all-zero numbers.
        backend: ``"pycocotools"`` or ``"faster"`` (faster-coco-eval).
        iou_type: ``"bbox"`` or ``"segm"``.
        verbose: print COCOeval's progress and summary (quiet by default).

    Returns:
        the :class:`CocoResult`.

    Raises:
        ValueError: unknown backend/iou_type, a detection whose image_id or category_id is
            not in the ground truth, or a detection without the required keys.
        ImportError: backend "faster" without faster-coco-eval installed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if iou_type not in _IOU_TYPES:
        raise ValueError(f"iou_type must be one of {_IOU_TYPES}, got {iou_type!r}")
    gt_dataset = _copy_gt(_load_json(gt) if not isinstance(gt, dict) else gt)
    results = _load_json(detections) if isinstance(detections, (str, os.PathLike)) else detections
    if not isinstance(results, (list, tuple)):
        raise ValueError(f"detections must be a list of result dicts, got {type(results).__name__}")
    # COCO.loadRes writes id/area/iscrowd/segmentation into each dict: work on copies.
    results = [dict(result) for result in results]
    _check_results(results, gt_dataset, iou_type)

    run = _run_pycocotools if backend == "pycocotools" else _run_faster
    cocoeval, summary = run(gt_dataset, results, iou_type, verbose)
    stats = [float(value) for value in cocoeval.stats[: len(STAT_NAMES)]]
    per_class = _per_class_ap(cocoeval.eval["precision"], cocoeval.params, gt_dataset)
    return CocoResult(**dict(zip(STAT_NAMES, stats)), stats=stats, per_class=per_class,
                      backend=backend, summary=summary)


def coco_gt_from_labels(predictions: Predictions, category_ids: Sequence[int], names: Sequence[str]) -> dict:
    """A COCO ground-truth dict from the labels a pass read (normalised cx cy w h) and the image shapes.

    Image ids are the sample positions 0..S-1, annotation ids count from 1, boxes are
    ``[(cx - w / 2) * W, (cy - h / 2) * H, w * W, h * H]`` in float64.
    """
    images, annotations = [], []
    for image_id, (im_file, (height, width), boxes, classes) in enumerate(
            zip(predictions.im_files, predictions.shapes, predictions.gt_boxes, predictions.gt_classes)):
        images.append({"id": image_id, "file_name": Path(im_file).name, "height": int(height), "width": int(width)})
        for (cx, cy, w, h), cls_index in zip(boxes.tolist(), classes.tolist()):
            box = [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id":
                                int(category_ids[int(cls_index)]), "bbox": box, "area": box[2] * box[3],
                                "iscrowd": 0})
    categories = [{"id": int(cid), "name": str(name)} for cid, name in zip(category_ids, names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def score_coco(predictions: Predictions, spec: DatasetSpec, backend: str = "pycocotools") -> Score:
    """The COCO protocol of a pass: the 12 COCOeval stats (``map50_95`` ... ``ar_large``).

    Args:
        predictions: the pass (detections in original pixels).
        spec: the dataset: ``val_json`` (scored against it, images by file name) or none (a COCO ground truth
            from the labels the pass read), ``category_ids`` (class index -> COCO id; default 1..num_classes),
            ``names``.
        backend: ``pycocotools`` or ``faster``.

    Returns:
        Score with the stats as metrics, the :class:`CocoResult` and the COCO result dicts as records.
    """
    category_ids = list(spec.category_ids) if spec.category_ids else list(range(1, spec.num_classes + 1))
    if spec.val_json is not None:
        ids_by_name = coco_image_ids(spec)
        image_ids = [ids_by_name[Path(f).name] for f in predictions.im_files]
        gt: Any = str(spec.val_json)
    else:
        gt = coco_gt_from_labels(predictions, category_ids, spec.names)
        image_ids = list(range(predictions.images))
    results = to_coco_results(predictions.detections, image_ids, category_ids)
    coco = evaluate_coco(gt, results, backend=backend)
    metrics = {k: float(v) for k, v in coco.to_dict().items() if isinstance(v, (int, float))}
    return Score(metrics=metrics, result=coco, records=results)


# --------------------------------------------------------------------------- backends


def _run_pycocotools(gt_dataset: dict, results: list[dict], iou_type: str, verbose: bool) -> tuple[Any, str]:
    """Run pycocotools' COCOeval; returns (evaluated COCOeval, summary text)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        coco_gt = _pycocotools_index(COCO(), gt_dataset)
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:  # loadRes indexes results[0]: build the empty result set by hand
            empty = {"images": list(gt_dataset["images"]), "categories": list(gt_dataset["categories"]),
                     "annotations": []}
            coco_dt = _pycocotools_index(COCO(), empty)
        cocoeval = COCOeval(coco_gt, coco_dt, iou_type)
        cocoeval.evaluate()
        cocoeval.accumulate()
    summary_buffer = io.StringIO()
    with contextlib.redirect_stdout(summary_buffer):
        cocoeval.summarize()
    summary = summary_buffer.getvalue()
    if verbose:
        print(summary, end="")
    return cocoeval, summary


def _pycocotools_index(coco: Any, dataset: dict) -> Any:
    """Attach a dataset dict to an empty pycocotools COCO object and index it."""
    coco.dataset = dataset
    coco.createIndex()
    return coco


def _run_faster(gt_dataset: dict, results: list[dict], iou_type: str, verbose: bool) -> tuple[Any, str]:
    """Run faster-coco-eval's COCOeval_faster; returns (evaluated COCOeval, summary text)."""
    try:
        from faster_coco_eval import COCO, COCOeval_faster
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("backend='faster' needs faster-coco-eval: pip install 'spikeyolo[fast]' "
                          "(or pip install faster-coco-eval)") from error

    def silent(*args: Any, **kwargs: Any) -> None:
        return None

    progress = print if verbose else silent
    coco_gt = COCO(gt_dataset, print_function=progress)
    coco_dt = coco_gt.loadRes(results)  # handles an empty list itself
    cocoeval = COCOeval_faster(coco_gt, coco_dt, iou_type, print_function=progress)
    cocoeval.evaluate()
    cocoeval.accumulate()
    lines: list[str] = []
    cocoeval.print_function = lambda *args, **kwargs: lines.append(" ".join(str(arg) for arg in args))
    cocoeval.summarize()
    summary = "".join(line + "\n" for line in lines)
    if verbose:
        print(summary, end="")
    return cocoeval, summary


# --------------------------------------------------------------------------- helpers


def _per_class_ap(precision: np.ndarray, params: Any, gt_dataset: dict) -> list[ClassAP]:
    """Per-category AP50:95 and AP50 at area "all" and the largest maxDets.

    Args:
        precision: COCOeval ``eval['precision']``, [T iou thresholds, R recall thresholds,
            K categories, A area ranges, M maxDets]; -1 marks "no ground truth".
        params: the COCOeval params (``catIds``, ``iouThrs``, ``areaRngLbl``, ``maxDets``).
        gt_dataset: the ground truth (for names and instance counts).
    """
    names = {int(cat["id"]): str(cat.get("name", cat["id"])) for cat in gt_dataset["categories"]}
    num_gt: dict[int, int] = {}
    for ann in gt_dataset["annotations"]:
        if not ann.get("iscrowd", 0):
            num_gt[int(ann["category_id"])] = num_gt.get(int(ann["category_id"]), 0) + 1
    area_all = list(params.areaRngLbl).index("all")
    iou50 = int(np.argmin(np.abs(np.asarray(params.iouThrs) - 0.5)))
    table = []
    for k, category_id in enumerate(params.catIds):
        category_id = int(category_id)
        per_iou = precision[:, :, k, area_all, -1]  # [T, R]
        table.append(ClassAP(category_id=category_id, name=names.get(category_id, str(category_id)),
                             num_gt=num_gt.get(category_id, 0), ap50_95=_valid_mean(per_iou),
                             ap50=_valid_mean(per_iou[iou50])))
    return table


def _valid_mean(values: np.ndarray) -> float | None:
    """Mean over entries > -1 (COCOeval's "no ground truth" marker); None when there are none."""
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else None


def _check_results(results: list[dict], gt_dataset: dict, iou_type: str) -> None:
    """Raise ValueError for result dicts that COCOeval would reject or silently ignore."""
    required = ("image_id", "category_id", "score", "bbox" if iou_type == "bbox" else "segmentation")
    image_ids = {image["id"] for image in gt_dataset["images"]}
    category_ids = {category["id"] for category in gt_dataset["categories"]}
    unknown_images, unknown_categories = set(), set()
    for index, result in enumerate(results):
        missing = [key for key in required if key not in result]
        if missing:
            raise ValueError(f"detection {index} lacks {missing}: {result}")
        if result["image_id"] not in image_ids:
            unknown_images.add(result["image_id"])
        if result["category_id"] not in category_ids:
            unknown_categories.add(result["category_id"])
    if unknown_images:
        raise ValueError(f"{len(unknown_images)} detection image_id(s) are not in the ground truth, "
                         f"e.g. {sorted(unknown_images, key=str)[:5]}")
    if unknown_categories:
        raise ValueError(f"detection category_id(s) {sorted(unknown_categories, key=str)[:10]} are not "
                         f"ground-truth categories (contiguous class index instead of COCO id?)")


def _copy_gt(dataset: dict) -> dict:
    """Copy the parts of a ground-truth dict that COCOeval writes to (it adds 'ignore' to annotations)."""
    copied = dict(dataset)
    copied["annotations"] = [dict(ann) for ann in dataset.get("annotations", [])]
    copied["images"] = list(dataset.get("images", []))
    copied["categories"] = list(dataset.get("categories", []))
    return copied


def _load_json(path: PathLike) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
