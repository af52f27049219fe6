"""Adapters to the event-file decoders of the field (faery, evt3, aedat, h5py): one small function per library.

Each adapter takes a path (and what the header gave: format, sensor size) and yields column tuples
``(t, x, y, p)`` of numpy arrays, one bounded batch at a time, in file order. Nothing here converts to the
project's dtype or checks ranges: :mod:`spikeyolo.data.events.recordings` does that once for all of them.
The libraries are optional (the ``events`` extra); a missing one is a one-line :class:`UserError`.

Library facts these adapters rely on (faery 0.7.1, evt3 0.4.1, aedat 2.3.0, h5py 3.16, hdf5plugin 7.1):

- faery's ``evt.Decoder(path, dimensions_fallback, version_fallback)`` yields dicts with an ``"events"`` array
  (t u8, x u2, y u2, on bool); it keeps t non-decreasing (a TIME_LOW word that steps back is held at the
  previous time). ``aedat.Decoder`` yields ``(track, packet)`` pairs, ``dat.Decoder`` arrays with a 4-bit
  ``payload``.
- evt3's ``decode_file_batches(path, batch_bytes)`` yields ``Events`` (t u8, x u2, y u2, p u1), each TIME_LOW
  word taken as written (as the EVT 3.0 specification says).
- aedat's ``Decoder(path)`` yields dicts; polarity events under ``"events"`` (t i8, x u2, y u2, on bool).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import numpy as np

from spikeyolo.errors import EventFileError, UserError

Columns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]   # t, x, y, p; each [n]

INSTALL_HINT = 'pip install -e ".[events]"'
ECF_FILTER_ID = 0x8ECF            # Prophesee's ECF codec for Metavision HDF5 event tables (HDF5 filter 36559)
_H5_BATCH = 1 << 20               # rows per HDF5 slice
_H5_MAX_CHUNK_BYTES = 256 << 20   # an HDF5 chunk is decompressed whole: refuse larger ones


def require(module: str, purpose: str):
    """Import an optional decoder library, or raise one line naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{purpose} needs the Python package '{module.split('.')[0]}', which is not installed: "
                        f"{INSTALL_HINT}") from None


def faery_evt(path: str, version: str, size: tuple[int, int], chunk_bytes: int) -> Iterator[Columns]:
    """Prophesee EVT 2.0 / 2.1 / 3.0 (``.raw``) through faery; ``version`` is "evt2", "evt2.1" or "evt3"."""
    faery = require("faery", f"reading {version.upper()} .raw files")
    with faery.evt.Decoder(path, size, version) as decoder:
        for packet in decoder:
            events = packet.get("events")
            if events is not None and len(events):
                yield events["t"], events["x"], events["y"], events["on"]


def evt3_raw(path: str, version: str, size: tuple[int, int], chunk_bytes: int) -> Iterator[Columns]:
    """Prophesee EVT 3.0 (``.raw``) through the evt3 package, ``chunk_bytes`` of the file at a time."""
    if version != "evt3":
        raise UserError(f"{path}: the evt3 library reads EVT 3.0 only, this file is {version.upper()}: "
                        "use library='faery'")
    evt3 = require("evt3", "reading EVT 3.0 .raw files with library='evt3'")
    for batch in evt3.decode_file_batches(path, batch_bytes=int(chunk_bytes)):
        if len(batch.t):
            yield batch.t, batch.x, batch.y, batch.p


def faery_aedat(path: str, version: str, size: tuple[int, int], chunk_bytes: int) -> Iterator[Columns]:
    """AEDAT 4.0 (iniVation) through faery: the first track of type "events"."""
    faery = require("faery", "reading .aedat4 files")
    with faery.aedat.Decoder(path) as decoder:
        track_id = next((track.id for track in decoder.tracks() if track.data_type == "events"), None)
        if track_id is None:
            raise EventFileError(f"{path}: the AEDAT4 file has no event track")
        for track, packet in decoder:
            if track.id == track_id and len(packet):
                yield packet["t"], packet["x"], packet["y"], packet["on"]


def aedat_aedat(path: str, version: str, size: tuple[int, int], chunk_bytes: int) -> Iterator[Columns]:
    """AEDAT 4.0 through the aedat package: packets of the first stream of type "events"."""
    aedat = require("aedat", "reading .aedat4 files with library='aedat'")
    decoder = aedat.Decoder(path)
    streams = decoder.id_to_stream()
    stream_id = min((key for key, value in streams.items() if value.get("type") == "events"), default=None)
    if stream_id is None:
        raise EventFileError(f"{path}: the AEDAT4 file has no event stream")
    for packet in decoder:
        if packet.get("stream_id") == stream_id and "events" in packet and len(packet["events"]):
            events = packet["events"]
            yield events["t"], events["x"], events["y"], events["on"]


def aedat_size(path: str, library: str) -> tuple[int, int]:
    """Sensor (width, height) of the first event track of an AEDAT 4.0 file, from its header."""
    if library == "aedat":
        aedat = require("aedat", "reading .aedat4 files with library='aedat'")
        streams = aedat.Decoder(path).id_to_stream()
        stream = next((streams[key] for key in sorted(streams) if streams[key].get("type") == "events"), None)
        if stream is None:
            raise EventFileError(f"{path}: the AEDAT4 file has no event stream")
        return int(stream["width"]), int(stream["height"])
    faery = require("faery", "reading .aedat4 files")
    with faery.aedat.Decoder(path) as decoder:
        track = next((track for track in decoder.tracks() if track.data_type == "events"), None)
    if track is None or track.dimensions is None:
        raise EventFileError(f"{path}: the AEDAT4 file has no event track with a sensor size")
    return int(track.dimensions[0]), int(track.dimensions[1])


def faery_dat(path: str, version: str, size: tuple[int, int], chunk_bytes: int) -> Iterator[Columns]:
    """Prophesee ``.dat`` (Version 2) through faery (for comparison; the project's own reader is the default)."""
    faery = require("faery", "reading .dat files with library='faery'")
    with faery.dat.Decoder(path, size, "dat2") as decoder:
        if decoder.event_type != "cd":
            raise EventFileError(f"{path}: faery reads the .dat event type {decoder.event_type!r}, not CD/TD events")
        for events in decoder:
            if len(events):
                yield events["t"], events["x"], events["y"], events["payload"] & 1


def _hdf5_table(handle, path: str):
    """The event table of an HDF5 recording: Metavision's ``CD/events`` compound table, or ``events/{t,x,y,p}`` (one
    dataset per field: RVT's ``_td.dat.h5`` of Gen1 / 1Mpx, DSEC's ``events.h5`` with its ``t_offset``)."""
    if "CD" in handle and "events" in handle["CD"]:
        return handle["CD"]["events"]
    if "events" in handle and all(name in handle["events"] for name in "txyp"):
        return handle["events"]
    raise EventFileError(f"{path}: an HDF5 file without an event table (looked for CD/events, Metavision's "
                         "layout, and events/t,x,y,p)")


def check_filters(dataset, path: str) -> None:
    """Refuse, in one line, a dataset compressed with a filter this installation cannot decode, or huge chunks."""
    h5py = require("h5py", "reading HDF5 event files")
    if dataset.chunks is not None and int(np.prod(dataset.chunks)) * dataset.dtype.itemsize > _H5_MAX_CHUNK_BYTES:
        raise EventFileError(f"{path}: HDF5 chunks of {int(np.prod(dataset.chunks)) * dataset.dtype.itemsize} bytes "
                             f"(more than {_H5_MAX_CHUNK_BYTES >> 20} MB would be decompressed at once)")
    plist = dataset.id.get_create_plist()
    for index in range(plist.get_nfilters()):
        filter_id = plist.get_filter(index)[0]
        if filter_id == ECF_FILTER_ID:
            raise EventFileError(f"{path}: the events are compressed with Prophesee's ECF codec (HDF5 filter "
                                 f"{ECF_FILTER_ID}), which no package on PyPI decodes (hdf5plugin has no ECF); "
                                 "convert the file to .raw or .dat with Metavision/OpenEB first")
        if not h5py.h5z.filter_avail(filter_id):
            raise EventFileError(f"{path}: the events are compressed with HDF5 filter {filter_id}, which is not "
                                 f"available here ({INSTALL_HINT} installs hdf5plugin's filters)")


def hdf5_size(path: str) -> tuple[int, int] | None:
    """(width, height) from an HDF5 recording (Metavision: root attributes ``width``/``height`` or ``geometry``;
    RVT's ``_td.dat.h5``: scalar datasets ``events/width``, ``events/height``), or None."""
    h5py = require("h5py", "reading HDF5 event files")
    with h5py.File(path, "r") as handle:
        events = handle.get("events")
        if isinstance(events, h5py.Group) and all(isinstance(events.get(key), h5py.Dataset) and events[key].size == 1
                                                  for key in ("width", "height")):
            return int(np.asarray(events["width"][()]).reshape(-1)[0]), \
                int(np.asarray(events["height"][()]).reshape(-1)[0])
        attrs = handle.attrs
        if "width" in attrs and "height" in attrs:
            return int(np.asarray(attrs["width"]).reshape(-1)[0]), int(np.asarray(attrs["height"]).reshape(-1)[0])
        if "geometry" in attrs:
            text = attrs["geometry"]
            text = text.decode("latin-1") if isinstance(text, bytes) else str(text)
            width, _, height = text.partition("x")
            if width.strip().isdigit() and height.strip().isdigit():
                return int(width), int(height)
    return None


def h5py_with_filters(purpose: str):
    """h5py (or one line naming the extra), with hdf5plugin's filters registered when it is installed (Blosc,
    Zstd, LZ4, ...: what Metavision's and RVT's files are compressed with, ECF aside)."""
    h5py = require("h5py", purpose)
    try:
        importlib.import_module("hdf5plugin")
    except ImportError:
        pass
    return h5py


def h5py_hdf5(path: str, version: str, size: tuple[int, int], chunk_bytes: int) -> Iterator[Columns]:
    """HDF5 event tables through h5py (+ hdf5plugin's filters when installed), ``_H5_BATCH`` rows at a time."""
    h5py = h5py_with_filters("reading HDF5 event files")
    with h5py.File(path, "r") as handle:
        table = _hdf5_table(handle, path)
        if isinstance(table, h5py.Dataset):          # Metavision: one compound table x, y, p, t
            check_filters(table, path)
            names = table.dtype.names or ()
            if not all(name in names for name in "txyp"):
                raise EventFileError(f"{path}: CD/events has fields {list(names)}, not t, x, y, p")
            for start in range(0, len(table), _H5_BATCH):
                rows = table[start:start + _H5_BATCH]
                yield rows["t"], rows["x"], rows["y"], rows["p"]
            return
        columns = [table[name] for name in "txyp"]   # DSEC-like: one dataset per field
        for column in columns:
            check_filters(column, path)
        if len({len(column) for column in columns}) != 1:
            raise EventFileError(f"{path}: events/t, x, y, p have different lengths "
                                 f"{[len(column) for column in columns]}")
        offset = int(np.asarray(handle["t_offset"]).reshape(-1)[0]) if "t_offset" in handle else 0
        latest = None
        for start in range(0, len(columns[0]), _H5_BATCH):
            t, x, y, p = (column[start:start + _H5_BATCH] for column in columns)
            # a time that steps back is held at the latest one before it, as RVT's H5Reader._correct_time does
            # for its _td.dat.h5 files (a no-op on sorted files, e.g. DSEC's)
            t = t.astype(np.int64)
            if len(t) == 0:
                continue
            if latest is not None:
                t[0] = max(int(t[0]), latest)
            t = np.maximum.accumulate(t)
            latest = int(t[-1])
            yield t + offset, x, y, p


DECODERS = {
    ("evt2", "faery"): faery_evt, ("evt2.1", "faery"): faery_evt, ("evt3", "faery"): faery_evt,
    ("evt3", "evt3"): evt3_raw,
    ("aedat4", "faery"): faery_aedat, ("aedat4", "aedat"): aedat_aedat,
    ("dat", "faery"): faery_dat,
    ("hdf5", "h5py"): h5py_hdf5,
}

