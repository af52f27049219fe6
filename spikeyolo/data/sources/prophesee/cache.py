"""Preprocessing: every sample's event tensor computed once into a cache, one file per recording.

Decoding a window of events and building the tensor on the fly costs more than a training step, so each
recording's samples are encoded once into
``cache_root()/<camera>/<representation key>/<split key>/<recording>-<source stamp>.npz``:

    frames      [S, T, Cs, H, W] uint8   slice 0 = the oldest; Cs = 1 for ``spikeyolo`` (its 3 channels are equal);
                                         H x W the sensor's, divided by the representation's ``downsample``
    t_us        [S] int64                the sample times (window ends)
    num_events  [S] int64                events inside each window

The file is an uncompressed ``.npz`` written atomically (temp file + rename), so an interrupted build leaves only
whole files and the next build skips them (resumable); recordings are built in parallel processes. A recording
is streamed: each window is read and encoded in chunks (:meth:`Representation.encode_file`) and its tensor
written straight into the archive, so a builder holds one sample and one chunk of events, whatever the length
and event rate of the recording (the arrays are those ``np.savez`` would write). The source stamp (size and
mtime of the ``.dat`` and the ``_bbox.npy``) is part of the name, so an edited recording is rebuilt.
``frames`` is memory-mapped straight out of the archive when reading (:func:`open_frames`), so a sample costs
one page-cache read, not a decompression.
"""

from __future__ import annotations

import multiprocessing
import os
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spikeyolo.data.cache import cache_key, cache_root
from spikeyolo.data.events import (RECORDING_SUFFIXES, EventFileError, RecordingInfo, detect_format, open_recording,
                                   read_boxes, recording_spans)
from spikeyolo.data.events.cameras import GEN1, Camera, sensor_size
from spikeyolo.data.sources.prophesee.encoding import CHUNK_EVENTS, Representation
from spikeyolo.data.sources.prophesee.labels import group_by_time
from spikeyolo.errors import DatasetError
from spikeyolo.io import atomic_write

__all__ = ["Recording", "find_recordings", "open_split_recording", "recording_size", "split_cache_dir", "cache_file",
           "build_recording", "build_cache", "open_frames"]


@dataclass(frozen=True)
class Recording:
    """One recording: its events (``<name>_td.dat``, or ``<name>_td.<ext>`` / ``<name>.<ext>`` for the other
    recording formats: ``.raw``, ``.aedat4``, ``.hdf5``, ``.h5``; ``dat_path``) and ``<name>_bbox.npy``."""

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
        raise DatasetError(f"{split_dir}: split folder does not exist")
    dats: dict[str, Path] = {}
    for path in sorted(split_dir.iterdir()):
        if path.suffix.lower() not in RECORDING_SUFFIXES or not path.is_file():
            continue
        name = path.stem
        for tail in ("_td.dat", "_td"):   # <name>_td.dat, <name>_td.raw, ...; RVT's events: <name>_td.dat.h5
            if name.endswith(tail):
                name = name[: -len(tail)]
                break
        if name in dats:
            raise DatasetError(f"{path}: a second recording named {name} beside {dats[name].name}")
        dats[name] = path
    boxes = {p.name[: -len("_bbox.npy")]: p for p in split_dir.glob("*_bbox.npy")}
    for missing, have, suffix in ((set(dats) - set(boxes), dats, "_bbox.npy"),
                                  (set(boxes) - set(dats), boxes, "_td.dat (or another recording format)")):
        if missing:
            name = sorted(missing)[0]
            raise DatasetError(f"{have[name]}: no matching {name}{suffix} beside it "
                               f"({len(missing)} unpaired file(s) in {split_dir})")
    return [Recording(name, dats[name], boxes[name]) for name in sorted(dats)]


def open_split_recording(recording: Recording, camera: Camera) -> RecordingInfo:
    """:func:`open_recording` of a dataset's recording; an HDF5 file that gives no sensor size has the camera's
    (RVT's ``_td.dat.h5``, whose reader falls back to the dataset's size the same way)."""
    fallback = (camera.width, camera.height) if detect_format(recording.dat_path)[0] == "hdf5" else None
    return open_recording(recording.dat_path, sensor_size=fallback)


def recording_size(info: RecordingInfo, camera: Camera) -> tuple[int, int]:
    """(width, height) of a recording: its header's; a .dat without one has the camera's (Gen1's files), another
    format the sensor its header names (:func:`spikeyolo.data.events.open_recording`)."""
    return (info.width, info.height) if info.format != "dat" else sensor_size(info, camera)


def split_cache_dir(split_dir: str | os.PathLike, representation: Representation, camera: str = "gen1",
                    sample_key: str | None = None) -> Path:
    """``cache_root()/<camera>/<representation key>/<split folder key>`` (not created).

    ``sample_key`` says which label times are samples when they are not all of them (it enters the split key);
    Gen1's cache folders (every label time) are those of the code before cameras existed.
    """
    split_dir = Path(split_dir).resolve()
    key = cache_key(split_dir) if sample_key is None else cache_key(split_dir, sample_key)
    return cache_root() / camera / representation.key() / f"{split_dir.name}_{key}"


def cache_file(cache_dir: Path, recording: Recording) -> Path:
    return cache_dir / f"{recording.name}-{recording.stamp()}.npz"


def _write_member(archive: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    with archive.open(name, "w", force_zip64=True) as member:   # as np.savez writes each array
        np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)


def build_recording(recording: Recording, representation: Representation, out_path: Path,
                    times: np.ndarray | None = None, camera: Camera = GEN1,
                    chunk_events: int = CHUNK_EVENTS) -> Path:
    """Encode the windows ending at ``times`` (default: every unique label time) of one recording and write its
    cache file atomically, one sample at a time."""
    info = open_split_recording(recording, camera)
    width, height = recording_size(info, camera)
    if times is None:
        times, _ = group_by_time(read_boxes(recording.box_path))
    times = np.asarray(times, np.int64)
    grid_w, grid_h = representation.grid_size(width, height)
    shape = (len(times), int(representation.time_steps), representation.stored_channels, grid_h, grid_w)
    num_events = np.zeros(len(times), np.int64)
    with atomic_write(out_path) as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        with archive.open("frames.npy", "w", force_zip64=True) as member:        # [S, T, Cs, H, W] uint8
            np.lib.format.write_array_header_1_0(member, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                                                          "fortran_order": False, "shape": shape})
            # a .dat is read at each window's offsets; the other formats have no index: one decoding pass
            windows = None if info.format == "dat" else recording_spans(
                info, [representation.window(t) for t in times.tolist()], chunk_events=chunk_events)
            for index, t_end in enumerate(times.tolist()):
                try:
                    if windows is None:
                        frames, num_events[index] = representation.encode_file(recording.dat_path, t_end, width,
                                                                               height, chunk_events)
                    else:
                        frames, num_events[index] = representation.encode_chunks([next(windows)], t_end, width,
                                                                                 height)
                except ValueError as err:   # an event outside the sensor or a bad polarity
                    raise EventFileError(f"{recording.dat_path}: {err}") from None
                member.write(frames.tobytes())
        _write_member(archive, "t_us.npy", times)
        _write_member(archive, "num_events.npy", num_events)
    return out_path


def _build_job(job: tuple[Recording, Representation, Path, np.ndarray | None, Camera]) -> str:
    recording, representation, out_path, times, camera = job
    build_recording(recording, representation, out_path, times, camera)
    return recording.name


def build_cache(recordings: list[Recording], representation: Representation, cache_dir: Path,
                workers: int | None = None, progress: bool = True, desc: str = "gen1 cache",
                times: Sequence[np.ndarray] | None = None, camera: Camera = GEN1) -> dict[str, int]:
    """Make sure every recording has its cache file; build the missing ones in ``workers`` processes.

    Args:
        recordings: the recordings of one split.
        representation: what to encode.
        cache_dir: :func:`split_cache_dir`.
        workers: processes (default: the CPU count; 0 or 1 builds in this process).
        progress: show a tqdm bar.
        times: per recording the sample times (default: every unique label time).
        camera: the release (its sensor size serves headers without one).

    Returns:
        {"built": n, "skipped": m} (skipped: already cached).
    """
    per_recording = list(times) if times is not None else [None] * len(recordings)
    jobs = [(rec, representation, cache_file(cache_dir, rec), rec_times, camera)
            for rec, rec_times in zip(recordings, per_recording, strict=True)]
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
    if shape[0] == 0:   # np.memmap refuses an empty mapping
        return np.empty(shape, dtype), t_us, num_events
    frames = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran_order else "C")
    return frames, t_us, num_events
