"""Datasets: a data config resolved by its source into a :class:`DatasetSpec` and loaders of ultralytics-style batches.

    spec       :class:`DatasetSpec`, a dataset resolved to absolute paths and class names
    sources/   the data sources by name (``data.source``): embedded, yolo, coco_json, gen1; the registry and the
               dispatch (:func:`spec_from_config`, :func:`dataloader_from_config`)
    augment    the recipe's image augmentation and the close-mosaic schedule
    coco_json  COCO-json annotations -> YOLO label files; labels: strict YOLO label-file checks
    events/    event-camera files (Prophesee ``.dat``, Gen1 ``*_bbox.npy``), representations, synthetic recordings
    cache      where derived files go (:func:`cache_root`), never beside a dataset
"""

from spikeyolo.data.augment import AUGMENT_DEFAULTS, augmentation_hyp, close_mosaic, maybe_close_mosaic
from spikeyolo.data.cache import cache_root
from spikeyolo.data.coco_json import coco_image_ids
from spikeyolo.data.sources import (SOURCES, DataSource, dataloader_from_config, get_source, load_dataset_spec,
                                    register_source, spec_from_config)
from spikeyolo.data.sources.base import count_boxes
from spikeyolo.data.sources.embedded import embedded_root
from spikeyolo.data.sources.gen1 import (CLAMP_MODES, GEN1_NAMES, REPRESENTATIONS, Gen1Dataset, Gen1Sample, Recording,
                                         Representation, build_cache, build_gen1_dataloader, collate_gen1,
                                         ensure_synthetic_dataset, find_recordings, gen1_dataloader_from_config,
                                         gen1_spec, group_by_time, letterbox_clip, postprocess_boxes,
                                         representation_from_config)
from spikeyolo.data.sources.prophesee import REPRESENTATION_KEYS
from spikeyolo.data.sources.yolo import build_dataloader
from spikeyolo.data.spec import DatasetSpec
from spikeyolo.errors import DatasetError

__all__ = ["DatasetError", "DatasetSpec", "cache_root", "coco_image_ids", "embedded_root", "load_dataset_spec",
           "spec_from_config", "dataloader_from_config", "DataSource", "SOURCES", "get_source", "register_source",
           "AUGMENT_DEFAULTS", "augmentation_hyp", "build_dataloader", "close_mosaic", "count_boxes",
           "maybe_close_mosaic",
           "GEN1_NAMES", "Gen1Dataset", "Gen1Sample", "gen1_spec", "ensure_synthetic_dataset",
           "representation_from_config", "REPRESENTATION_KEYS", "letterbox_clip", "collate_gen1",
           "build_gen1_dataloader", "gen1_dataloader_from_config", "REPRESENTATIONS", "Representation", "Recording",
           "find_recordings", "build_cache", "CLAMP_MODES", "group_by_time", "postprocess_boxes"]
