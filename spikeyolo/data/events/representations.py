"""Dense tensors from an event window: SpikeYOLO frames, per-polarity histograms, voxel grids.

Every function takes the events (a structured array with fields t, x, y, p; p in {0, 1}), the end of the window
``t_end_us`` (for Gen1: the label time) and its length ``window_us``, and uses the half-open window
``[t_end_us - window_us, t_end_us)``. Events outside it are ignored, so a whole recording can be passed, although
reading just the window (``read_dat(path, t_end_us - window_us, t_end_us)``) is cheaper.
No per-event Python loop: the work is ``np.bincount`` / ``np.maximum.at`` on flat pixel indices.
"""

from __future__ import annotations

import numpy as np

from spikeyolo.data.events.cameras import GEN1

__all__ = ["SPIKEYOLO_WINDOW_US", "spikeyolo_frames", "event_histogram", "voxel_grid", "stacked_histogram"]

SPIKEYOLO_WINDOW_US = 250_000   # reference `sample_size`: 0.25 s before each label time
_GREY, _ON = 127, 255


def _select(events: np.ndarray, t_start_us: int, t_end_us: int, width: int, height: int):
    """The events with t_start_us <= t < t_end_us as (t int64, x int64, y int64, p int64) arrays.

    Raises:
        ValueError: a selected event outside the [height, width] sensor (it would land on another pixel) or a
            polarity outside {0, 1}.
    """
    t = np.asarray(events["t"], np.int64)
    keep = (t >= t_start_us) & (t < t_end_us)
    t = t[keep]
    x = events["x"][keep].astype(np.int64)
    y = events["y"][keep].astype(np.int64)
    p = events["p"][keep].astype(np.int64)
    if len(t):
        if x.min() < 0 or x.max() >= width or y.min() < 0 or y.max() >= height:
            raise ValueError(f"events outside the {width}x{height} sensor: x in [{x.min()}, {x.max()}], "
                             f"y in [{y.min()}, {y.max()}]")
        if p.min() < 0 or p.max() > 1:
            raise ValueError(f"polarity must be 0 or 1, got values in [{p.min()}, {p.max()}]")
    return t, x, y, p


def _check_window(time_steps: int, window_us: int) -> None:
    if time_steps < 1:
        raise ValueError(f"time_steps must be >= 1, got {time_steps}")
    if window_us < time_steps:
        raise ValueError(f"window_us {window_us} is shorter than {time_steps} slices of 1 µs")


def _slices(t: np.ndarray, t_start_us: int, slice_us: int, time_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Slice index of each event, (t - t_start) // slice_us, and the mask of those inside the T slices."""
    index = (t - t_start_us) // slice_us
    return index, index < time_steps


def spikeyolo_frames(events: np.ndarray, t_end_us: int, *, time_steps: int, width: int = GEN1.width,
                     height: int = GEN1.height, window_us: int = SPIKEYOLO_WINDOW_US,
                     most_recent_first: bool = False, clamp_start: bool = False) -> np.ndarray:
    """The SpikeYOLO Gen1 input: T grey frames where each event paints its pixel white (p=1) or black (p=0).

    As in the reference ``pre_gen1.py`` (training-and-eval reference §6): the window
    ``[t_end_us - window_us, t_end_us)`` is cut into T slices of ``window_us // T`` µs, slice i covering
    ``[start + i*d, start + (i+1)*d)``; when T does not divide ``window_us`` the last ``window_us % T`` µs before
    ``t_end_us`` fall in no slice, as in the reference. Every frame starts at 127; each event of slice i sets its
    pixel to ``255 * p``, a later event (in array order, which is time order for a sorted recording) overwriting
    an earlier one; the 3 channels are equal.

    The reference saves [T, W, H, 3] and transposes it to [T, H, W, 3] when loading; this returns [T, H, W, 3].
    Its loader then reverses the time axis (``[::-1]``) so the model's t = 0 is the most recent slice: pass
    ``most_recent_first=True`` to get that order directly. By default slice 0 is the oldest (the saved order).

    Labels earlier than ``window_us``: by default the window is literally ``[t_end_us - window_us, t_end_us)``,
    whose part before t = 0 is empty. The reference computes ``ts - 250000`` on a uint64 box time: with numpy 1.x
    that gives a negative float, ``PSEELoader.seek_time`` then restarts at t = 0, and its slices cover
    ``[0, window_us)``, past the label time; ``clamp_start=True`` does the same (derived from the code, see
    docs/events.md). With numpy 2 the subtraction wraps instead and the reference's frames come out blank.

    Args:
        events: [N] structured array with fields t, x, y, p.
        t_end_us: end of the window (exclusive), e.g. the label time.
        time_steps: T, the number of slices (the released Gen1 checkpoint uses T = 2).
        width, height: sensor size (default: Gen1's).
        window_us: window length (reference: 250000).
        most_recent_first: reverse the slice order (the model's order in the reference).
        clamp_start: start a window that would begin before t = 0 at 0 instead (the reference with numpy 1.x).

    Returns:
        [T, H, W, 3] uint8 array with values in {0, 127, 255}.
    """
    _check_window(time_steps, window_us)
    t_start_us = int(t_end_us) - int(window_us)
    if clamp_start and t_start_us < 0:
        t_start_us, t_end_us = 0, int(window_us)
    t, x, y, p = _select(events, t_start_us, int(t_end_us), width, height)
    index, inside = _slices(t, t_start_us, window_us // time_steps, time_steps)
    pixel = (index[inside] * height + y[inside]) * width + x[inside]        # flat index into [T, H, W]
    # the last event of each pixel wins: keep the largest event number per pixel (defined for repeated indices)
    last = np.full(time_steps * height * width, -1, np.int64)
    np.maximum.at(last, pixel, np.arange(len(pixel), dtype=np.int64))
    painted = last >= 0
    frames = np.full(time_steps * height * width, _GREY, np.uint8)
    frames[painted] = _ON * p[inside][last[painted]]
    frames = frames.reshape(time_steps, height, width)                     # [T*H*W] -> [T, H, W]
    if most_recent_first:
        frames = frames[::-1]
    return np.repeat(frames[..., None], 3, axis=-1)                        # [T, H, W] -> [T, H, W, 3]


def event_histogram(events: np.ndarray, t_end_us: int, *, time_steps: int, width: int, height: int,
                    window_us: int = SPIKEYOLO_WINDOW_US, dtype: np.dtype | type = np.int32) -> np.ndarray:
    """Event counts per slice, polarity and pixel.

    The window and its T slices are those of :func:`spikeyolo_frames` (slices of ``window_us // T`` µs, oldest
    first). Channel 0 counts p = 0 (OFF) events, channel 1 counts p = 1 (ON).

    Returns:
        [T, 2, H, W] array of ``dtype`` (default int32).
    """
    _check_window(time_steps, window_us)
    t_start_us = int(t_end_us) - int(window_us)
    t, x, y, p = _select(events, t_start_us, int(t_end_us), width, height)
    index, inside = _slices(t, t_start_us, window_us // time_steps, time_steps)
    flat = ((index[inside] * 2 + p[inside]) * height + y[inside]) * width + x[inside]   # index into [T, 2, H, W]
    counts = np.bincount(flat, minlength=time_steps * 2 * height * width)
    return counts.astype(dtype, copy=False).reshape(time_steps, 2, height, width)      # [T*2*H*W] -> [T, 2, H, W]


def voxel_grid(events: np.ndarray, t_end_us: int, *, num_bins: int, width: int, height: int,
               window_us: int = SPIKEYOLO_WINDOW_US) -> np.ndarray:
    """Voxel grid with bilinear interpolation in time and polarity +1 (p = 1) / -1 (p = 0).

    Each event at normalised time ``tn = (B - 1) * (t - t_start) / window_us`` (so tn is in [0, B - 1)) adds
    ``pol * (1 - (tn - floor(tn)))`` to bin ``floor(tn)`` and ``pol * (tn - floor(tn))`` to the next bin, so
    every event's weights sum to its polarity (Zhu et al. 2019, with the fixed window instead of the span of the
    events). With B = 1 every event goes to bin 0.

    Returns:
        [B, H, W] float32 array; its total is (#ON - #OFF) of the window.
    """
    _check_window(num_bins, window_us)
    t_start_us = int(t_end_us) - int(window_us)
    t, x, y, p = _select(events, t_start_us, int(t_end_us), width, height)
    polarity = (2 * p - 1).astype(np.float64)
    time_norm = (num_bins - 1) * (t - t_start_us) / float(window_us)
    left = np.floor(time_norm).astype(np.int64)
    right_weight = time_norm - left
    pixel = y * width + x
    size = num_bins * height * width
    grid = np.bincount(left * height * width + pixel, weights=polarity * (1.0 - right_weight), minlength=size)
    has_right = left + 1 < num_bins
    grid += np.bincount((left[has_right] + 1) * height * width + pixel[has_right],
                        weights=polarity[has_right] * right_weight[has_right], minlength=size)
    return grid.astype(np.float32).reshape(num_bins, height, width)        # [B*H*W] -> [B, H, W]


def stacked_histogram(events: np.ndarray, t_end_us: int, *, time_steps: int, width: int, height: int,
                      window_us: int = SPIKEYOLO_WINDOW_US, bins: int = 10, count_cutoff: int = 10,
                      downsample: int = 1, slice_us: int | None = None) -> np.ndarray:
    """RVT's stacked histogram (Gehrig & Scaramuzza, CVPR 2023; uzh-rpg/RVT ``StackedHistogram``, its Gen1 / 1Mpx
    input), one per slice: the slices are the T frames RVT stacks in time.

    Slice i (0 the oldest) ends at ``e_i = t_end_us - (T - 1 - i) * window_us // T`` and holds the events with ``e_i
    - slice_us <= t <= e_i`` (``slice_us`` defaults to ``window_us // T``: contiguous slices; RVT's Gen1 frames are
    50 ms long and 125 ms apart: ``slice_us=50000``, ``window_us = T * 125000``): both ends included, as RVT's
    preprocessing cuts them (``searchsorted(t, e - dt, 'left')`` to ``searchsorted(t, e, 'right')``), so an event on
    a boundary counts in both slices. Within a slice, with t0 and t1 its first and last event times (``events`` in
    time order, as RVT assumes), an event goes to bin ``min(floor(float32(t - t0) / float32(max(t1 - t0, 1)) *
    bins), bins - 1)`` (RVT's float32 arithmetic) and channel ``p * bins + bin``; a pixel's count wraps at 256
    (RVT's uint8 ``fastmode``) and is then clipped to ``count_cutoff``. ``downsample`` d > 1 keeps pixel (x, y) with
    ``x % d == y % d == d // 2`` at (x // d, y // d): RVT's ``interpolate(mode="nearest-exact")`` of the full-size
    histogram, whose bins come from the times of *all* the slice's events.

    Returns:
        [T, 2 * bins, H // d, W // d] uint8.
    """
    _check_window(time_steps, window_us)
    step_us = int(window_us) // int(time_steps)
    slice_us = int(slice_us or step_us)
    steps, bins, d = int(time_steps), int(bins), int(downsample)
    first_end = int(t_end_us) - (steps - 1) * step_us
    t = np.asarray(events["t"], np.int64)
    ordered = bool(np.all(t[1:] >= t[:-1]))
    if ordered:                                    # sorted (as RVT assumes): the window is a contiguous run
        lo, hi = np.searchsorted(t, first_end - slice_us, "left"), np.searchsorted(t, int(t_end_us), "right")
        window = events[lo:hi]
    else:
        window = events[(t >= first_end - slice_us) & (t <= int(t_end_us))]
    t, x, y, p = _select(window, first_end - slice_us, int(t_end_us) + 1, width, height)
    grid_w, grid_h = int(width) // d, int(height) // d
    plane = grid_h * grid_w
    counts = np.zeros((steps, 2 * bins * plane), np.int64)              # [T, 2 * bins * H * W]
    if d > 1:
        centre = d // 2
        kept = (x % d == centre) & (y % d == centre) & (x < grid_w * d) & (y < grid_h * d)
    else:
        kept = np.ones(len(t), bool)
    for index in range(steps):
        end = first_end + index * step_us
        if ordered:
            inside = slice(np.searchsorted(t, end - slice_us, "left"), np.searchsorted(t, end, "right"))
        else:
            inside = (t >= end - slice_us) & (t <= end)
        times = t[inside]
        if not len(times):
            continue
        # the bins span the slice's first to last event, all of them (kept pixels or not)
        span = np.float32(max(int(times[-1]) - int(times[0]), 1))
        mine = kept[inside]
        norm = (times[mine] - times[0]).astype(np.float32) / span * np.float32(bins)   # float32 as RVT's torch ops
        which = np.clip(np.floor(norm).astype(np.int64), 0, bins - 1)
        pixel = (y[inside][mine] // d) * grid_w + x[inside][mine] // d
        counts[index] += np.bincount((p[inside][mine] * bins + which) * plane + pixel, minlength=2 * bins * plane)
    out = counts.astype(np.uint8)                  # wraps at 256 (counts >= 0), as RVT's uint8 accumulation
    np.minimum(out, np.uint8(count_cutoff), out=out)
    return out.reshape(steps, 2 * bins, grid_h, grid_w)
