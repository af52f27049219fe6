"""COCO-json annotations -> YOLO label files (one txt per image, normalised ``class cx cy w h``).

The class index is the position of the category in the json's ``categories`` list (as the reference
``coco2yolo.py`` does), so non-contiguous COCO category ids (1..90 for COCO 2017) map to 0..N-1; the ids are
returned in that order so that detections can be mapped back for pycocotools. ``iscrowd`` annotations are skipped,
boxes are clipped to the image and dropped if empty, and an image without boxes gets an empty label file.

The file format only; the ``coco_json`` data source that caches a conversion is :mod:`spikeyolo.data.sources.coco_json`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spikeyolo.data.spec import DatasetSpec
from spikeyolo.errors import DatasetError

_REQUIRED_KEYS = ("images", "annotations", "categories")
_IMAGE_KEYS = ("id", "file_name", "width", "height")
_ANNOTATION_KEYS = ("image_id", "category_id", "bbox")
_CATEGORY_KEYS = ("id", "name")


@dataclass
class CocoSplit:
    """What a conversion produced.

    Attributes:
        names: class names in class-index order.
        category_ids: class index -> COCO category id.
        image_files: the images (``images_dir / file_name``), in json order.
        label_files: the written label files, parallel to ``image_files``.
        num_boxes: boxes written.
        num_crowd: ``iscrowd`` annotations skipped.
        num_degenerate: boxes skipped because they are empty after clipping to the image.
        num_empty: images written with no boxes.
    """

    names: list[str]
    category_ids: list[int]
    image_files: list[Path] = field(default_factory=list)
    label_files: list[Path] = field(default_factory=list)
    num_boxes: int = 0
    num_crowd: int = 0
    num_degenerate: int = 0
    num_empty: int = 0


def load_coco_json(json_path: str | os.PathLike) -> dict[str, Any]:
    """Read a COCO detection json and check its structure.

    Raises:
        DatasetError: missing or unreadable file, invalid json, a missing top-level key
            (images / annotations / categories), an entry missing a required key, no images, no categories.
    """
    json_path = Path(json_path)
    if not json_path.is_file():
        raise DatasetError(f"{json_path}: COCO json not found")
    try:
        with open(json_path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{json_path}: not a readable json file ({err})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{json_path}: COCO json must be an object with keys {', '.join(_REQUIRED_KEYS)}")
    missing = [key for key in _REQUIRED_KEYS if key not in data]
    if missing:
        raise DatasetError(f"{json_path}: COCO json is missing key(s) {', '.join(missing)}")
    for key, entry_keys in (("images", _IMAGE_KEYS), ("annotations", _ANNOTATION_KEYS),
                            ("categories", _CATEGORY_KEYS)):
        if not isinstance(data[key], list):
            raise DatasetError(f"{json_path}: COCO json key {key!r} must be a list")
        for index, entry in enumerate(data[key]):
            absent = [k for k in entry_keys if not isinstance(entry, dict) or k not in entry]
            if absent:
                raise DatasetError(f"{json_path}: {key}[{index}] is missing key(s) {', '.join(absent)}")
    if not data["categories"]:
        raise DatasetError(f"{json_path}: COCO json has no categories")
    if not data["images"]:
        raise DatasetError(f"{json_path}: COCO json has no images (empty dataset)")
    return data


def categories(data: dict[str, Any], json_path: str | os.PathLike) -> tuple[list[str], list[int]]:
    """Class names and category ids in the order of the json's ``categories`` list."""
    ids = [int(c["id"]) for c in data["categories"]]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{json_path}: duplicate category ids in 'categories'")
    return [str(c["name"]) for c in data["categories"]], ids


def coco_image_ids(spec: DatasetSpec) -> dict[str, int]:
    """Image file name (basename, as in a batch's ``im_file``) -> COCO image id of ``spec.val_json``."""
    if spec.val_json is None:
        raise DatasetError(f"{spec.root}: dataset {spec.name!r} has no COCO val json")
    data = load_coco_json(spec.val_json)
    ids = {Path(str(image["file_name"])).name: int(image["id"]) for image in data["images"]}
    if len(ids) != len(data["images"]):
        raise DatasetError(f"{spec.val_json}: image file names are not unique by basename")
    return ids


def convert_coco_json(json_path: str | os.PathLike, images_dir: str | os.PathLike,
                      labels_dir: str | os.PathLike) -> CocoSplit:
    """Write one YOLO label file per image of a COCO json.

    Args:
        json_path: COCO detection json (``images``, ``annotations``, ``categories``).
        images_dir: folder the json's ``file_name`` entries are relative to (images are only referenced).
        labels_dir: output folder; the label of ``file_name`` is ``labels_dir / file_name`` with suffix ``.txt``.

    Returns:
        a :class:`CocoSplit` summary (names, category ids, image and label files, counts).

    Raises:
        DatasetError: see :func:`load_coco_json`; also an annotation with an unknown image or category id or a
            malformed bbox, and non-positive image sizes.
    """
    data = load_coco_json(json_path)
    names, category_ids = categories(data, json_path)
    class_of = {cat_id: index for index, cat_id in enumerate(category_ids)}
    images = {}
    for entry in data["images"]:
        width, height = float(entry["width"]), float(entry["height"])
        if width <= 0 or height <= 0:
            raise DatasetError(f"{json_path}: image {entry['id']} has size {width}x{height}")
        if entry["id"] in images:
            raise DatasetError(f"{json_path}: duplicate image id {entry['id']}")
        images[entry["id"]] = entry
    file_names = [str(entry["file_name"]) for entry in images.values()]
    if len(set(file_names)) != len(file_names):
        raise DatasetError(f"{json_path}: duplicate image file_name entries")
    rows: dict[Any, list[str]] = {image_id: [] for image_id in images}
    split = CocoSplit(names=names, category_ids=category_ids)
    for index, ann in enumerate(data["annotations"]):
        if ann.get("iscrowd", 0):
            split.num_crowd += 1
            continue
        image = images.get(ann["image_id"])
        if image is None:
            raise DatasetError(f"{json_path}: annotations[{index}] refers to unknown image id {ann['image_id']}")
        if ann["category_id"] not in class_of:
            raise DatasetError(f"{json_path}: annotations[{index}] has unknown category id {ann['category_id']}")
        box = ann["bbox"]
        try:
            x, y, w, h = (float(v) for v in box)
        except (TypeError, ValueError):
            raise DatasetError(f"{json_path}: annotations[{index}] bbox must be 4 numbers, got {box!r}") from None
        width, height = float(image["width"]), float(image["height"])
        x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)  # clip xywh (pixels) to the image
        x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
        if x2 <= x1 or y2 <= y1:
            split.num_degenerate += 1
            continue
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height  # -> normalised cx cy w h
        bw, bh = (x2 - x1) / width, (y2 - y1) / height
        rows[ann["image_id"]].append(f"{class_of[ann['category_id']]} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
        split.num_boxes += 1

    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    for image_id, image in images.items():
        relative = Path(image["file_name"])
        if relative.is_absolute() or ".." in relative.parts:
            raise DatasetError(f"{json_path}: file_name {image['file_name']!r} must be relative to the images folder")
        label_file = (labels_dir / relative).with_suffix(".txt")
        label_file.parent.mkdir(parents=True, exist_ok=True)
        lines = rows[image_id]
        label_file.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
        split.num_empty += not lines
        split.image_files.append(images_dir / relative)
        split.label_files.append(label_file)
    return split
