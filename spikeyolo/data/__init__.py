"""Datasets: YOLO-layout and COCO-json image sets through ultralytics' loaders, and Prophesee Gen1 event data.

The loader functions import ultralytics (through :mod:`spikeyolo._ultralytics`) on first use, and the Gen1
names import torch on first use, so importing ``spikeyolo.data`` or a subpackage such as
``spikeyolo.data.events`` stays light.
"""

from typing import Any

from spikeyolo.data.cache import cache_root
from spikeyolo.data.datasets import DatasetSpec, coco_image_ids, embedded_root, load_dataset_spec, spec_from_config
from spikeyolo.errors import DatasetError

_LOADER_NAMES = ("AUGMENT_DEFAULTS", "augmentation_hyp", "build_dataloader", "close_mosaic", "count_boxes",
                 "dataloader_from_config", "maybe_close_mosaic")
# name -> module of the Gen1 pipeline (spikeyolo.data.gen1*)
_GEN1_NAMES = {
    "GEN1_NAMES": "gen1", "Gen1Dataset": "gen1", "Gen1Sample": "gen1", "gen1_spec": "gen1",
    "ensure_synthetic_dataset": "gen1", "representation_from_config": "gen1", "letterbox_clip": "gen1",
    "collate_gen1": "gen1", "build_gen1_dataloader": "gen1", "gen1_dataloader_from_config": "gen1",
    "REPRESENTATIONS": "gen1_cache", "Representation": "gen1_cache", "Recording": "gen1_cache",
    "find_recordings": "gen1_cache", "build_cache": "gen1_cache",
    "CLAMP_MODES": "gen1_labels", "group_by_time": "gen1_labels", "postprocess_boxes": "gen1_labels",
}

__all__ = ["DatasetError", "DatasetSpec", "cache_root", "coco_image_ids", "embedded_root", "load_dataset_spec",
           "spec_from_config", *_LOADER_NAMES, *_GEN1_NAMES]


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LOADER_NAMES:
        return getattr(importlib.import_module("spikeyolo.data.loaders"), name)
    if name in _GEN1_NAMES:
        return getattr(importlib.import_module(f"spikeyolo.data.{_GEN1_NAMES[name]}"), name)
    raise AttributeError(f"module 'spikeyolo.data' has no attribute {name!r}")
