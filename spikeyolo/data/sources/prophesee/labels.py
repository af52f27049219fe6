"""Labels per sample: a ``*_bbox.npy`` grouped by label time, the label clean-ups, and which times become samples.

Gen1 (training-and-eval reference §6): one sample per unique label time, the boxes cleaned up as the reference
``pre_gen1.py`` does (:func:`postprocess_boxes`, ``clamp="reference"``) or as Cordone et al. do
(``clamp="corners"``, the geometric intersection with the sensor).

1Mpx as RVT (uzh-rpg/RVT ``scripts/genx/preprocess_dataset.py``, docs/events.md): classes beyond the evaluated
three dropped (L263-271, :func:`drop_classes`), boxes cropped to the field of view ``[0, W - 1] x [0, H - 1]``
(L232-260, ``clamp="rvt"``), sides below 5 px dropped (``conservative_bbox_filter``, L213-219: ``min_size=5``),
in training boxes wider than 9/10 of the frame dropped (L222-229, ``max_width``), and only the label times of its
~10 Hz "frames" kept as samples (L365-402, :func:`rvt_frame_times`). Only numpy is imported here.
"""

from __future__ import annotations

import numpy as np

from spikeyolo.data.events.boxes import BOX_DTYPE, as_boxes
from spikeyolo.data.events.cameras import GEN1
from spikeyolo.errors import DatasetError

__all__ = ["CLAMP_MODES", "SAMPLE_TIMES", "group_by_time", "drop_classes", "postprocess_boxes", "rvt_frame_times",
           "boxes_to_xyxy"]

#: ``reference``: x, w clamped to [0, W] and y, h to [0, H] separately, then the centre clamped (pre_gen1.py);
#: ``corners``: both corners clamped to the sensor, i.e. the part of the box inside it (Cordone et al.);
#: ``rvt``: both corners clamped to [0, W - 1] x [0, H - 1] in float32, no de-duplication of tracks (RVT).
CLAMP_MODES = ("reference", "corners", "rvt")
#: ``all``: every unique label time is a sample (SpikeYOLO's Gen1); ``rvt``: RVT's label "frames".
SAMPLE_TIMES = ("all", "rvt")


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


def drop_classes(boxes: np.ndarray, num_classes: int) -> np.ndarray:
    """The boxes with ``class_id < num_classes`` (RVT keeps the 1Mpx classes 0-2, preprocess_dataset.py L269)."""
    boxes = as_boxes(boxes)
    return boxes[boxes["class_id"] < num_classes]


def postprocess_boxes(boxes: np.ndarray, *, width: int = GEN1.width, height: int = GEN1.height,
                      clamp: str = "reference", min_size: float = 0.0, max_width: float | None = None) -> np.ndarray:
    """Clean up the boxes of one label time.

    Steps (reference ``pre_gen1.py``, §6; RVT for ``rvt``):
      1. keep only the last box (in file order) of each ``track_id`` (not for ``rvt``, which keeps every box);
      2. clamp to the sensor: ``reference`` clamps x and w to [0, width], y and h to [0, height] separately, then
         the centre (x + w/2, y + h/2) to the sensor again, so a box sticking out on the left is *shifted* right
         (its width is kept) and one sticking out on the right keeps a centre on the border; ``corners`` clamps
         both corners (the visible part of the box); ``rvt`` clamps both corners to [0, width - 1] and
         [0, height - 1] in float32 (``crop_to_fov_filter``, preprocess_dataset.py L232-255);
      3. drop boxes with w = 0 or h = 0;
      4. drop boxes narrower or lower than ``min_size`` pixels (0, the reference: no size filter; RVT's 1Mpx
         setting: 5, L213-219);
      5. drop boxes wider than ``max_width`` pixels (None: none; RVT on its training split: (9 * W) // 10, L222-229).

    Args:
        boxes: [N] boxes of one label time (either release dtype or :data:`BOX_DTYPE`).
        width, height: sensor size in pixels.
        clamp: one of :data:`CLAMP_MODES`.
        min_size: smallest kept side in pixels.
        max_width: largest kept width in pixels.

    Returns:
        [M] :data:`BOX_DTYPE`, x/y the top-left corner (``reference`` boxes may reach outside the sensor by up to
        half their size), in the order of each track's last box (``rvt``: in file order).
    """
    if clamp not in CLAMP_MODES:
        raise ValueError(f"clamp must be one of {CLAMP_MODES}, got {clamp!r}")
    boxes = as_boxes(boxes)
    if clamp == "rvt":
        return _rvt_boxes(boxes, width, height, min_size, max_width)
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
    if max_width is not None:
        keep &= w <= max_width
    out = np.empty(int(keep.sum()), BOX_DTYPE)
    for name in BOX_DTYPE.names:
        out[name] = boxes[name][keep]
    out["x"], out["y"], out["w"], out["h"] = x[keep], y[keep], w[keep], h[keep]
    return out


def _rvt_boxes(boxes: np.ndarray, width: int, height: int, min_size: float, max_width: float | None) -> np.ndarray:
    """RVT's crop to the field of view, then its size filters, on the float32 box fields as numpy computes them."""
    x0, y0 = np.clip(boxes["x"], 0, width - 1), np.clip(boxes["y"], 0, height - 1)           # float32
    x1, y1 = np.clip(boxes["x"] + boxes["w"], 0, width - 1), np.clip(boxes["y"] + boxes["h"], 0, height - 1)
    w, h = x1 - x0, y1 - y0
    keep = (w > 0) & (h > 0) & (w >= min_size) & (h >= min_size)
    if max_width is not None:
        keep &= w <= max_width
    out = boxes[keep]                                                  # a copy (boolean index)
    out["x"], out["y"], out["w"], out["h"] = x0[keep], y0[keep], w[keep], h[keep]
    return out


def rvt_frame_times(times: np.ndarray, align_us: int = 100_000, jitter_us: int = 2000,
                    source: str = "labels", min_gap_us: int = 98_000) -> np.ndarray:
    """The label times RVT keeps as its ~10 Hz "frames" (``labels_and_ev_repr_timestamps``, L365-402).

    From the unique label times (of the boxes left after the clean-up): the label rate is the median step
    (it must be 30 or 60 Hz, L296-300), the base step 3 (30 Hz) or 6 (60 Hz) medians, about 100 ms (L302); the
    first frame is the first time at or after ``align_us`` (100 ms, L371, L556), and a later time is a frame when
    its distance to the previous frame is within ``jitter_us`` (2 ms, L382) of a whole number of base steps.
    RVT then asserts that such a time is at least one base step on (L383) and that the frames are more than
    98 ms apart (L401-402); both are errors here.

    Args:
        times: [S] unique label times (µs), sorted.
        source: what to name in the error (the label file).

    Returns:
        [F] the frame times, F <= S (empty when no time reaches ``align_us``; a single time past it is one frame,
        where RVT's median of no steps would fail).

    Raises:
        DatasetError: the label rate is not 30 or 60 Hz, a label time within ``jitter_us`` of the previous frame,
            or two frames ``min_gap_us`` (98 ms) apart or closer (RVT asserts each).
    """
    times = np.asarray(times, np.int64)
    first = int(np.searchsorted(times, align_us, side="left"))
    if first >= len(times):
        return times[:0]
    if len(times) < 2:
        return times[first:]
    median_us = float(np.median(np.diff(times)))
    rate_hz = int(np.rint(1e6 / median_us))
    if rate_hz not in (30, 60):
        raise DatasetError(f"{source}: labels at {rate_hz} Hz (median step {median_us:.0f} µs); RVT's frame "
                           "selection (data.sample_times=rvt) expects the 1Mpx release's 30 or 60 Hz: set "
                           "data.sample_times=all")
    base_us = int(6 * median_us if rate_hz == 60 else 3 * median_us)
    frames = [int(times[first])]
    for t_us in times[first + 1:].tolist():
        steps = round((t_us - frames[-1]) / base_us)
        if abs(t_us - frames[-1] - steps * base_us) > jitter_us:
            continue
        if steps == 0 or t_us - frames[-1] <= min_gap_us:
            raise DatasetError(f"{source}: label frames at {frames[-1]} and {t_us} µs are {t_us - frames[-1]} µs "
                               f"apart (labels at {rate_hz} Hz, base step {base_us} µs); RVT's frame selection "
                               f"(data.sample_times=rvt) asserts more than {min_gap_us // 1000} ms: set "
                               "data.sample_times=all")
        frames.append(t_us)
    return np.asarray(frames, np.int64)


def boxes_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """[M] box array -> [M, 4] float64 (x1, y1, x2, y2) in pixels."""
    x, y = boxes["x"].astype(np.float64), boxes["y"].astype(np.float64)
    return np.stack((x, y, x + boxes["w"], y + boxes["h"]), axis=1).reshape(-1, 4)
