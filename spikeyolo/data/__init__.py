"""Datasets: YOLO-layout and COCO-json image sets through ultralytics' loaders.

The loader functions import ultralytics (through :mod:`spikeyolo.ultralytics_adapter`) on first use, so importing
``spikeyolo.data`` or a subpackage such as ``spikeyolo.data.events`` stays light.
"""

from typing import Any

from spikeyolo.data.cache import cache_root
from spikeyolo.data.datasets import DatasetSpec, coco_image_ids, embedded_root, load_dataset_spec, spec_from_config
from spikeyolo.data.errors import DatasetError

_LOADER_NAMES = ("AUGMENT_DEFAULTS", "augmentation_hyp", "build_dataloader", "close_mosaic", "count_boxes",
                 "dataloader_from_config", "maybe_close_mosaic")

__all__ = ["DatasetError", "DatasetSpec", "cache_root", "coco_image_ids", "embedded_root", "load_dataset_spec",
           "spec_from_config", *_LOADER_NAMES]


def __getattr__(name: str) -> Any:
    if name in _LOADER_NAMES:
        from spikeyolo.data import loaders

        return getattr(loaders, name)
    raise AttributeError(f"module 'spikeyolo.data' has no attribute {name!r}")
