"""The ``gen1`` source: Prophesee Gen1 event recordings as a detection dataset (reference §6, docs/events.md).

Gen1 is the 304x240 camera of the Prophesee family (:mod:`spikeyolo.data.sources.prophesee`, which holds the
shared code: representation, cache, labels, dataset); this package names its camera and keeps the Gen1 names
(``Gen1Dataset``, ``gen1_spec``, ...) of that code. The synthetic stand-in (``data=gen1_synthetic``) is generated into
the cache by :func:`~spikeyolo.data.sources.prophesee.synthetic.ensure_synthetic_dataset`.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from spikeyolo.data.sources.prophesee.synthetic import ensure_synthetic_dataset
from spikeyolo.data.sources.prophesee import (CLAMP_MODES, GEN1, REPRESENTATIONS, EventSample, PropheseeDataset,
                                              PropheseeSource, Recording, Representation, build_cache,
                                              build_event_dataloader, collate_events, event_dataloader_from_config,
                                              find_recordings, group_by_time, letterbox_clip, postprocess_boxes,
                                              representation_from_config)
from spikeyolo.data.spec import DatasetSpec

__all__ = ["Gen1Source", "GEN1_NAMES", "gen1_spec", "representation_from_config", "ensure_synthetic_dataset",
           "REPRESENTATIONS", "Representation", "Recording", "find_recordings", "build_cache", "CLAMP_MODES",
           "group_by_time", "postprocess_boxes", "Gen1Sample", "Gen1Dataset", "letterbox_clip", "collate_gen1",
           "build_gen1_dataloader", "gen1_dataloader_from_config"]

GEN1_NAMES = GEN1.names
#: The Gen1 names of the family's classes and functions (their defaults are Gen1's).
Gen1Sample = EventSample
Gen1Dataset = PropheseeDataset
collate_gen1 = collate_events
build_gen1_dataloader = build_event_dataloader
gen1_dataloader_from_config = partial(event_dataloader_from_config, camera=GEN1)


def gen1_spec(cfg: Mapping[str, Any]) -> DatasetSpec:
    """Resolve a Gen1 data config (``source: gen1``) into a :class:`DatasetSpec` (``synthetic`` generated first)."""
    return Gen1Source().spec(cfg)


class Gen1Source(PropheseeSource):
    """``source: gen1``: the 304x240 Gen1 camera (:class:`PropheseeSource` reads the keys)."""

    name = "gen1"
    camera = GEN1
    make_synthetic = staticmethod(ensure_synthetic_dataset)
