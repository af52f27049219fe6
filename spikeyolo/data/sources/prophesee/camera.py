"""The Prophesee automotive detection releases the ``prophesee`` sources read: one :class:`Camera` each.

A camera holds the facts of a release, not choices: the sensor size, the class list of its label files and the
classes the field evaluates. What to do with them (representation, downsampling, label clean-up, which label times
become samples) is chosen in the data config (``spikeyolo/configs/data/gen1.yaml``, ``gen4.yaml``). Sources are in
docs/events.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from spikeyolo.data.events import DatHeader

__all__ = ["Camera", "GEN1", "GEN4", "sensor_size"]


@dataclass(frozen=True)
class Camera:
    """One release of the Prophesee automotive detection datasets.

    Attributes:
        name: the source name (``data.source``) and the cache folder.
        title: how messages name it.
        width, height: sensor size in pixels (used when a ``.dat`` header gives none).
        release_names: the class names of the label files, in class-id order.
        names: the classes the field trains and evaluates on (class ids 0..len(names) - 1 of the label files).
    """

    name: str
    title: str
    width: int
    height: int
    release_names: tuple[str, ...]
    names: tuple[str, ...]


#: Gen1 (ATIS, 304x240): labels car (0) and pedestrian (1), both evaluated (toolbox README "GEN1 Automotive").
GEN1 = Camera("gen1", "Gen1", 304, 240, ("car", "pedestrian"), ("car", "pedestrian"))
#: 1 Megapixel ("Gen4", 1280x720): seven labelled classes; the paper, the toolbox and RVT evaluate the first three
#: (toolbox README L27-29, issue #23; RVT scripts/genx/preprocess_dataset.py L263-271, evaluation.py L17-18).
GEN4 = Camera("gen4", "Gen4", 1280, 720,
              ("pedestrian", "two wheeler", "car", "truck", "bus", "traffic sign", "traffic light"),
              ("pedestrian", "two-wheeler", "car"))


def sensor_size(header: DatHeader, camera: Camera) -> tuple[int, int]:
    """(width, height) of a recording: its header's, or the camera's when the header gives none."""
    if header.size_from_header:
        return header.width, header.height
    return camera.width, camera.height
