"""The ``coco_json`` source: an images folder plus COCO train / val jsons, converted once into YOLO label files.

The conversion (:func:`~spikeyolo.data.coco_json.convert_coco_json`) goes into
``cache_root()/coco_json/<key of the images folder and the jsons' size and mtime>/`` (labels per split, a
``<split>.txt`` list of the image paths, ``meta.json``); images are referenced by the list, never copied, and nothing
is written beside the dataset. The class index is the position of the category in the json's ``categories``.
Loaded as a ``yolo`` set with the labels under the cache (:attr:`DatasetSpec.label_roots`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spikeyolo.data.cache import cache_key, cache_root
from spikeyolo.data.coco_json import convert_coco_json
from spikeyolo.data.sources.yolo import YoloSource
from spikeyolo.data.spec import SPLITS, DatasetSpec
from spikeyolo.errors import DatasetError

_COCO_CACHE_VERSION = 1  # bump when convert_coco_json's output changes


class CocoJsonSource(YoloSource):
    """``source: coco_json``: reads ``images``, ``val_json`` and ``train_json`` (optional: evaluation only)."""

    name = "coco_json"

    def spec(self, data_cfg: Mapping[str, Any]) -> DatasetSpec:
        return _spec_from_coco_json(data_cfg.get("images"), data_cfg.get("train_json"), data_cfg.get("val_json"))


def _spec_from_coco_json(images: Any, train_json: Any, val_json: Any) -> DatasetSpec:
    if images is None or val_json is None:
        raise DatasetError("data.images and data.val_json are required for source 'coco_json'")
    images = Path(images).resolve()
    if not images.is_dir():
        raise DatasetError(f"{images}: images folder does not exist")
    jsons = {"train": Path(train_json).resolve() if train_json else None, "val": Path(val_json).resolve()}
    for path in jsons.values():
        if path is not None and not path.is_file():
            raise DatasetError(f"{path}: COCO json not found")
    stamps = [(p, p.stat().st_size, p.stat().st_mtime_ns) for p in jsons.values() if p is not None]
    out = cache_root() / "coco_json" / cache_key(_COCO_CACHE_VERSION, images, *stamps)
    if not (out / "meta.json").is_file():
        _convert_coco_splits(images, jsons, out)
    meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    lists = {split: [out / f"{split}.txt"] if jsons[split] else [] for split in SPLITS}
    return DatasetSpec(name=jsons["val"].stem, source="coco_json", root=out, train=lists["train"], val=lists["val"],
                       names=meta["names"], category_ids=meta["category_ids"], val_json=jsons["val"],
                       label_roots={split: out / "labels" / split for split in SPLITS}, image_root=images)


def _convert_coco_splits(images: Path, jsons: dict[str, Path | None], out: Path) -> None:
    """Convert each split into a temporary folder, then move it into place (atomic for concurrent runs)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        meta: dict[str, Any] = {}
        for split, json_path in jsons.items():
            if json_path is None:
                continue
            converted = convert_coco_json(json_path, images, tmp / "labels" / split)
            if meta and (converted.category_ids, converted.names) != (meta["category_ids"], meta["names"]):
                first = next(iter(meta["splits"].values()))["json"]
                raise DatasetError(f"{json_path}: categories differ from those of {first}")
            if not any(f.is_file() for f in converted.image_files):
                raise DatasetError(f"{json_path}: none of its {len(converted.image_files)} images exist in {images}")
            lines = [str(f) for f in converted.image_files]  # absolute paths: the list is read from the cache
            (tmp / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
            meta.update(names=converted.names, category_ids=converted.category_ids)
            meta.setdefault("splits", {})[split] = {"json": str(json_path), "images": len(converted.image_files),
                                                     "boxes": converted.num_boxes, "crowd": converted.num_crowd,
                                                     "degenerate": converted.num_degenerate,
                                                     "empty": converted.num_empty}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        try:
            os.replace(tmp, out)
        except OSError:  # another process finished first (out exists and is not empty)
            if not (out / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
