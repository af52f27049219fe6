"""Gen1 labels per sample: grouping a ``*_bbox.npy`` by label time and the label clean-ups of the Gen1 pipelines.

One sample is made per unique label time (training-and-eval reference §6). The boxes of a sample are cleaned up
as the reference ``pre_gen1.py`` does (:func:`postprocess_boxes`, ``clamp="reference"``), or as Cordone et al.
do (``clamp="corners"``, the geometric intersection with the sensor). Only numpy is imported here.
"""

from __future__ import annotations

import numpy as np

from spikeyolo.data.events.boxes import BOX_DTYPE, as_boxes

__all__ = ["CLAMP_MODES", "group_by_time", "postprocess_boxes", "boxes_to_xyxy"]

#: ``reference``: x, w clamped to [0, W] and y, h to [0, H] separately, then the centre clamped (pre_gen1.py);
#: ``corners``: both corners clamped to the sensor, i.e. the part of the box inside it (Cordone et al., RVT).
CLAMP_MODES = ("reference", "corners")


def group_by_time(boxes: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Split boxes into one group per unique label time.

    Args:
        boxes: [N] box array (either release dtype or :data:`BOX_DTYPE`).

    Returns:
        (times [S] int64 sorted ascending, S arrays of :data:`BOX_DTYPE` in file order within each time).
    """
    boxes = as_boxes(boxes)
    order = np.argsort(boxes["t"], kind="stable")
    boxes = boxes[order]
    times, starts = np.unique(boxes["t"], return_index=True)
    return times.astype(np.int64), np.split(boxes, starts[1:]) if len(boxes) else []


def postprocess_boxes(boxes: np.ndarray, *, width: int = 304, height: int = 240, clamp: str = "reference",
                      min_size: float = 0.0) -> np.ndarray:
    """Clean up the boxes of one label time.

    Steps (reference ``pre_gen1.py``, §6):
      1. keep only the last box (in file order) of each ``track_id``;
      2. clamp to the sensor: ``reference`` clamps x and w to [0, width], y and h to [0, height] separately, then
         the centre (x + w/2, y + h/2) to the sensor again, so a box sticking out on the left is *shifted* right
         (its width is kept) and one sticking out on the right keeps a centre on the border; ``corners`` clamps
         both corners (the visible part of the box);
      3. drop boxes with w = 0 or h = 0;
      4. drop boxes narrower or lower than ``min_size`` pixels (0, the reference: no size filter).

    Args:
        boxes: [N] boxes of one label time (either release dtype or :data:`BOX_DTYPE`).
        width, height: sensor size in pixels.
        clamp: one of :data:`CLAMP_MODES`.
        min_size: smallest kept side in pixels.

    Returns:
        [M] :data:`BOX_DTYPE`, x/y the top-left corner (``reference`` boxes may reach outside the sensor by up to
        half their size), in the order of each track's last box.
    """
    if clamp not in CLAMP_MODES:
        raise ValueError(f"clamp must be one of {CLAMP_MODES}, got {clamp!r}")
    boxes = as_boxes(boxes)
    if len(boxes):
        # index of the last occurrence of every track id = first occurrence in the reversed array
        _, first_in_reversed = np.unique(boxes["track_id"][::-1], return_index=True)
        last = np.sort(len(boxes) - 1 - first_in_reversed)
        boxes = boxes[last]
    x, y = boxes["x"].astype(np.float64), boxes["y"].astype(np.float64)
    w, h = boxes["w"].astype(np.float64), boxes["h"].astype(np.float64)
    if clamp == "reference":
        x, w = np.clip(x, 0, width), np.clip(w, 0, width)
        y, h = np.clip(y, 0, height), np.clip(h, 0, height)
        centre_x, centre_y = np.clip(x + w / 2, 0, width), np.clip(y + h / 2, 0, height)
        x, y = centre_x - w / 2, centre_y - h / 2
    else:
        x0, x1 = np.clip(x, 0, width), np.clip(x + w, 0, width)
        y0, y1 = np.clip(y, 0, height), np.clip(y + h, 0, height)
        x, y, w, h = x0, y0, x1 - x0, y1 - y0
    keep = (w > 0) & (h > 0) & (w >= min_size) & (h >= min_size)
    out = np.empty(int(keep.sum()), BOX_DTYPE)
    for name in BOX_DTYPE.names:
        out[name] = boxes[name][keep]
    out["x"], out["y"], out["w"], out["h"] = x[keep], y[keep], w[keep], h[keep]
    return out


def boxes_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """[M] box array -> [M, 4] float64 (x1, y1, x2, y2) in pixels."""
    x, y = boxes["x"].astype(np.float64), boxes["y"].astype(np.float64)
    return np.stack((x, y, x + boxes["w"], y + boxes["h"]), axis=1).reshape(-1, 4)
