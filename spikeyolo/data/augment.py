"""The recipe's image augmentation (reference §1) and its schedule: mosaic closed for the last epochs.

Training loaders of the image sources use ultralytics' v8 transforms (mosaic, random perspective, HSV, flips) with
these values; validation letterboxes only. Event sources never augment (the reference forces it off for Gen1).
"""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import torch

from spikeyolo._ultralytics import data as ul_data
from spikeyolo._ultralytics.env import hyperparameters
from spikeyolo.io import plain

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
