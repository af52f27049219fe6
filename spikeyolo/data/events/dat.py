"""Prophesee ``.dat`` event files (Gen1 ``*_td.dat``, Metavision CD ``.dat``): header, decoding, writing.

Layout (little-endian)::

    "% key value\\n" lines        ASCII header; every line starts with "%" (e.g. "% Version 2", "% Width 1280")
    1 byte   event type           0x00 (Event2D / TD, the Gen1 files) or 0x0C (EventCD); same record layout
    1 byte   event size           8
    records, 8 bytes each:
      uint32 t                    timestamp, microseconds
      uint32 w                    x = w & 0x3FFF (bits 0-13), y = (w >> 14) & 0x3FFF (bits 14-27),
                                  p = (w >> 28) & 1 (bit 28); bits 29-31 are ignored

Choices (see docs/events.md):

- ``% Width``/``% Height`` absent (both): the Gen1 camera's size (:data:`~spikeyolo.data.events.cameras.GEN1`)
  is assumed and :attr:`DatHeader.size_from_header` is False. Only one of them present is an error.
- ``% Version`` absent or 2: the 14/14-bit layout above. Any other version (the older "dat1" packs x/y into
  9/8 bits) is refused rather than decoded with the wrong masks.
- Headerless legacy files (records from byte 0) are refused: nothing in them says they are event files.
- uint32 timestamps wrap after 2^32 µs (71.6 min). A full read unwraps them (a backward jump of more than
  2^31 µs adds 2^32 to every later event); Gen1 recordings last about 60 s and never wrap. A windowed read
  bisects the raw uint32 column, so it needs a file whose timestamps are sorted and do not wrap; it raises
  :class:`EventFileError` where it can see that they are not.
- A window of a dense 1Mpx recording can hold tens of millions of events: :func:`iter_dat` yields it in chunks
  of at most ``chunk_events`` decoded events, so a reader's memory stays bounded whatever the window.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spikeyolo.data.events.cameras import GEN1
from spikeyolo.errors import EventFileError
from spikeyolo.io import atomic_write

__all__ = ["EVENT_DTYPE", "RECORD_DTYPE", "EVENT_TYPE_TD", "EVENT_TYPE_CD", "DatHeader",
           "read_dat_header", "read_dat", "iter_dat", "write_dat"]

#: Decoded events: t int64 µs, x/y uint16 pixels, p int8 in {0, 1}; aligned, 16 bytes per event.
EVENT_DTYPE = np.dtype({"names": ["t", "x", "y", "p"], "formats": ["<i8", "<u2", "<u2", "i1"],
                        "offsets": [0, 8, 10, 12], "itemsize": 16})
#: One 8-byte record as stored in the file.
RECORD_DTYPE = np.dtype([("t", "<u4"), ("w", "<u4")])
EVENT_TYPE_TD = 0x00
EVENT_TYPE_CD = 0x0C
EVENT_SIZE = 8

_COORD_BITS = 14
_COORD_MASK = (1 << _COORD_BITS) - 1      # 0x3FFF
_Y_SHIFT = 14
_P_SHIFT = 28
_T_MAX = (1 << 32) - 1
_WRAP_JUMP = 1 << 31                       # a backward jump larger than this is a clock wrap
_MAX_HEADER_BYTES = 1 << 20
_DECODE_CHUNK = 1 << 15                    # records per decoding block; the temporaries stay in cache


@dataclass(frozen=True)
class DatHeader:
    """What the header of a ``.dat`` file says, plus the record count derived from the file size.

    Args:
        path: the file.
        width, height: sensor size in pixels (Gen1's when the header has no size; see ``size_from_header``).
        size_from_header: False when the header had neither ``Width`` nor ``Height`` and Gen1's size was assumed.
        version: the ``% Version`` value (2 when absent).
        event_type: 0x00 (TD) or 0x0C (CD).
        event_size: bytes per record (always 8).
        data_offset: byte offset of the first record.
        num_events: number of records.
        fields: every header line as key -> value, in file order (e.g. ``{"Date": "2019-02-01 10:00:00"}``).
    """

    path: str
    width: int
    height: int
    size_from_header: bool
    version: int
    event_type: int
    event_size: int
    data_offset: int
    num_events: int
    fields: Mapping[str, str] = field(default_factory=dict, compare=False)


def _fail(path: str | os.PathLike, problem: str) -> EventFileError:
    return EventFileError(f"{os.fspath(path)}: {problem}")


def _header_int(path, fields: dict[str, str], key: str, low: int, high: int) -> int | None:
    value = next((v for k, v in fields.items() if k.lower() == key.lower()), None)
    if value is None:
        return None
    try:
        number = int(value.split()[0])
    except (ValueError, IndexError):
        raise _fail(path, f"header line '% {key} {value}' is not an integer") from None
    if not low <= number <= high:
        raise _fail(path, f"header {key} {number} is outside [{low}, {high}]")
    return number


def read_dat_header(path: str | os.PathLike) -> DatHeader:
    """Parse the header of a ``.dat`` file and check that the records fill the rest of it exactly.

    Raises:
        EventFileError: no "%" header, a header line without its newline, a non-integer or out-of-range
            Width/Height/Version, a missing event type/size pair, an unknown event type or size, or a file
            whose data part is not a whole number of 8-byte records.
    """
    path = Path(path)
    try:
        file_size = path.stat().st_size
        handle = open(path, "rb")
    except OSError as exc:
        raise _fail(path, f"cannot open: {exc.strerror or exc}") from None
    fields: dict[str, str] = {}
    with handle:
        offset = 0
        while handle.peek(1)[:1] == b"%":
            line = handle.readline(_MAX_HEADER_BYTES)
            offset += len(line)
            if not line.endswith(b"\n"):
                raise _fail(path, f"header line at byte {offset - len(line)} has no newline "
                                  "(the file ends inside the header, or it is not a .dat file)")
            if offset > _MAX_HEADER_BYTES:
                raise _fail(path, f"header longer than {_MAX_HEADER_BYTES} bytes: not a .dat file")
            key, _, value = line[1:].decode("latin-1").strip().partition(" ")
            if key:
                fields[key] = value.strip()
        if offset == 0:
            start = handle.read(8)
            raise _fail(path, "no header: a .dat file starts with '%' header lines "
                              f"(first bytes {start!r}; headerless legacy files are not supported)")
        type_and_size = handle.read(2)
    if len(type_and_size) < 2:
        raise _fail(path, f"file ends after the {offset}-byte header: the event type and size bytes are missing")
    event_type, event_size = type_and_size[0], type_and_size[1]
    if event_type not in (EVENT_TYPE_TD, EVENT_TYPE_CD):
        raise _fail(path, f"unknown event type 0x{event_type:02X} at byte {offset} "
                          f"(known: 0x{EVENT_TYPE_TD:02X} TD/Event2D, 0x{EVENT_TYPE_CD:02X} CD)")
    if event_size != EVENT_SIZE:
        raise _fail(path, f"unknown event size {event_size} at byte {offset + 1} (only {EVENT_SIZE}-byte records "
                          "are supported)")
    version = _header_int(path, fields, "Version", 0, 255)
    if version is None:
        version = 2
    if version != 2:
        raise _fail(path, f"header Version {version} is not supported (only the Version 2 layout: x bits 0-13, "
                          "y bits 14-27, polarity bit 28)")
    width = _header_int(path, fields, "Width", 1, 1 << _COORD_BITS)
    height = _header_int(path, fields, "Height", 1, 1 << _COORD_BITS)
    if (width is None) != (height is None):
        raise _fail(path, "header has one of Width/Height but not the other")
    size_from_header = width is not None
    data_offset = offset + 2
    data_bytes = file_size - data_offset
    if data_bytes % EVENT_SIZE:
        raise _fail(path, f"truncated: {data_bytes % EVENT_SIZE} trailing bytes after the last complete "
                          f"{EVENT_SIZE}-byte record (file {file_size} bytes, records from byte {data_offset})")
    return DatHeader(path=os.fspath(path), width=width if size_from_header else GEN1.width,
                     height=height if size_from_header else GEN1.height, size_from_header=size_from_header,
                     version=version, event_type=event_type, event_size=event_size, data_offset=data_offset,
                     num_events=data_bytes // EVENT_SIZE, fields=fields)


def _records(header: DatHeader) -> np.ndarray:
    """Memory-map the records of a file whose header was read; [N] RECORD_DTYPE (an empty array when N = 0)."""
    if header.num_events == 0:
        return np.empty(0, RECORD_DTYPE)
    mapped = np.memmap(header.path, dtype=RECORD_DTYPE, mode="r", offset=header.data_offset,
                       shape=(header.num_events,))
    return mapped.view(np.ndarray)      # plain ndarray (it keeps the mapping alive): cheaper scalar indexing


def _decode(records: np.ndarray) -> tuple[np.ndarray, bool]:
    """Decode [N] records to [N] EVENT_DTYPE block by block; also say whether any timestamp steps backwards."""
    num = len(records)
    events = np.empty(num, EVENT_DTYPE)
    out_t, out_x, out_y, out_p = events["t"], events["x"], events["y"], events["p"]
    scratch = np.empty(min(num, _DECODE_CHUNK), np.uint32)
    backwards = False
    previous_t = 0
    for start in range(0, num, _DECODE_CHUNK):
        stop = min(num, start + _DECODE_CHUNK)
        block = records[start:stop]
        words, tmp = block["w"], scratch[:stop - start]
        block_t = out_t[start:stop]
        block_t[...] = block["t"]                               # uint32 -> int64
        if not backwards:
            backwards = bool(block_t[0] < previous_t) or bool(np.any(block_t[1:] < block_t[:-1]))
            previous_t = block_t[-1]
        np.bitwise_and(words, _COORD_MASK, out=tmp)
        out_x[start:stop] = tmp
        np.right_shift(words, _Y_SHIFT, out=tmp)
        np.bitwise_and(tmp, _COORD_MASK, out=tmp)
        out_y[start:stop] = tmp
        np.right_shift(words, _P_SHIFT, out=tmp)
        np.bitwise_and(tmp, 1, out=tmp)
        out_p[start:stop] = tmp
    return events, backwards


def _unwrap(t: np.ndarray) -> None:
    """Undo uint32 clock wraps in place: each backward jump larger than 2^31 µs adds 2^32 to later events."""
    wraps = np.zeros(len(t), np.int64)
    wraps[1:] = np.cumsum(np.diff(t) < -_WRAP_JUMP)
    t += wraps << 32


def _window(path: str, t_column: np.ndarray, t_start_us: int | None, t_end_us: int | None) -> tuple[int, int]:
    """Record indices [lo, hi) of the events with t_start_us <= t < t_end_us, by bisection on the raw uint32 t."""
    num = len(t_column)
    if t_start_us is not None and t_end_us is not None and t_start_us > t_end_us:
        raise ValueError(f"t_start_us {t_start_us} > t_end_us {t_end_us}")
    if num and t_column[-1] < t_column[0]:
        raise _fail(path, f"last timestamp {int(t_column[-1])} < first {int(t_column[0])}: the uint32 clock wraps "
                          "or the events are unsorted, so a time window cannot be bisected; read the whole file "
                          "(which unwraps) and select from it")

    def first_at_or_after(time_us: int | None, default: int) -> int:
        if time_us is None:
            return default
        # a Python bisection reads ~log2(N) scalars of the memmap; np.searchsorted would first copy the whole
        # column, because the records start at an odd byte offset and it only works in place on aligned data
        return bisect.bisect_left(t_column, int(time_us))

    return first_at_or_after(t_start_us, 0), first_at_or_after(t_end_us, num)


def read_dat(path: str | os.PathLike, t_start_us: int | None = None, t_end_us: int | None = None) -> np.ndarray:
    """Read the events of a ``.dat`` file, all of them or those with ``t_start_us <= t < t_end_us``.

    A windowed read bisects the memory-mapped timestamp column and decodes only the records inside the window
    (the same half-open window as Prophesee's ``PSEELoader.seek_time`` + ``load_delta_t``).

    Args:
        path: the ``.dat`` file.
        t_start_us: first time to include (µs); None reads from the first event.
        t_end_us: first time to exclude (µs); None reads to the last event.

    Returns:
        [N] structured array of :data:`EVENT_DTYPE` (fields t int64 µs, x uint16, y uint16, p int8 0/1), in file
        order.

    Raises:
        EventFileError: see :func:`read_dat_header`; also a windowed read of a file whose timestamps visibly
            wrap or are unsorted.
        ValueError: ``t_start_us > t_end_us``.
    """
    header = read_dat_header(path)
    records = _records(header)
    if t_start_us is None and t_end_us is None:
        events, backwards = _decode(records)
        if backwards:
            _unwrap(events["t"])
        return events
    lo, hi = _window(header.path, records["t"], t_start_us, t_end_us)
    events, backwards = _decode(records[lo:hi])
    if backwards:
        raise _fail(header.path, f"timestamps step backwards inside the window [{t_start_us}, {t_end_us}): "
                                 "the events are unsorted, so the window cannot be bisected; read the whole file "
                                 "and select from it")
    return events


def iter_dat(path: str | os.PathLike, t_start_us: int | None = None, t_end_us: int | None = None, *,
             chunk_events: int = 1 << 20) -> Iterator[np.ndarray]:
    """The events of :func:`read_dat` (with ``t_start_us <= t < t_end_us``) in chunks, for bounded memory.

    The window is bisected on the memory-mapped timestamps as in :func:`read_dat`; then at most ``chunk_events``
    records are decoded at a time. Concatenated, the chunks equal ``read_dat(path, t_start_us, t_end_us)`` for a
    file with sorted timestamps (the only kind a window can be read from; the full file of one whose clock wraps
    is refused here, read it with :func:`read_dat`, which unwraps).

    Yields:
        [n] :data:`EVENT_DTYPE` arrays, 1 <= n <= chunk_events, in file order (none for an empty window).

    Raises:
        EventFileError: as :func:`read_dat`; also timestamps that step backwards inside the window, between chunks
            included.
        ValueError: ``t_start_us > t_end_us`` or ``chunk_events < 1``.
    """
    if chunk_events < 1:
        raise ValueError(f"chunk_events must be >= 1, got {chunk_events}")
    header = read_dat_header(path)
    lo, hi = _window(header.path, _records(header)["t"], t_start_us, t_end_us)   # touches ~log2(N) pages
    previous_t = None
    for start in range(lo, hi, int(chunk_events)):
        # a mapping of this chunk only, dropped after decoding: the file pages read stay out of the process
        stop = min(hi, start + int(chunk_events))
        chunk = np.memmap(header.path, dtype=RECORD_DTYPE, mode="r", shape=(stop - start,),
                          offset=header.data_offset + start * EVENT_SIZE)
        events, backwards = _decode(chunk)
        del chunk
        if backwards or (previous_t is not None and events["t"][0] < previous_t):
            raise _fail(header.path, f"timestamps step backwards inside the window [{t_start_us}, {t_end_us}): "
                                     "the events are unsorted or the clock wraps, so the window cannot be bisected; "
                                     "read the whole file and select from it")
        previous_t = events["t"][-1]
        yield events


def write_dat(path: str | os.PathLike, events: np.ndarray, width: int, height: int, *,
              event_type: int = EVENT_TYPE_TD, date: str | None = None) -> Path:
    """Write events as a Version 2 ``.dat`` file, atomically (a temp file beside ``path``, then ``os.replace``).

    Args:
        path: the file to write (its folder is created).
        events: [N] structured array with fields t, x, y, p (any integer dtypes): t non-decreasing in
            [0, 2^32) µs, 0 <= x < width, 0 <= y < height, p in {0, 1}.
        width, height: sensor size, written as ``% Width``/``% Height`` (at most 16384).
        event_type: 0x00 (TD, as in Gen1; the default) or 0x0C (CD).
        date: optional ``% Date`` value; none is written by default, so the same events give the same bytes.

    Raises:
        ValueError: events that the format cannot hold or that break the rules above.
    """
    events = np.asarray(events).reshape(-1)
    missing = [name for name in "txyp" if events.dtype.names is None or name not in events.dtype.names]
    if missing:
        raise ValueError(f"events need fields t, x, y, p; missing {missing}")
    if event_type not in (EVENT_TYPE_TD, EVENT_TYPE_CD):
        raise ValueError(f"event_type must be 0x00 (TD) or 0x0C (CD), got {event_type!r}")
    for name, size in (("width", width), ("height", height)):
        if not 1 <= int(size) <= 1 << _COORD_BITS:
            raise ValueError(f"{name} {size} is outside [1, {1 << _COORD_BITS}]")
    t, x, y, p = (events[name] for name in "txyp")
    if len(events):
        checks = (("t", t, 0, _T_MAX), ("x", x, 0, int(width) - 1), ("y", y, 0, int(height) - 1), ("p", p, 0, 1))
        for name, values, low, high in checks:
            if values.dtype.kind not in "iub":
                raise ValueError(f"field {name} must be an integer, got dtype {values.dtype}")
            if int(values.min()) < low or int(values.max()) > high:
                raise ValueError(f"field {name} has values in [{int(values.min())}, {int(values.max())}], "
                                 f"outside [{low}, {high}]")
        if np.any(t[1:] < t[:-1]):
            raise ValueError("timestamps must be non-decreasing (sort the events by t first)")
    records = np.empty(len(events), RECORD_DTYPE)
    records["t"] = t
    words = x.astype(np.uint32)
    words |= y.astype(np.uint32) << _Y_SHIFT
    words |= p.astype(np.uint32) << _P_SHIFT
    records["w"] = words
    lines = ["% Version 2"] + ([f"% Date {date}"] if date else []) + [f"% Height {int(height)}",
                                                                       f"% Width {int(width)}"]
    with atomic_write(path) as handle:
        handle.write(("\n".join(lines) + "\n").encode("ascii"))
        handle.write(bytes([event_type, EVENT_SIZE]))
        records.tofile(handle)
    return Path(path)
