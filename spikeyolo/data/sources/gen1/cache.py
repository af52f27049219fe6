"""Gen1 preprocessing: every sample's event tensor computed once into a cache, one file per recording.

Decoding 250 ms of events and building the frames on the fly costs more than a training step, so each
recording's samples (one per unique label time) are encoded once into
``cache_root()/gen1/<representation key>/<split key>/<recording>-<source stamp>.npz``:

    frames      [S, T, Cs, H, W] uint8   slice 0 = the oldest; Cs = 1 for ``spikeyolo`` (its 3 channels are equal)
    t_us        [S] int64                the label times (window ends)
    num_events  [S] int64                events inside each window

The file is an uncompressed ``.npz`` written atomically (temp file + rename), so an interrupted build leaves only
whole files and the next build skips them (resumable). The source stamp (size and mtime of the ``.dat`` and the
``_bbox.npy``) is part of the name, so an edited recording is rebuilt. ``frames`` is memory-mapped straight out
of the archive when reading (:func:`open_frames`), so a sample costs one page-cache read, not a decompression.
"""

from __future__ import annotations

import multiprocessing
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spikeyolo.data.cache import cache_key, cache_root
from spikeyolo.data.events import EventFileError, read_boxes, read_dat, read_dat_header
from spikeyolo.data.events.representations import event_histogram, spikeyolo_frames, voxel_grid
from spikeyolo.data.sources.gen1.labels import group_by_time
from spikeyolo.errors import DatasetError
from spikeyolo.io import atomic_write

__all__ = ["REPRESENTATIONS", "Representation", "Recording", "find_recordings", "split_cache_dir",
           "cache_file", "build_cache", "open_frames"]

CACHE_VERSION = 1   # bump when the cached arrays change meaning
REPRESENTATIONS = ("spikeyolo", "histogram", "voxel")
_EMPTY_VALUE = {"spikeyolo": 114, "histogram": 0, "voxel": 128}   # letterbox padding of each representation


@dataclass(frozen=True)
class Representation:
    """How a window of events becomes a [T, C, H, W] uint8 tensor.

    All three cut the window ``[t - window_us, t)`` into T slices of ``window_us // T`` µs (oldest first here;
    the loader reverses them when asked), as the reference's ``pre_gen1.py`` does.

    Args:
        kind: ``spikeyolo`` (grey frames, an event paints its pixel 0 / 255, 3 equal channels; reference §6),
            ``histogram`` (per-polarity counts, 2 channels OFF/ON, saturating at 255) or ``voxel`` (a bilinear
            voxel grid of ``voxel_bins`` bins per slice, stored as ``128 + v * 127 / voxel_clip`` clipped to
            [0, 255], so 128 is "no net event").
        time_steps: T.
        window_us: window length (reference: 250000).
        voxel_bins: channels of ``voxel``.
        voxel_clip: the |net polarity| per pixel and bin that saturates a ``voxel`` channel.
        clamp_start: ``spikeyolo`` only: a window that would begin before t = 0 starts at 0 (the reference with
            numpy 1.x, see docs/events.md).
    """

    kind: str = "spikeyolo"
    time_steps: int = 2
    window_us: int = 250_000
    voxel_bins: int = 3
    voxel_clip: float = 4.0
    clamp_start: bool = False

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

    @property
    def channels(self) -> int:
        """C, the model's input channels (``model.in_chs``)."""
        return {"spikeyolo": 3, "histogram": 2, "voxel": int(self.voxel_bins)}[self.kind]

    @property
    def stored_channels(self) -> int:
        """Channels kept in the cache (``spikeyolo``'s 3 equal channels are stored once)."""
        return 1 if self.kind == "spikeyolo" else self.channels

    @property
    def empty_value(self) -> int:
        """The value of "no events" (letterbox padding): 114 for ``spikeyolo`` as the reference, else 0 / 128."""
        return _EMPTY_VALUE[self.kind]

    def key(self) -> str:
        """Cache key of everything that changes the cached arrays."""
        parts: list[object] = [CACHE_VERSION, self.kind, int(self.time_steps), int(self.window_us)]
        if self.kind == "voxel":
            parts += [int(self.voxel_bins), float(self.voxel_clip)]
        if self.kind == "spikeyolo":
            parts.append(bool(self.clamp_start))
        return f"{self.kind}_T{int(self.time_steps)}_{int(self.window_us) // 1000}ms_{cache_key(*parts)}"

    def encode(self, events: np.ndarray, t_end_us: int, width: int, height: int) -> np.ndarray:
        """The window ending at ``t_end_us`` as [T, Cs, H, W] uint8, slice 0 the oldest (Cs: ``stored_channels``)."""
        steps, window = int(self.time_steps), int(self.window_us)
        if self.kind == "spikeyolo":
            frames = spikeyolo_frames(events, t_end_us, time_steps=steps, width=width, height=height,
                                      window_us=window, clamp_start=self.clamp_start)
            return np.ascontiguousarray(frames[..., :1].transpose(0, 3, 1, 2))   # [T, H, W, 3] -> [T, 1, H, W]
        if self.kind == "histogram":
            counts = event_histogram(events, t_end_us, time_steps=steps, width=width, height=height,
                                     window_us=window)
            return np.minimum(counts, 255).astype(np.uint8)                     # [T, 2, H, W]
        slice_us = window // steps
        start = int(t_end_us) - window
        grids = [voxel_grid(events, start + (i + 1) * slice_us, num_bins=int(self.voxel_bins), width=width,
                            height=height, window_us=slice_us) for i in range(steps)]   # T x [B, H, W]
        scaled = 128.0 + np.stack(grids) * (127.0 / float(self.voxel_clip))             # [T, B, H, W]
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Recording:
    """One Gen1 recording: ``<name>_td.dat`` and ``<name>_bbox.npy`` in a split folder."""

    name: str
    dat_path: Path
    box_path: Path

    def stamp(self) -> str:
        """A short hash of both files' size and mtime (part of the cache file name)."""
        stats = [(p.stat().st_size, p.stat().st_mtime_ns) for p in (self.dat_path, self.box_path)]
        return cache_key(*stats)


def find_recordings(split_dir: str | os.PathLike) -> list[Recording]:
    """The recordings of a split folder, sorted by name.

    Raises:
        DatasetError: the folder does not exist, or a ``_td.dat`` lacks its ``_bbox.npy`` (or the reverse).
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise DatasetError(f"{split_dir}: Gen1 split folder does not exist")
    dats = {p.name[: -len("_td.dat")]: p for p in split_dir.glob("*_td.dat")}
    boxes = {p.name[: -len("_bbox.npy")]: p for p in split_dir.glob("*_bbox.npy")}
    for missing, have, suffix in ((set(dats) - set(boxes), dats, "_bbox.npy"),
                                  (set(boxes) - set(dats), boxes, "_td.dat")):
        if missing:
            name = sorted(missing)[0]
            raise DatasetError(f"{have[name]}: no matching {name}{suffix} beside it "
                               f"({len(missing)} unpaired file(s) in {split_dir})")
    return [Recording(name, dats[name], boxes[name]) for name in sorted(dats)]


def split_cache_dir(split_dir: str | os.PathLike, representation: Representation) -> Path:
    """``cache_root()/gen1/<representation key>/<split folder key>`` (not created)."""
    split_dir = Path(split_dir).resolve()
    return cache_root() / "gen1" / representation.key() / f"{split_dir.name}_{cache_key(split_dir)}"


def cache_file(cache_dir: Path, recording: Recording) -> Path:
    return cache_dir / f"{recording.name}-{recording.stamp()}.npz"


def build_recording(recording: Recording, representation: Representation, out_path: Path) -> Path:
    """Encode every label time of one recording and write its cache file atomically."""
    header = read_dat_header(recording.dat_path)
    times, _ = group_by_time(read_boxes(recording.box_path))
    shape = (len(times), int(representation.time_steps), representation.stored_channels, header.height,
             header.width)
    frames = np.empty(shape, np.uint8)                                   # [S, T, Cs, H, W]
    num_events = np.zeros(len(times), np.int64)
    window = int(representation.window_us)
    for index, t_end in enumerate(times.tolist()):
        t_start = t_end - window
        if representation.kind == "spikeyolo" and representation.clamp_start and t_start < 0:
            t_start, t_end = 0, window
        events = read_dat(recording.dat_path, t_start, t_end)
        num_events[index] = len(events)
        try:
            frames[index] = representation.encode(events, int(times[index]), header.width, header.height)
        except ValueError as err:   # an event outside the sensor or a bad polarity
            raise EventFileError(f"{recording.dat_path}: {err}") from None
    with atomic_write(out_path) as handle:
        np.savez(handle, frames=frames, t_us=times, num_events=num_events)
    return out_path


def _build_job(job: tuple[Recording, Representation, Path]) -> str:
    recording, representation, out_path = job
    build_recording(recording, representation, out_path)
    return recording.name


def build_cache(recordings: list[Recording], representation: Representation, cache_dir: Path,
                workers: int | None = None, progress: bool = True, desc: str = "gen1 cache") -> dict[str, int]:
    """Make sure every recording has its cache file; build the missing ones in ``workers`` processes.

    Args:
        recordings: the recordings of one split.
        representation: what to encode.
        cache_dir: :func:`split_cache_dir`.
        workers: processes (default: the CPU count; 0 or 1 builds in this process).
        progress: show a tqdm bar.

    Returns:
        {"built": n, "skipped": m} (skipped: already cached).
    """
    jobs = [(rec, representation, cache_file(cache_dir, rec)) for rec in recordings]
    missing = [job for job in jobs if not job[2].is_file()]
    if not missing:
        return {"built": 0, "skipped": len(jobs)}
    cache_dir.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    workers = max(1, min(workers, len(missing)))
    with tqdm(total=len(missing), desc=desc, unit="rec", disable=not progress, leave=False) as bar:
        if workers == 1:
            for job in missing:
                _build_job(job)
                bar.update(1)
        else:
            with multiprocessing.get_context().Pool(workers) as pool:
                for _ in pool.imap_unordered(_build_job, missing):
                    bar.update(1)
    return {"built": len(missing), "skipped": len(jobs) - len(missing)}


def open_frames(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames memmap [S, T, Cs, H, W] uint8, t_us [S], num_events [S]) of a cache file.

    ``frames`` is memory-mapped inside the uncompressed archive: its offset is the member's local header plus
    the ``.npy`` header.
    """
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("frames.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            raise DatasetError(f"{path}: frames.npy is compressed; delete the file to rebuild it")
        t_us = np.load(archive.open("t_us.npy"))
        num_events = np.load(archive.open("num_events.npy"))
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)
        if local[:4] != b"PK\x03\x04":
            raise DatasetError(f"{path}: not a valid cache archive; delete the file to rebuild it")
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        handle.seek(info.header_offset + 30 + name_length + extra_length)
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(handle)
        offset = handle.tell()
    frames = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran_order else "C")
    return frames, t_us, num_events
