"""Resolved dataset descriptions (:class:`DatasetSpec`) from the three supported sources.

Sources:
    ``embedded``   the demo set shipped in ``spikeyolo/assets/trees`` (44 train / 12 val aerial tiles, 1 class).
    ``yolo``       an Ultralytics dataset yaml (``path``, ``train``, ``val``, ``names``). A relative ``path`` is
                   resolved against the yaml's folder (not ultralytics' datasets_dir) and ``download:`` is never run.
                   Optional spikeyolo keys: ``val_json`` (COCO gt json, relative to ``path``) and ``category_ids``.
    ``coco_json``  an images folder plus COCO train/val jsons, converted once into a YOLO label cache under
                   :func:`~spikeyolo.data.cache.cache_root` (images are referenced by a list file, never copied).
    ``gen1``       a Prophesee Gen1 folder of ``*_td.dat`` / ``*_bbox.npy`` recordings (:mod:`spikeyolo.data.gen1`);
                   resolved from a data config by :func:`spec_from_config` only.

Nothing here writes beside the dataset.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml as pyyaml

from spikeyolo.data.cache import cache_key, cache_root
from spikeyolo.data.coco_json import categories, convert_coco_json, load_coco_json
from spikeyolo.errors import DatasetError
from spikeyolo.io import plain

SOURCES = ("embedded", "yolo", "coco_json", "gen1")
SPLITS = ("train", "val")
_COCO_CACHE_VERSION = 1  # bump when convert_coco_json's output changes


@dataclass
class DatasetSpec:
    """A dataset resolved to absolute paths and class names.

    Attributes:
        name: short name (for logs and run directories).
        source: ``embedded``, ``yolo`` or ``coco_json``.
        root: the dataset folder (the yaml's ``path``; the conversion cache for ``coco_json``).
        train, val: image folders or image-list ``.txt`` files of each split (a split may be empty).
        names: class names; the class index is the position in this list.
        category_ids: class index -> original COCO category id (for pycocotools), or None.
        val_json: COCO ground-truth json of the val split, or None.
        label_roots: split -> folder holding that split's label files, mirroring the image paths relative to
            ``image_root``; empty when labels sit in the ``labels/`` sibling of ``images/`` (Ultralytics rule).
        image_root: the folder image paths are relative to when ``label_roots`` is used.
    """

    name: str
    source: str
    root: Path
    train: list[Path]
    val: list[Path]
    names: list[str]
    category_ids: list[int] | None = None
    val_json: Path | None = None
    label_roots: dict[str, Path] = field(default_factory=dict)
    image_root: Path | None = None

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def split_paths(self, split: str) -> list[Path]:
        """The image folders / list files of ``split`` (``train`` or ``val``)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self.train if split == "train" else self.val


def embedded_root() -> Path:
    """The folder of the embedded trees dataset inside the installed package."""
    root = Path(str(resources.files("spikeyolo") / "assets" / "trees"))
    if not (root / "trees.yaml").is_file():
        raise DatasetError(f"{root / 'trees.yaml'}: embedded dataset not found (broken installation?)")
    return root


def load_dataset_spec(source: str = "embedded", *, yaml: str | os.PathLike | None = None,
                      images: str | os.PathLike | None = None, train_json: str | os.PathLike | None = None,
                      val_json: str | os.PathLike | None = None) -> DatasetSpec:
    """Resolve a dataset.

    Args:
        source: ``embedded`` (default), ``yolo`` or ``coco_json``.
        yaml: the Ultralytics dataset yaml (``yolo``).
        images: the folder the jsons' ``file_name`` entries are relative to (``coco_json``).
        train_json, val_json: COCO detection jsons (``coco_json``; ``train_json`` may be None for eval only).

    Raises:
        DatasetError: a missing yaml / json / folder, a malformed yaml or json, inconsistent class names.
    """
    if source == "embedded":
        root = embedded_root()
        spec = _spec_from_yaml(root / "trees.yaml", source="embedded")
        spec.name = "trees"
        if spec.val_json is None:
            spec.val_json = root / "annotations" / "instances_val.json"
            spec.category_ids = _category_ids_from_json(spec.val_json, spec.num_classes)
        return spec
    if source == "yolo":
        if yaml is None:
            raise DatasetError("data.yaml: an Ultralytics dataset yaml path is required for source 'yolo'")
        return _spec_from_yaml(Path(yaml), source="yolo")
    if source == "coco_json":
        return _spec_from_coco_json(images, train_json, val_json)
    if source == "gen1":
        raise DatasetError("source 'gen1' is resolved from a data config: use spec_from_config (data=gen1)")
    raise DatasetError(f"unknown dataset source {source!r}; expected one of {', '.join(SOURCES)}")


def spec_from_config(cfg: Mapping[str, Any]) -> DatasetSpec:
    """Resolve the ``data`` config group (``spikeyolo/configs/data/*.yaml``) into a :class:`DatasetSpec`.

    Reads ``source`` and the paths it needs (``yaml``; ``images``, ``train_json``, ``val_json``); ``num_classes``,
    when not null, must equal the dataset's class count; ``hint`` is appended to errors (e.g. how to prepare COCO).
    """
    cfg = plain(cfg)  # resolves interpolations such as ${oc.env:...}
    hint = cfg.get("hint")
    try:
        if cfg.get("source") == "gen1":
            from spikeyolo.data.gen1 import gen1_spec

            spec = gen1_spec(cfg)
        else:
            spec = load_dataset_spec(cfg.get("source") or "embedded", yaml=cfg.get("yaml"), images=cfg.get("images"),
                                     train_json=cfg.get("train_json"), val_json=cfg.get("val_json"))
    except DatasetError as err:
        if hint:
            raise DatasetError(f"{err} ({hint})") from None
        raise
    expected = cfg.get("num_classes")
    if expected is not None and int(expected) != spec.num_classes:
        raise DatasetError(f"{spec.root}: data.num_classes={expected} but the dataset has {spec.num_classes} "
                           f"classes {spec.names[:5]}{'...' if spec.num_classes > 5 else ''}")
    if cfg.get("name"):
        spec.name = str(cfg["name"])
    return spec


def coco_image_ids(spec: DatasetSpec) -> dict[str, int]:
    """Image file name (basename, as in a batch's ``im_file``) -> COCO image id of ``spec.val_json``."""
    if spec.val_json is None:
        raise DatasetError(f"{spec.root}: dataset {spec.name!r} has no COCO val json")
    data = load_coco_json(spec.val_json)
    ids = {Path(str(image["file_name"])).name: int(image["id"]) for image in data["images"]}
    if len(ids) != len(data["images"]):
        raise DatasetError(f"{spec.val_json}: image file names are not unique by basename")
    return ids


# --------------------------------------------------------------------------- yolo yaml


def _spec_from_yaml(yaml_path: Path, source: str) -> DatasetSpec:
    if not yaml_path.is_file():
        raise DatasetError(f"{yaml_path}: dataset yaml not found")
    try:
        data = pyyaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, pyyaml.YAMLError) as err:
        raise DatasetError(f"{yaml_path}: not a readable yaml file ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{yaml_path}: dataset yaml must be a mapping with train, val and names")
    yaml_path = yaml_path.resolve()
    root = Path(str(data.get("path") or "."))
    root = root if root.is_absolute() else (yaml_path.parent / root).resolve()
    download_note = " (its download: entry is never run; fetch the data yourself)" if data.get("download") else ""
    if not root.is_dir():
        raise DatasetError(f"{yaml_path}: dataset path {root} does not exist{download_note}")
    splits = {}
    for split in SPLITS:
        entries = data.get(split)
        if not entries:
            raise DatasetError(f"{yaml_path}: missing key {split!r} (image folder or list file)")
        paths = []
        for entry in entries if isinstance(entries, list) else [entries]:
            path = Path(str(entry))
            path = path if path.is_absolute() else root / path
            if not path.exists():
                raise DatasetError(f"{yaml_path}: {split} path {path} does not exist{download_note}")
            paths.append(path)
        splits[split] = paths
    names = _names(data, yaml_path)
    val_json = category_ids = None
    if data.get("val_json"):
        val_json = Path(str(data["val_json"]))
        val_json = val_json if val_json.is_absolute() else root / val_json
        if not val_json.is_file():
            raise DatasetError(f"{yaml_path}: val_json {val_json} does not exist")
    if data.get("category_ids") is not None:
        category_ids = [int(c) for c in data["category_ids"]]
        if len(category_ids) != len(names):
            raise DatasetError(f"{yaml_path}: {len(category_ids)} category_ids for {len(names)} names")
    elif val_json is not None:
        category_ids = _category_ids_from_json(val_json, len(names))
    return DatasetSpec(name=yaml_path.stem, source=source, root=root, train=splits["train"], val=splits["val"],
                       names=names, category_ids=category_ids, val_json=val_json)


def _names(data: dict, yaml_path: Path) -> list[str]:
    names, count = data.get("names"), data.get("nc")
    if names is None:
        if count is None:
            raise DatasetError(f"{yaml_path}: missing key 'names'")
        names = [f"class{i}" for i in range(int(count))]
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise DatasetError(f"{yaml_path}: 'names' keys must be class indices 0..N-1") from None
        if keys != list(range(len(keys))):
            raise DatasetError(f"{yaml_path}: 'names' keys must be the contiguous class indices 0..{len(keys) - 1}")
        names = [names[k] if k in names else names[str(k)] for k in keys]
    if not isinstance(names, list) or not names:
        raise DatasetError(f"{yaml_path}: 'names' must be a non-empty list or an index -> name mapping")
    if count is not None and int(count) != len(names):
        raise DatasetError(f"{yaml_path}: nc={count} but {len(names)} names are given")
    return [str(n) for n in names]


def _category_ids_from_json(json_path: Path, num_classes: int) -> list[int]:
    _, ids = categories(load_coco_json(json_path), json_path)
    if len(ids) != num_classes:
        raise DatasetError(f"{json_path}: {len(ids)} categories but the dataset has {num_classes} classes")
    return ids


# --------------------------------------------------------------------------- coco json


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
