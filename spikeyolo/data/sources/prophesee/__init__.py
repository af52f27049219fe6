"""The Prophesee family of event sources: folders of ``*_td.dat`` / ``*_bbox.npy`` recordings as detection datasets.

Gen1 (``source: gen1``, :mod:`spikeyolo.data.sources.gen1`) and the 1 Megapixel dataset (``source: gen4``,
:mod:`spikeyolo.data.sources.gen4`) are two :class:`PropheseeSource` subclasses that differ only by their
:class:`Camera`; everything else is shared and chosen by the data config (docs/events.md):

    cameras    the releases' facts live in the catalog :mod:`spikeyolo.data.events.cameras` (:data:`GEN1`, :data:`GEN4`)
    encoding   :class:`Representation`: SpikeYOLO frames / histograms / voxel grids, downsampling, chunked encoding
    labels     ``*_bbox.npy`` grouped by label time, the label clean-ups (SpikeYOLO's, Cordone's, RVT's), RVT's frames
    cache      every sample's tensor encoded once per recording (parallel, resumable, streamed)
    spec       the data config read: dataset folder, splits, representation
    dataset    the torch Dataset (letterboxed clips), its collate function and loader
    rvt        RVT's preprocessed folders read as they are (``data.layout: rvt``)
    loader     a data config read into either dataset and its loader
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch

from spikeyolo.data.events.cameras import GEN1, GEN4, Camera, sensor_size
from spikeyolo.data.sources.base import DataSource
from spikeyolo.data.sources.prophesee.cache import Recording, build_cache, find_recordings, open_frames, split_cache_dir
from spikeyolo.data.sources.prophesee.dataset import (INPUT_SHAPES, PAD_POSITIONS, EventSample, PropheseeDataset,
                                                      build_event_dataloader, clip_input, collate_events,
                                                      letterbox_clip)
from spikeyolo.data.sources.prophesee.loader import event_dataloader_from_config
from spikeyolo.data.sources.prophesee.encoding import (DOWNSAMPLE_MODES, REPRESENTATIONS, Representation,
                                                       downsample_events)
from spikeyolo.data.sources.prophesee.labels import (CLAMP_MODES, SAMPLE_TIMES, drop_classes, group_by_time,
                                                     postprocess_boxes, rvt_frame_times)
from spikeyolo.data.sources.prophesee.spec import REPRESENTATION_KEYS, prophesee_spec, representation_from_config
from spikeyolo.data.spec import DatasetSpec
from spikeyolo.io import plain

__all__ = ["PropheseeSource", "Camera", "GEN1", "GEN4", "sensor_size", "REPRESENTATIONS", "DOWNSAMPLE_MODES",
           "Representation", "downsample_events", "Recording", "find_recordings", "split_cache_dir", "build_cache",
           "open_frames", "CLAMP_MODES", "SAMPLE_TIMES", "group_by_time", "drop_classes", "postprocess_boxes",
           "rvt_frame_times", "prophesee_spec", "representation_from_config", "REPRESENTATION_KEYS", "INPUT_SHAPES",
           "PAD_POSITIONS",
           "EventSample", "PropheseeDataset", "letterbox_clip", "clip_input", "collate_events",
           "build_event_dataloader", "event_dataloader_from_config"]


class PropheseeSource(DataSource):
    """A Prophesee release as a source: ``data.source`` is the camera's name.

    Reads ``root`` or ``synthetic``, ``train_split``, ``val_split``, ``names``; loaders read the representation keys
    (``representation``, ``time_steps``, ``window_us``, ``downsample``, ...), ``imgsz``, ``input_shape``,
    ``pad_position``, ``label_clamp``, ``min_box_size``, ``train_max_box_width``, ``other_classes``,
    ``sample_times``, ``most_recent_first``, ``preprocess_workers`` and ``progress`` (default true).

    Subclasses set :attr:`camera` and :attr:`make_synthetic` (the generator of ``data.synthetic``'s stand-in).
    """

    is_event_data = True
    camera: ClassVar[Camera]
    make_synthetic: ClassVar[Callable[..., Any] | None] = None

    def spec(self, data_cfg: Mapping[str, Any]) -> DatasetSpec:
        cfg = plain(data_cfg)
        root = None
        if cfg.get("synthetic") and self.make_synthetic is not None:
            root = type(self).make_synthetic(**{"camera": self.camera.name, **cfg["synthetic"]})
        return prophesee_spec(cfg, self.camera, root=root)

    def loader(self, spec: DatasetSpec, data_cfg: Mapping[str, Any], split: str, batch_size: int, workers: int,
               rank: int = -1, stride: int = 32, device: torch.device | str | None = None,
               **overrides: Any) -> torch.utils.data.DataLoader:
        """:func:`event_dataloader_from_config` (``stride`` sizes ``input_shape: stride`` inputs)."""
        cfg = {**plain(data_cfg), **overrides}
        return event_dataloader_from_config(spec, cfg, split, batch_size, workers, rank=rank, device=device,
                                            progress=bool(cfg.get("progress", True)), camera=self.camera,
                                            stride=stride)
