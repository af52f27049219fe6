"""The loader of one split of a Prophesee spec: the data config read into a :class:`PropheseeDataset` (recordings)
or an :class:`~spikeyolo.data.sources.prophesee.rvt.RvtDataset` (RVT's preprocessed folders), then a DataLoader."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from spikeyolo.data.events.cameras import GEN1, Camera
from spikeyolo.data.sources.prophesee.dataset import LAYOUTS, PropheseeDataset, build_event_dataloader
from spikeyolo.data.sources.prophesee.rvt import RvtDataset
from spikeyolo.data.sources.prophesee.spec import representation_from_config
from spikeyolo.data.spec import DatasetSpec
from spikeyolo.errors import DatasetError
from spikeyolo.io import plain

__all__ = ["event_dataloader_from_config"]


def event_dataloader_from_config(spec: DatasetSpec, data_cfg: Mapping[str, Any], split: str, batch_size: int,
                                 workers: int, rank: int = -1, device: torch.device | str | None = None,
                                 window_us: int | None = None, progress: bool = True, camera: Camera = GEN1,
                                 stride: int = 32) -> torch.utils.data.DataLoader:
    """The loader of one split of a Prophesee spec with the data config's values (``layout: rvt``: RVT's
    preprocessed folders, :class:`~spikeyolo.data.sources.prophesee.rvt.RvtDataset`); ``window_us`` overrides the
    window. Training splits are shuffled (and get ``train_max_box_width``), validation splits are not; neither is
    augmented."""
    paths = spec.split_paths(split)
    if not paths:
        raise DatasetError(f"{spec.root}: dataset {spec.name!r} has no {split} split folder")
    cfg = plain(data_cfg)
    max_width = cfg.get("train_max_box_width") if split == "train" else None
    layout = str(cfg.get("layout") or "recordings")
    if layout not in LAYOUTS:
        raise DatasetError(f"data.layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    dataset_class = RvtDataset if layout == "rvt" else PropheseeDataset
    dataset = dataset_class(paths[0], spec.names, representation_from_config(cfg, window_us),
                            imgsz=int(cfg.get("imgsz") or 320),
                            most_recent_first=bool(cfg.get("most_recent_first", True)),
                            label_clamp=str(cfg.get("label_clamp") or "reference"),
                            min_box_size=float(cfg.get("min_box_size") or 0.0),
                            preprocess_workers=cfg.get("preprocess_workers"), progress=progress, camera=camera,
                            other_classes=str(cfg.get("other_classes") or "error"),
                            max_box_width=None if max_width is None else float(max_width),
                            sample_times=str(cfg.get("sample_times") or "all"),
                            input_shape=str(cfg.get("input_shape") or "square"),
                            pad_position=str(cfg.get("pad_position") or "center"), stride=int(stride))
    return build_event_dataloader(dataset, batch_size, workers, shuffle=split == "train", rank=rank, device=device)
