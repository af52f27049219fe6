"""The catalog of event cameras: the one home of each camera's facts (the Prophesee automotive detection releases).

A :class:`Camera` holds the facts of a release, not choices: the sensor size, the class list of its label files,
the classes the field evaluates, and the box filter the field's evaluation applies on it. Everything else reads
them from here: the ``.dat`` reader (the size of a file whose header gives none), the representations and the label
clean-up (their default sensor size), the ``prophesee`` sources (``data/sources/prophesee``), the synthetic
recordings, the event protocols (``evaluation/gen1.py``) and the command lines. What to do with the facts
(representation, downsampling, label clean-up, which label times become samples) is chosen in the data config
(``spikeyolo/configs/data/gen1.yaml``, ``gen4.yaml``). Sources are in docs/events.md.

This module imports nothing of spikeyolo, so every layer that may import ``data`` can read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spikeyolo.data.events.dat import DatHeader

__all__ = ["BoxFilter", "Camera", "GEN1", "GEN4", "CAMERAS", "get_camera", "sensor_size"]


@dataclass(frozen=True)
class BoxFilter:
    """The psee toolbox's ``filter_boxes`` thresholds the field's evaluation applies on a camera (RVT's
    ``evaluate_list(..., camera=...)``, utils/evaluation/prophesee/evaluation.py L22-38, box_filtering.py L23).

    Attributes:
        skip_us: boxes at t <= skip_us are dropped.
        min_diag, min_side: boxes with a smaller diagonal or side (sensor pixels) are dropped.
    """

    skip_us: int
    min_diag: float
    min_side: float


@dataclass(frozen=True)
class Camera:
    """One release of the Prophesee automotive detection datasets.

    Attributes:
        name: the source name (``data.source``) and the cache folder.
        title: how messages name it.
        width, height: sensor size in pixels (used when a ``.dat`` header gives none).
        release_names: the class names of the label files, in class-id order.
        names: the classes the field trains and evaluates on (class ids 0..len(names) - 1 of the label files).
        box_filter: the evaluation's box filter on this camera, at the sensor's size (the protocol defaults of
            the ``prophesee`` protocols, :mod:`spikeyolo.evaluation.gen1`).
    """

    name: str
    title: str
    width: int
    height: int
    release_names: tuple[str, ...]
    names: tuple[str, ...]
    box_filter: BoxFilter

    @property
    def size(self) -> str:
        """``WIDTHxHEIGHT``, for messages."""
        return f"{self.width}x{self.height}"


#: Gen1 (ATIS): labels car (0) and pedestrian (1), both evaluated (toolbox README "GEN1 Automotive"); RVT filters
#: its boxes with diagonal >= 30 px and sides >= 10 px after 0.5 s.
GEN1 = Camera("gen1", "Gen1", 304, 240, ("car", "pedestrian"), ("car", "pedestrian"), BoxFilter(500_000, 30.0, 10.0))
#: 1 Megapixel ("Gen4"): seven labelled classes; the paper, the toolbox and RVT evaluate the first three
#: (toolbox README L27-29, issue #23; RVT scripts/genx/preprocess_dataset.py L263-271, evaluation.py L17-18); the
#: toolbox's filter_boxes defaults are its 1Mpx thresholds (diagonal 60, side 20, after 0.5 s).
GEN4 = Camera("gen4", "Gen4", 1280, 720,
              ("pedestrian", "two wheeler", "car", "truck", "bus", "traffic sign", "traffic light"),
              ("pedestrian", "two-wheeler", "car"), BoxFilter(500_000, 60.0, 20.0))
#: Every camera by name (``data.source``).
CAMERAS: dict[str, Camera] = {camera.name: camera for camera in (GEN1, GEN4)}


def get_camera(name: str) -> Camera:
    """A camera of the catalog by name.

    Raises:
        ValueError: no camera has that name.
    """
    if name not in CAMERAS:
        raise ValueError(f"unknown event camera {name!r}; expected one of {', '.join(CAMERAS)}")
    return CAMERAS[name]


def sensor_size(header: DatHeader, camera: Camera) -> tuple[int, int]:
    """(width, height) of a recording: its header's, or the camera's when the header gives none."""
    if header.size_from_header:
        return header.width, header.height
    return camera.width, camera.height
