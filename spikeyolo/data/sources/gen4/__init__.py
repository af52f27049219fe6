"""The ``gen4`` source: Prophesee's 1 Megapixel automotive detection dataset (Perot et al., NeurIPS 2020; "Gen4",
1280x720) as a detection dataset, with the settings of RVT (docs/events.md, "The 1 Megapixel dataset").

The same family as Gen1 (:mod:`spikeyolo.data.sources.prophesee`); the camera and the data config
(``spikeyolo/configs/data/gen4.yaml``) are what differ: three classes of seven, input downsampled by 2 to
640x360 and padded to a stride multiple, RVT's label clean-up and ~10 Hz label frames.
"""

from __future__ import annotations

from spikeyolo.data.sources.prophesee.synthetic import ensure_synthetic_dataset
from spikeyolo.data.sources.prophesee import GEN4, PropheseeSource

__all__ = ["Gen4Source", "GEN4_NAMES"]

GEN4_NAMES = GEN4.names


class Gen4Source(PropheseeSource):
    """``source: gen4``: the 1280x720 1 Megapixel camera (:class:`PropheseeSource` reads the keys)."""

    name = "gen4"
    camera = GEN4
    make_synthetic = staticmethod(ensure_synthetic_dataset)
