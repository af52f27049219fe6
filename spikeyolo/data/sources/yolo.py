"""Data loaders yielding ultralytics detection batches, with the recipe's augmentation (reference §1).

A batch is a dict: ``img`` uint8 [B, 3, H, W] (RGB), ``batch_idx`` [N], ``cls`` [N, 1], ``bboxes`` [N, 4]
(normalised cx cy w h), ``im_file``, ``ori_shape``, ``resized_shape``, ``ratio_pad`` (tuples of length B).
Training uses ultralytics' v8 transforms (mosaic, random perspective, HSV, flips) and validation letterboxes only.
Label caches go under :func:`~spikeyolo.data.cache.cache_root`, never beside the data.
"""

from __future__ import annotations

import functools
import logging
import os
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from spikeyolo._ultralytics import data as ul_data
from spikeyolo._ultralytics.env import hyperparameters
from spikeyolo.data.cache import cache_key, cache_root
from spikeyolo.data.datasets import DatasetSpec
from spikeyolo.errors import DatasetError
from spikeyolo.data.labels import check_label_file
from spikeyolo.io import plain

log = logging.getLogger(__name__)

# Recipe §1 (ultralytics default.yaml values of the reference run). close_mosaic: epochs at the end without mosaic.
AUGMENT_DEFAULTS: dict[str, float | int] = {
    "mosaic": 1.0, "mixup": 0.0, "cutmix": 0.0, "copy_paste": 0.0,
    "degrees": 0.0, "translate": 0.1, "scale": 0.5, "shear": 0.0, "perspective": 0.0,
    "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4,
    "flipud": 0.0, "fliplr": 0.5, "bgr": 0.0,
    "close_mosaic": 10,
}


def augmentation_hyp(hyp: Mapping[str, Any] | Namespace | SimpleNamespace | None = None) -> Any:
    """The augmentation namespace ultralytics' transforms read: recipe defaults, overridden by ``hyp``.

    Only the keys of :data:`AUGMENT_DEFAULTS` are read from ``hyp`` (a dict, DictConfig or namespace, e.g. the
    trainer's whole hyper-parameter set); other keys are ignored. The optional Albumentations stage is switched off
    (empty list), as in the reference environment.
    """
    given = plain(hyp)
    values = {key: given.get(key, default) for key, default in AUGMENT_DEFAULTS.items()}
    namespace = hyperparameters(**values)
    namespace.augmentations = []
    return namespace


def build_dataloader(spec: DatasetSpec, split: str, imgsz: int = 320, batch_size: int = 16, workers: int = 2,
                     augment: bool | None = None, hyp: Mapping[str, Any] | Namespace | None = None,
                     rank: int = -1, shuffle: bool | None = None, rect: bool = False, stride: int = 32,
                     cache_images: bool = False, device: torch.device | str | None = None,
                     drop_last: bool = False) -> torch.utils.data.DataLoader:
    """A loader over one split of a dataset.

    Args:
        spec: the dataset (:func:`~spikeyolo.data.datasets.load_dataset_spec` / ``spec_from_config``).
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


def dataloader_from_config(spec: DatasetSpec, data_cfg: Mapping[str, Any], split: str, batch_size: int,
                           workers: int, rank: int = -1, stride: int = 32,
                           device: torch.device | str | None = None) -> torch.utils.data.DataLoader:
    """:func:`build_dataloader` with the data config group's values (``imgsz``, ``augment``, ``val_rect``,
    ``cache_images``); training splits are augmented and shuffled, validation splits are not.
    Gen1 specs (``source: gen1``) get the event-clip loader of :mod:`spikeyolo.data.gen1` instead."""
    if spec.source == "gen1":
        from spikeyolo.data.gen1 import gen1_dataloader_from_config

        return gen1_dataloader_from_config(spec, data_cfg, split, batch_size, workers, rank=rank, device=device)
    cfg = plain(data_cfg)
    return build_dataloader(spec, split, imgsz=int(cfg.get("imgsz", 320)), batch_size=batch_size, workers=workers,
                            hyp=cfg.get("augment"), rank=rank, rect=bool(cfg.get("val_rect")) and split == "val",
                            stride=stride, cache_images=bool(cfg.get("cache_images")), device=device)


def close_mosaic(loader: torch.utils.data.DataLoader) -> None:
    """Turn mosaic (and mixup / cutmix / copy-paste) off for the rest of training and restart the workers."""
    ul_data.close_dataset_mosaic(loader)


def maybe_close_mosaic(loader: torch.utils.data.DataLoader, epoch: int, epochs: int,
                       close_mosaic_epochs: int | None = None) -> bool:
    """Close mosaic once ``epoch`` (0-based) reaches the last ``close_mosaic_epochs`` epochs; safe to call every epoch.

    Args:
        close_mosaic_epochs: default the ``close_mosaic`` value of the loader's augmentation (recipe: 10); 0 never.

    Returns:
        True if mosaic was closed by this call.
    """
    dataset = loader.dataset
    count = int(dataset.hyp.close_mosaic if close_mosaic_epochs is None else close_mosaic_epochs)
    if count <= 0 or not dataset.augment or dataset.mosaic_closed or epoch < epochs - count:
        return False
    close_mosaic(loader)
    return True


def count_boxes(dataset: Any) -> int:
    """Number of boxes in a loader's dataset (after the scan)."""
    return int(sum(len(label["cls"]) for label in dataset.labels))


def _labels_under(image_root: str, label_root: str, im_files: list[str]) -> list[str]:
    """Label paths that mirror the image paths: ``label_root / (im relative to image_root)`` with ``.txt``."""
    out = []
    for im_file in im_files:
        relative = Path(os.path.relpath(im_file, image_root))
        out.append(str(Path(label_root) / relative.with_suffix(".txt")))
    return out
