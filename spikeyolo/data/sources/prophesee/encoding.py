"""How a window of events becomes the model's input: :class:`Representation`, encoded in bounded memory.

The three encodings are those of :mod:`spikeyolo.data.events.representations` (SpikeYOLO frames, per-polarity
histograms, voxel grids), here with an optional spatial downsampling (the 1Mpx setting of RVT: 1280x720 -> 640x360)
and fed chunk by chunk: a 250 ms window of a dense 1Mpx scene holds millions of events, so a recording is read with
:func:`~spikeyolo.data.events.iter_dat` and each chunk is added to the window's tensor, never the whole window at
once. The result equals the one-array encoding exactly for ``spikeyolo`` and ``histogram`` (the last event of a
pixel wins across chunks; counts add); ``voxel`` sums float32 partial grids, which can differ from the one-array
float64 sum in the last bit and so move a stored level by one in rare cases (never for a window of one chunk).

Downsampling by ``d`` maps an event at (x, y) to (x // d, y // d) on a ``W // d`` x ``H // d`` grid:

    nearest  keeps only the events with x % d == y % d == d // 2: the representation computed at full size and then
             resized with torch's ``interpolate(mode="nearest-exact")`` (RVT's ``downsample_ev_repr``,
             scripts/genx/preprocess_dataset.py L467-477, L525-528), whose output pixel i reads input pixel
             floor((i + 0.5) * d) = i * d + d // 2; exactly equal, since every encoding is per pixel.
    sum      keeps every event (2x2 sum pooling of counts; the last event of the block for ``spikeyolo``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from spikeyolo.data.cache import cache_key
from spikeyolo.data.events import (EVENT_DTYPE, event_histogram, iter_dat, spikeyolo_frames, stacked_histogram,
                                   voxel_grid)
from spikeyolo.errors import DatasetError

__all__ = ["REPRESENTATIONS", "DOWNSAMPLE_MODES", "CHUNK_EVENTS", "Representation", "downsample_events"]

CACHE_VERSION = 1   # bump when the cached arrays change meaning
REPRESENTATIONS = ("spikeyolo", "histogram", "voxel", "stacked_histogram")
DOWNSAMPLE_MODES = ("nearest", "sum")
CHUNK_EVENTS = 1 << 20   # events decoded and encoded at a time (about 80 MB of temporaries)
_EMPTY_VALUE = {"spikeyolo": 114, "histogram": 0, "voxel": 128,   # letterbox padding of each representation
                "stacked_histogram": 0}
_GREY = 127                                                        # a spikeyolo pixel without events


def downsample_events(events: np.ndarray, factor: int, mode: str, width: int, height: int) -> np.ndarray:
    """The events on a grid ``factor`` times coarser (``width // factor`` x ``height // factor``), see the module doc.

    Args:
        events: [N] structured array with fields t, x, y, p.
        factor: d >= 1 (1 returns ``events`` unchanged).
        mode: ``nearest`` or ``sum``.
        width, height: the sensor size the events are on.

    Returns:
        [M] events (a new array when d > 1), M <= N, in the same order.

    Raises:
        ValueError: an event outside the ``width`` x ``height`` sensor.
    """
    if factor == 1:
        return events
    x, y = events["x"], events["y"]
    if len(events) and (int(x.max()) >= width or int(y.max()) >= height):
        raise ValueError(f"events outside the {width}x{height} sensor: x up to {int(x.max())}, y up to {int(y.max())}")
    if mode == "nearest":
        centre = factor // 2
        keep = (x % factor == centre) & (y % factor == centre)
    else:
        keep = np.ones(len(events), bool)
    keep &= (x < width // factor * factor) & (y < height // factor * factor)   # the grid drops a partial block
    out = events[keep]                                                          # a copy (boolean index)
    out["x"] //= factor
    out["y"] //= factor
    return out


def _in_window(chunks: Iterable[np.ndarray], start: int, end: int) -> Iterable[np.ndarray]:
    """The events of ``chunks`` with ``start <= t < end``, chunk by chunk; empty chunks are skipped (a window's
    chunks usually lie inside it and pass unfiltered)."""
    for chunk in chunks:
        t = chunk["t"]
        if len(chunk) and (int(t.min()) < start or int(t.max()) >= end):
            chunk = chunk[(t >= start) & (t < end)]
        if len(chunk):
            yield chunk


@dataclass(frozen=True)
class Representation:
    """How a window of events becomes a [T, C, H, W] uint8 tensor.

    All three cut the window ``[t - window_us, t)`` into T slices of ``window_us // T`` µs (oldest first here;
    the loader reverses them when asked), as the reference's ``pre_gen1.py`` does.

    Args:
        kind: ``spikeyolo`` (grey frames, an event paints its pixel 0 / 255, 3 equal channels; reference §6),
            ``histogram`` (per-polarity counts, 2 channels OFF/ON, saturating at 255) or ``voxel`` (a bilinear
            voxel grid of ``voxel_bins`` bins per slice, stored as ``128 + v * 127 / voxel_clip`` clipped to
            [0, 255], so 128 is "no net event") or ``stacked_histogram`` (RVT's input: per slice ``2 * stack_bins``
            channels of counts, polarity-major, clipped to ``count_cutoff``;
            :func:`~spikeyolo.data.events.representations.stacked_histogram`; RVT's Gen1 / 1Mpx setting is
            T x 50 ms slices, 10 bins, cutoff 10).
        time_steps: T.
        window_us: window length (reference: 250000).
        voxel_bins: channels of ``voxel``.
        voxel_clip: the |net polarity| per pixel and bin that saturates a ``voxel`` channel.
        stack_bins, count_cutoff: ``stacked_histogram``'s bins per slice and count ceiling (RVT: 10, 10).
        stack_slice_us: ``stacked_histogram``'s slice length when slices are not contiguous (0: ``window_us // T``;
            RVT's Gen1: 50000 with ``window_us = T * 125000``, its frames being 125 ms apart).
        clamp_start: ``spikeyolo`` only: a window that would begin before t = 0 starts at 0 (the reference with
            numpy 1.x, see docs/events.md).
        downsample: d: the tensor is ``W // d`` x ``H // d`` (1: the sensor size; RVT's 1Mpx setting: 2).
        downsample_mode: ``nearest`` (RVT) or ``sum`` (:func:`downsample_events`); ``stacked_histogram``
            downsamples as RVT only (``nearest``: its bins come from all of a slice's events).
    """

    kind: str = "spikeyolo"
    time_steps: int = 2
    window_us: int = 250_000
    voxel_bins: int = 3
    voxel_clip: float = 4.0
    clamp_start: bool = False
    downsample: int = 1
    downsample_mode: str = "nearest"
    stack_bins: int = 10
    count_cutoff: int = 10
    stack_slice_us: int = 0

    def __post_init__(self) -> None:
        if self.kind not in REPRESENTATIONS:
            raise DatasetError(f"data.representation must be one of {', '.join(REPRESENTATIONS)}, got {self.kind!r}")
        if int(self.time_steps) < 1:
            raise DatasetError(f"data.time_steps must be >= 1, got {self.time_steps}")
        if int(self.window_us) < int(self.time_steps):
            raise DatasetError(f"data.window_us={self.window_us} is shorter than {self.time_steps} slices of 1 µs")
        if self.kind == "voxel" and (int(self.voxel_bins) < 1 or float(self.voxel_clip) <= 0):
            raise DatasetError(f"data.voxel_bins must be >= 1 and data.voxel_clip > 0, got {self.voxel_bins}, "
                               f"{self.voxel_clip}")
        if self.kind == "stacked_histogram" and (int(self.stack_bins) < 1 or not 1 <= int(self.count_cutoff) <= 255
                                                 or self.downsample_mode != "nearest" or int(self.stack_slice_us) < 0
                                                 or int(self.stack_slice_us) > int(self.window_us)):
            raise DatasetError(f"stacked_histogram needs data.stack_bins >= 1, data.count_cutoff in [1, 255], "
                               f"data.stack_slice_us in [0, window_us] and data.downsample_mode=nearest, got "
                               f"{self.stack_bins}, {self.count_cutoff}, {self.stack_slice_us}, "
                               f"{self.downsample_mode!r}")
        if int(self.downsample) < 1 or self.downsample_mode not in DOWNSAMPLE_MODES:
            raise DatasetError(f"data.downsample must be >= 1 and data.downsample_mode one of "
                               f"{', '.join(DOWNSAMPLE_MODES)}, got {self.downsample}, {self.downsample_mode!r}")

    @property
    def channels(self) -> int:
        """C, the model's input channels (``model.in_chs``)."""
        return {"spikeyolo": 3, "histogram": 2, "voxel": int(self.voxel_bins),
                "stacked_histogram": 2 * int(self.stack_bins)}[self.kind]

    @property
    def slice_us(self) -> int:
        """A slice's length in µs (``stack_slice_us``, else ``window_us // T``)."""
        return int(self.stack_slice_us) or int(self.window_us) // int(self.time_steps)

    @property
    def stored_channels(self) -> int:
        """Channels kept in the cache (``spikeyolo``'s 3 equal channels are stored once)."""
        return 1 if self.kind == "spikeyolo" else self.channels

    @property
    def empty_value(self) -> int:
        """The value of "no events" (letterbox padding): 114 for ``spikeyolo`` as the reference, else 0 / 128."""
        return _EMPTY_VALUE[self.kind]

    def key(self) -> str:
        """Cache key of everything that changes the cached arrays (the keys of Gen1 caches are those of
        ``downsample=1`` before downsampling existed, so those caches stay valid)."""
        parts: list[object] = [CACHE_VERSION, self.kind, int(self.time_steps), int(self.window_us)]
        if self.kind == "voxel":
            parts += [int(self.voxel_bins), float(self.voxel_clip)]
        if self.kind == "spikeyolo":
            parts.append(bool(self.clamp_start))
        if self.kind == "stacked_histogram":
            parts += [int(self.stack_bins), int(self.count_cutoff), self.slice_us]
        scale = ""
        if int(self.downsample) != 1:
            parts += ["downsample", int(self.downsample), self.downsample_mode]
            scale = f"_ds{int(self.downsample)}{self.downsample_mode}"
        return f"{self.kind}_T{int(self.time_steps)}_{int(self.window_us) // 1000}ms{scale}_{cache_key(*parts)}"

    def grid_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the tensor of a ``width`` x ``height`` sensor."""
        return int(width) // int(self.downsample), int(height) // int(self.downsample)

    def window(self, t_end_us: int) -> tuple[int, int]:
        """[start, end) of the events the window ending at ``t_end_us`` reads (``clamp_start`` moves it to 0)."""
        start, end = int(t_end_us) - int(self.window_us), int(t_end_us)
        if self.kind == "spikeyolo" and self.clamp_start and start < 0:
            start, end = 0, int(self.window_us)
        if self.kind == "stacked_histogram":   # RVT's slices include their end time
            start = end - (int(self.window_us) // int(self.time_steps)) * (int(self.time_steps) - 1) - self.slice_us
            end += 1
        return start, end

    def encode(self, events: np.ndarray, t_end_us: int, width: int, height: int) -> np.ndarray:
        """The window ending at ``t_end_us`` as [T, Cs, H // d, W // d] uint8, slice 0 the oldest (Cs:
        ``stored_channels``); ``events`` may hold more than the window (the rest is ignored)."""
        return self.encode_chunks([events], t_end_us, width, height)[0]

    def encode_file(self, path: str | os.PathLike, t_end_us: int, width: int, height: int,
                    chunk_events: int = CHUNK_EVENTS) -> tuple[np.ndarray, int]:
        """:meth:`encode` of the window read from a ``.dat`` file ``chunk_events`` at a time; returns (tensor,
        number of events in the window)."""
        start, end = self.window(t_end_us)
        return self.encode_chunks(iter_dat(path, start, end, chunk_events=chunk_events), t_end_us, width, height)

    def encode_chunks(self, chunks: Iterable[np.ndarray], t_end_us: int, width: int,
                      height: int) -> tuple[np.ndarray, int]:
        """:meth:`encode` of the events given as consecutive chunks (in time order); returns (tensor, number of
        events in the window).

        Raises:
            ValueError: an event inside the window but outside the sensor, or a polarity outside {0, 1}.
        """
        steps, window = int(self.time_steps), int(self.window_us)
        start, end = self.window(t_end_us)
        grid_w, grid_h = self.grid_size(width, height)
        if self.kind == "stacked_histogram":
            return self._stack(chunks, t_end_us, width, height, start, end)
        if self.kind == "spikeyolo":
            out = np.full((steps, 1, grid_h, grid_w), _GREY, np.uint8)
        elif self.kind == "histogram":
            out = np.zeros((steps, 2, grid_h, grid_w), np.int64)
        else:
            out = np.zeros((steps, int(self.voxel_bins), grid_h, grid_w), np.float32)
        count = 0
        for chunk in _in_window(chunks, start, end):
            count += len(chunk)
            chunk = downsample_events(chunk, int(self.downsample), self.downsample_mode, width, height)
            self._add(out, chunk, t_end_us, grid_w, grid_h, steps, window)
        if self.kind == "histogram":
            return np.minimum(out, 255).astype(np.uint8), count
        if self.kind == "voxel":
            scaled = 128.0 + out * (127.0 / float(self.voxel_clip))                     # [T, B, H, W] float32
            return np.clip(np.rint(scaled), 0, 255).astype(np.uint8), count
        return out, count

    def _stack(self, chunks: Iterable[np.ndarray], t_end_us: int, width: int, height: int, start: int,
               end: int) -> tuple[np.ndarray, int]:
        """``stacked_histogram``: a slice's bins depend on its first and last event, so the window's events are
        gathered first (RVT holds them the same way)."""
        kept = list(_in_window(chunks, start, end))
        events = kept[0] if len(kept) == 1 else np.concatenate(kept) if kept else np.empty(0, EVENT_DTYPE)
        return stacked_histogram(events, t_end_us, time_steps=int(self.time_steps), width=width, height=height,
                                 window_us=int(self.window_us), bins=int(self.stack_bins),
                                 count_cutoff=int(self.count_cutoff), downsample=int(self.downsample),
                                 slice_us=self.slice_us), len(events)

    def _add(self, out: np.ndarray, events: np.ndarray, t_end_us: int, width: int, height: int, steps: int,
             window: int) -> None:
        """Add one chunk of in-window events (on the tensor's grid) to ``out``."""
        if self.kind == "spikeyolo":
            frames = spikeyolo_frames(events, t_end_us, time_steps=steps, width=width, height=height,
                                      window_us=window, clamp_start=self.clamp_start)[..., 0]   # [T, H, W]
            painted = frames != _GREY            # this chunk's last event of each pixel replaces earlier chunks'
            out[:, 0][painted] = frames[painted]
        elif self.kind == "histogram":
            out += event_histogram(events, t_end_us, time_steps=steps, width=width, height=height, window_us=window)
        else:
            slice_us = window // steps
            first = int(t_end_us) - window
            for index in range(steps):                                                  # T x [B, H, W]
                out[index] += voxel_grid(events, first + (index + 1) * slice_us, num_bins=int(self.voxel_bins),
                                         width=width, height=height, window_us=slice_us)
