"""The ``gen1`` source: Prophesee Gen1 event recordings as a detection dataset (reference §6, docs/events.md).

    spec       the data config read: dataset folder, splits, event representation
    synthetic  a synthetic Gen1-layout dataset generated once into the cache (``data=gen1_synthetic``)
    cache      every sample's event tensor encoded once per recording (:class:`Representation`)
    labels     ``*_bbox.npy`` grouped by label time and the label clean-ups of the Gen1 pipelines
    dataset    the torch Dataset (letterboxed clips), its collate function and loader
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from spikeyolo.data.sources.base import DataSource
from spikeyolo.data.sources.gen1.cache import REPRESENTATIONS, Recording, Representation, build_cache, find_recordings
from spikeyolo.data.sources.gen1.dataset import (Gen1Dataset, Gen1Sample, build_gen1_dataloader, collate_gen1,
                                                 gen1_dataloader_from_config, letterbox_clip)
from spikeyolo.data.sources.gen1.labels import CLAMP_MODES, group_by_time, postprocess_boxes
from spikeyolo.data.sources.gen1.spec import GEN1_NAMES, gen1_spec, representation_from_config
from spikeyolo.data.sources.gen1.synthetic import ensure_synthetic_dataset
from spikeyolo.data.spec import DatasetSpec
from spikeyolo.io import plain

__all__ = ["Gen1Source", "GEN1_NAMES", "gen1_spec", "representation_from_config", "ensure_synthetic_dataset",
           "REPRESENTATIONS", "Representation", "Recording", "find_recordings", "build_cache", "CLAMP_MODES",
           "group_by_time", "postprocess_boxes", "Gen1Sample", "Gen1Dataset", "letterbox_clip", "collate_gen1",
           "build_gen1_dataloader", "gen1_dataloader_from_config"]


class Gen1Source(DataSource):
    """``source: gen1``: reads ``root`` or ``synthetic``, ``train_split``, ``val_split``, ``names``; loaders read the
    representation keys (``representation``, ``time_steps``, ``window_us``, ...), ``imgsz``, ``label_clamp``,
    ``min_box_size``, ``most_recent_first``, ``preprocess_workers`` and ``progress`` (default true)."""

    name = "gen1"
    is_event_data = True

    def spec(self, data_cfg: Mapping[str, Any]) -> DatasetSpec:
        return gen1_spec(data_cfg)

    def loader(self, spec: DatasetSpec, data_cfg: Mapping[str, Any], split: str, batch_size: int, workers: int,
               rank: int = -1, stride: int = 32, device: torch.device | str | None = None,
               **overrides: Any) -> torch.utils.data.DataLoader:
        """:func:`gen1_dataloader_from_config` (``stride`` is not used: clips are square)."""
        cfg = {**plain(data_cfg), **overrides}
        return gen1_dataloader_from_config(spec, cfg, split, batch_size, workers, rank=rank, device=device,
                                           progress=bool(cfg.get("progress", True)))
