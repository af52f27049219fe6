"""The ``yolo`` source: an Ultralytics dataset yaml, loaded through ultralytics' YOLO dataset and loader.

The yaml has ``path``, ``train``, ``val`` and ``names`` (or ``nc``). A relative ``path`` is resolved against the
yaml's folder (not ultralytics' datasets_dir) and ``download:`` is never run. Optional spikeyolo keys: ``val_json``
(COCO gt json, relative to ``path``) and ``category_ids``.

The loaders (:func:`build_dataloader`, also the ``embedded`` and ``coco_json`` sources') yield the batches described
in :mod:`spikeyolo.data.sources.base`: ``img`` uint8 [B, 3, H, W] (RGB). Training uses the recipe's augmentation
(:mod:`spikeyolo.data.augment`) and validation letterboxes only. Label files are checked strictly
(:func:`~spikeyolo.data.labels.check_label_file`); label caches go under :func:`~spikeyolo.data.cache.cache_root`,
never beside the data.
"""

from __future__ import annotations

import functools
import logging
import os
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml as pyyaml

from spikeyolo._ultralytics import data as ul_data
from spikeyolo.data.augment import augmentation_hyp
from spikeyolo.data.cache import cache_key, cache_root
from spikeyolo.data.coco_json import categories, load_coco_json
from spikeyolo.data.labels import check_label_file
from spikeyolo.data.sources.base import DataSource
from spikeyolo.data.spec import SPLITS, DatasetSpec
from spikeyolo.errors import DatasetError
from spikeyolo.io import plain

log = logging.getLogger(__name__)


class YoloSource(DataSource):
    """``source: yolo``: reads ``yaml``; loaders read ``imgsz``, ``augment``, ``val_rect``, ``cache_images``."""

    name = "yolo"

    def spec(self, data_cfg: Mapping[str, Any]) -> DatasetSpec:
        yaml_path = data_cfg.get("yaml")
        if yaml_path is None:
            raise DatasetError("data.yaml: an Ultralytics dataset yaml path is required for source 'yolo'")
        if not Path(yaml_path).is_file():
            found = "a folder" if Path(yaml_path).is_dir() else "no such file"
            raise DatasetError(f"data.yaml={yaml_path}: {found}, expected an Ultralytics dataset yaml file "
                               "(data.yaml=PATH/TO/dataset.yaml)")
        return spec_from_yaml(Path(yaml_path), source=self.name)

    def loader(self, spec: DatasetSpec, data_cfg: Mapping[str, Any], split: str, batch_size: int, workers: int,
               rank: int = -1, stride: int = 32, device: torch.device | str | None = None,
               **overrides: Any) -> torch.utils.data.DataLoader:
        """:func:`build_dataloader` with the data config's values; training splits are augmented and shuffled,
        validation splits are not (rectangular batches with ``val_rect``)."""
        cfg = {**plain(data_cfg), **overrides}
        return build_dataloader(spec, split, imgsz=int(cfg.get("imgsz", 320)), batch_size=batch_size,
                                workers=workers, hyp=cfg.get("augment"), rank=rank,
                                rect=bool(cfg.get("val_rect")) and split == "val", stride=stride,
                                cache_images=bool(cfg.get("cache_images")), device=device)


def build_dataloader(spec: DatasetSpec, split: str, imgsz: int = 320, batch_size: int = 16, workers: int = 2,
                     augment: bool | None = None, hyp: Mapping[str, Any] | Namespace | None = None,
                     rank: int = -1, shuffle: bool | None = None, rect: bool = False, stride: int = 32,
                     cache_images: bool = False, device: torch.device | str | None = None,
                     drop_last: bool = False) -> torch.utils.data.DataLoader:
    """A loader over one split of a dataset.

    Args:
        spec: the dataset (:func:`~spikeyolo.data.sources.load_dataset_spec` / ``spec_from_config``).
        split: ``train`` or ``val``.
        imgsz: square training / letterbox size (rect batches keep the aspect ratio, long side ``imgsz``).
        batch_size: images per batch (per process under DDP).
        workers: loader worker processes (at most the number of batches and CPU cores).
        augment: v8 training augmentation; default ``split == "train"``. Without it: letterbox only.
        hyp: augmentation overrides (keys of :data:`AUGMENT_DEFAULTS`); other keys are ignored.
        rank: DDP rank (-1 single process); ``rank >= 0`` uses a DistributedSampler.
        shuffle: default ``split == "train"``; forced off with ``rect``.
        rect: rectangular batches (validation in the reference; pad 0.5 stride multiple; no mosaic).
        stride: the model's largest stride (rect batch shapes are multiples of it).
        cache_images: keep decoded images in RAM.
        device: where batches go (pinned memory and worker count on CUDA); default CUDA if available.
        drop_last: drop the last incomplete batch.

    Returns:
        ultralytics' InfiniteDataLoader (a torch DataLoader with persistent workers); ``loader.dataset`` has
        ``num_corrupt`` (skipped unreadable images), ``labels`` and ``im_files``.

    Raises:
        DatasetError: no images in the split, no readable images, a bad label file (file and line named).
    """
    paths = spec.split_paths(split)
    if not paths:
        raise DatasetError(f"{spec.root}: dataset {spec.name!r} has no {split} split")
    augment = split == "train" if augment is None else augment
    shuffle = split == "train" if shuffle is None else shuffle
    if rect and shuffle:
        log.warning("%s: rect batches are incompatible with shuffle; shuffle turned off", split)
        shuffle = False
    label_root = spec.label_roots.get(split)
    label_files_for = (functools.partial(_labels_under, str(spec.image_root), str(label_root))
                       if label_root is not None else None)
    label_cache = cache_root() / "labels" / f"{cache_key(*paths, label_root)}-{split}.cache"
    where = paths[0] if len(paths) == 1 else [str(p) for p in paths]
    try:
        dataset = ul_data.build_yolo_dataset(
            [str(p) for p in paths], spec.names, imgsz=imgsz, batch_size=batch_size, augment=augment,
            hyp=augmentation_hyp(hyp), label_cache=label_cache, rect=rect, stride=stride,
            cache_images=cache_images, rank=rank, prefix=f"{split}: ",
            label_check=functools.partial(check_label_file, num_classes=spec.num_classes),
            label_files_for=label_files_for)
    except DatasetError:
        raise
    except FileNotFoundError:  # ultralytics: "No images found" / path missing
        raise DatasetError(f"{where}: no images found for the {split} split of {spec.name!r} (empty dataset)") from None
    except RuntimeError as err:  # ultralytics: "No valid images found"
        if "No valid images" not in str(err):
            raise
        raise DatasetError(f"{where}: no readable images in the {split} split of {spec.name!r}") from None
    except ValueError as err:  # ultralytics: "No labels found" (training split without any label file)
        if "No labels found" not in str(err):
            raise
        raise DatasetError(f"{where}: no label files found for the {split} split of {spec.name!r}") from None
    if dataset.num_corrupt:
        shown = "; ".join(m for m in dataset.scan_messages[:3])
        log.warning("%s: skipped %d corrupt or unreadable image(s) of %s: %s", split, dataset.num_corrupt,
                    spec.name, shown)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return ul_data.build_yolo_dataloader(dataset, batch_size=batch_size, workers=workers, shuffle=shuffle,
                                         rank=rank, drop_last=drop_last, device=device)


def _labels_under(image_root: str, label_root: str, im_files: list[str]) -> list[str]:
    """Label paths that mirror the image paths: ``label_root / (im relative to image_root)`` with ``.txt``."""
    out = []
    for im_file in im_files:
        relative = Path(os.path.relpath(im_file, image_root))
        out.append(str(Path(label_root) / relative.with_suffix(".txt")))
    return out


# --------------------------------------------------------------------------- dataset yaml


def spec_from_yaml(yaml_path: Path, source: str = "yolo") -> DatasetSpec:
    """The :class:`DatasetSpec` of an Ultralytics dataset yaml (``source`` names the source that asked).

    Raises:
        DatasetError: a missing or malformed yaml, a missing split path, inconsistent class names.
    """
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
        category_ids = category_ids_from_json(val_json, len(names))
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


def category_ids_from_json(json_path: Path, num_classes: int) -> list[int]:
    """Class index -> COCO category id of a COCO json, which must have ``num_classes`` categories."""
    _, ids = categories(load_coco_json(json_path), json_path)
    if len(ids) != num_classes:
        raise DatasetError(f"{json_path}: {len(ids)} categories but the dataset has {num_classes} classes")
    return ids
