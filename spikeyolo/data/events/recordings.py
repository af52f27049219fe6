"""Event recordings of any supported format, read in bounded chunks into the project's :data:`EVENT_DTYPE` arrays.

Formats, told apart by the file's first bytes (the extension is only a tie-breaker):

- ``"dat"``: Prophesee DAT (``%`` header lines without an ``evt``/``format`` key, then type/size bytes); read
  by the project's own reader :mod:`spikeyolo.data.events.dat` (faery for comparison).
- ``"evt3"``, ``"evt2"``, ``"evt2.1"``: Prophesee ``.raw`` (``%`` header with ``% evt 3.0`` or
  ``% format EVT3;height=..;width=..``); faery (all three) or evt3 (EVT 3.0).
- ``"aedat4"``: iniVation AEDAT 4.0 (``#!AER-DAT4.0``); faery or aedat.
- ``"hdf5"``: HDF5 (``\\x89HDF``) with Metavision's ``CD/events`` table or ``events/{t,x,y,p}``; h5py (+ hdf5plugin).
  Metavision's own files compress the table with Prophesee's ECF codec, which nothing on PyPI decodes: refused.

``recording_windows`` is the streaming entry point (one decoding pass, one window at a time);
``iter_recording`` / ``read_recording`` mirror :func:`iter_dat` / :func:`read_dat` for any format. A ``.raw``,
``.aedat4`` or ``.hdf5`` time window is found by decoding from the start of the file (no index is used), so a
late window of a long recording costs a pass over everything before it; ``.dat`` windows are bisected.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from spikeyolo.data.events import decoders
from spikeyolo.data.events.dat import EVENT_DTYPE, iter_dat, read_dat_header
from spikeyolo.errors import EventFileError, UserError

FORMATS = ("dat", "evt2", "evt2.1", "evt3", "aedat4", "hdf5")
# the file names recordings go by (the format itself is read from the content)
RECORDING_SUFFIXES = (".dat", ".raw", ".aedat4", ".hdf5", ".h5")
#: the library each format is read with unless ``library=`` says otherwise (chosen by docs/benchmarks.md)
#: (aedat, not faery, for AEDAT4: faery allocates a packet's declared size before reading it, up to 2 GB for a
#: hostile 4-byte length; aedat does not, and is only ~10% slower)
DEFAULT_LIBRARY = {"dat": "spikeyolo", "evt2": "faery", "evt2.1": "faery", "evt3": "evt3", "aedat4": "aedat",
                   "hdf5": "h5py"}
LIBRARIES = {"dat": ("spikeyolo", "faery"), "evt2": ("faery",), "evt2.1": ("faery",), "evt3": ("evt3", "faery"),
             "aedat4": ("aedat", "faery"), "hdf5": ("h5py",)}
_AEDAT4_MAGIC = b"#!AER-DAT4.0"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_MAX_HEADER_BYTES = 1 << 20
_RAW_VERSIONS = {"3.0": "evt3", "2.0": "evt2", "2.1": "evt2.1", "evt3": "evt3", "evt3.0": "evt3", "evt2": "evt2",
                 "evt2.0": "evt2", "evt21": "evt2.1", "evt2.1": "evt2.1"}
# sensor sizes of the Prophesee sensors named by a .raw header's plugin_name / sensor_generation (when it has no
# geometry): Gen3 / Gen3.1 VGA 640x480, Gen4.1 and IMX636 HD 1280x720
_SENSOR_SIZES = {"gen3": (640, 480), "gen31": (640, 480), "gen41": (1280, 720), "imx636": (1280, 720)}
_GENERATION_SIZES = {"3.0": (640, 480), "3.1": (640, 480), "4.1": (1280, 720)}
_T_MAX = 1 << 62
_BYTES_PER_EVENT = 4             # file bytes handed to a byte-batched decoder (evt3) per event of chunk_events


@dataclass(frozen=True)
class RecordingInfo:
    """What the header of a recording says, and the library chosen to decode it.

    Attributes:
        path: the file.
        format: one of :data:`FORMATS`.
        width, height: sensor size in pixels.
        size_from_header: False when the size came from a fallback (the ``sensor_size`` argument, the sensor named
            by the header, or Gen1's size for a ``.dat`` without one).
        library: the decoder: "spikeyolo" (the own ``.dat`` reader), "faery", "evt3", "aedat" or "h5py".
        header: the ``%`` header lines of a ``.dat``/``.raw`` as key -> value (empty for other formats).
    """

    path: str
    format: str
    width: int
    height: int
    size_from_header: bool
    library: str
    header: Mapping[str, str] = field(default_factory=dict, compare=False)


def _fail(path, problem: str) -> EventFileError:
    return EventFileError(f"{os.fspath(path)}: {problem}")


def _percent_header(path: str, head: bytes) -> tuple[dict[str, str], int]:
    """The ``% key value`` lines at the start of ``head`` (lower-case keys) and the byte offset after them."""
    fields: dict[str, str] = {}
    offset = 0
    while head[offset:offset + 1] == b"%":
        end = head.find(b"\n", offset)
        if end < 0:
            raise _fail(path, f"header line at byte {offset} has no newline (the file ends inside the header, or "
                              f"the header is longer than {_MAX_HEADER_BYTES} bytes)")
        line = head[offset + 1:end].rstrip(b"\r")
        if not all(32 <= byte < 127 or byte == 9 for byte in line):
            break                   # binary data that happens to start with '%' (the header has no '% end' line)
        key, _, value = line.decode("ascii").strip().partition(" ")
        offset = end + 1
        if key.lower() == "end":
            break
        if key:
            fields[key.lower()] = value.strip()
    return fields, offset


def _raw_version(fields: Mapping[str, str]) -> str | None:
    if "evt" in fields:
        return _RAW_VERSIONS.get(fields["evt"].strip().lower(), "?" + fields["evt"])
    if "format" in fields:
        name = fields["format"].split(";")[0].strip().lower()
        return _RAW_VERSIONS.get(name, "?" + name)
    return None


def _raw_size(path: str, fields: Mapping[str, str]) -> tuple[int, int] | None:
    """Sensor size of a ``.raw`` header: ``format ...;height=;width=``, ``geometry WxH``, ``Width``/``Height``."""
    options = dict(part.strip().split("=", 1) for part in fields.get("format", "").split(";") if "=" in part)
    candidates = [(options.get("width"), options.get("height")),
                  tuple(fields.get("geometry", "").lower().partition("x")[::2]),
                  (fields.get("width"), fields.get("height"))]
    for width, height in candidates:
        if width and height:
            if not (width.strip().isdigit() and height.strip().isdigit()):
                raise _fail(path, f"header sensor size {width!r} x {height!r} is not two integers")
            size = int(width), int(height)
            if not all(1 <= value <= 1 << 14 for value in size):
                raise _fail(path, f"header sensor size {size[0]}x{size[1]} is outside [1, 16384]")
            return size
    return None


def _named_sensor_size(fields: Mapping[str, str]) -> tuple[int, int] | None:
    plugin = fields.get("plugin_name", "").lower()
    for name, size in _SENSOR_SIZES.items():
        if f"_{name}_" in f"_{plugin}_".replace("hal_plugin_", "_"):
            return size
    return _GENERATION_SIZES.get(fields.get("sensor_generation", "").strip())


def _check_whole_words(path: str, version: str, data_offset: int) -> None:
    """A .raw stream is a sequence of 16-bit (EVT 3.0) or 32-bit (EVT 2.x) words: a part word means a cut file.

    faery drops a trailing part word silently, so this is checked here. A file cut on a word boundary looks
    complete (the stream has no length field) and reads as the events before the cut.
    """
    word = 2 if version == "evt3" else 4
    extra = (os.stat(path).st_size - data_offset) % word
    if extra:
        raise _fail(path, f"truncated: {extra} trailing bytes after the last complete {word}-byte {version.upper()} "
                          f"word (data from byte {data_offset})")


def detect_format(path: str | os.PathLike) -> tuple[str, dict[str, str]]:
    """The format of a recording from its first bytes, and its ``%`` header lines (lower-case keys) if it has any.

    Raises:
        EventFileError: an unreadable file, an unknown start, or a ``.raw`` header without its EVT version.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(_MAX_HEADER_BYTES)
    except OSError as exc:
        raise _fail(path, f"cannot open: {exc.strerror or exc}") from None
    if head.startswith(_AEDAT4_MAGIC):
        return "aedat4", {}
    if head.startswith(_HDF5_MAGIC):
        return "hdf5", {}
    if head.startswith(b"%"):
        fields, offset = _percent_header(path, head)
        version = _raw_version(fields)
        if version is None:
            if path.lower().endswith(".raw"):
                raise _fail(path, "a .raw header without '% evt' or '% format' line: its EVT version is unknown")
            return "dat", fields
        if version.startswith("?"):
            raise _fail(path, f"unknown EVT version {version[1:]!r} (known: EVT 2.0, 2.1, 3.0)")
        _check_whole_words(path, version, offset)
        return version, fields
    if not head:
        raise _fail(path, "empty file")
    raise _fail(path, f"unknown recording format (first bytes {head[:12]!r}; known: Prophesee .dat/.raw "
                      "'%' headers, AEDAT4 '#!AER-DAT4.0', HDF5)")


def open_recording(path: str | os.PathLike, *, library: str | None = None,
                   sensor_size: tuple[int, int] | None = None) -> RecordingInfo:
    """Detect the format of a recording, read its sensor size and choose its decoder; nothing is decoded yet.

    Args:
        path: the recording (.dat, .raw, .aedat4, .hdf5/.h5; detected by content).
        library: a decoder from :data:`LIBRARIES` for the format; None takes :data:`DEFAULT_LIBRARY`.
        sensor_size: (width, height) for a file whose header has none (a ``.raw`` without geometry); a size in the
            header wins.

    Raises:
        EventFileError: see :func:`detect_format`; a ``.raw``/``.hdf5`` whose size is neither in the header nor
            given; a ``.dat`` refused by :func:`read_dat_header`.
        UserError: a library that does not read this format, or one that is not installed (names the extra).
    """
    path = os.fspath(path)
    kind, fields = detect_format(path)
    library = library or DEFAULT_LIBRARY[kind]
    if library not in LIBRARIES[kind]:
        raise UserError(f"library={library!r} does not read {kind} files (choose from {list(LIBRARIES[kind])})")
    size_from_header = True
    try:
        if kind == "dat":
            header = read_dat_header(path)
            size, size_from_header = (header.width, header.height), header.size_from_header
        elif kind == "aedat4":
            size = decoders.aedat_size(path, library)
        else:
            size = _raw_size(path, fields) if kind != "hdf5" else decoders.hdf5_size(path)
            if size is None:
                size_from_header = False
                size = sensor_size if sensor_size is not None else (
                    _named_sensor_size(fields) if kind != "hdf5" else None)
            if size is None:
                raise _fail(path, "the header gives no sensor size: pass sensor_size=(width, height)")
    except (EventFileError, UserError):
        raise
    except Exception as exc:  # noqa: BLE001 (a library's own error about this file, of any type)
        raise _library_error(path, library, exc) from None
    return RecordingInfo(path=path, format=kind, width=int(size[0]), height=int(size[1]),
                         size_from_header=size_from_header, library=library, header=fields)


def _library_error(path: str, library: str, exc: BaseException) -> EventFileError:
    message = " ".join(str(exc).split()) or type(exc).__name__
    return _fail(path, f"{library} cannot decode it: {message[:200]}")


def _to_events(info: RecordingInfo, columns: decoders.Columns) -> np.ndarray:
    """One decoder batch as [n] EVENT_DTYPE, every event checked to lie on the sensor."""
    t, x, y, p = (np.asarray(column) for column in columns)
    num = len(t)
    if not len(x) == len(y) == len(p) == num:
        raise _fail(info.path, f"{info.library} gave columns of different lengths")
    events = np.empty(num, EVENT_DTYPE)
    if num == 0:
        return events
    for name, values, high in (("x", x, info.width - 1), ("y", y, info.height - 1), ("t", t, _T_MAX)):
        low_value, high_value = int(values.min()), int(values.max())
        if low_value < 0 or high_value > high:
            bad = low_value if low_value < 0 else high_value
            raise _fail(info.path, f"an event has {name} = {bad}, outside [0, {high}] "
                                   f"(sensor {info.width}x{info.height})")
    events["t"], events["x"], events["y"] = t, x, y
    events["p"] = p > 0                                     # bool on/off, 0/1, or -1/+1 (some HDF5 writers)
    return events


def _batches(info: RecordingInfo, chunk_bytes: int) -> Iterator[np.ndarray]:
    """Every event of a non-.dat recording (or a .dat through faery) as decoder-sized EVENT_DTYPE batches."""
    decode = decoders.DECODERS[(info.format, info.library)]
    stream = decode(info.path, info.format, (info.width, info.height), chunk_bytes)
    while True:
        try:
            columns = next(stream)
        except StopIteration:
            return
        except (EventFileError, UserError):
            raise
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as exc:  # noqa: BLE001 (pyo3 panics derive from BaseException)
            raise _library_error(info.path, info.library, exc) from None
        yield _to_events(info, columns)


def iter_recording(path: str | os.PathLike | RecordingInfo, t_start_us: int | None = None,
                   t_end_us: int | None = None, *, chunk_events: int = 1 << 20, library: str | None = None,
                   sensor_size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """The events with ``t_start_us <= t < t_end_us`` (all when None) of any recording, in bounded chunks.

    The interface of :func:`iter_dat`. A ``.dat`` read by the own reader bisects the window; the other formats
    are decoded from the start and decoding stops at the first batch that lies wholly at or after ``t_end_us``.

    Args:
        path: the recording, or the :class:`RecordingInfo` of :func:`open_recording`.
        chunk_events: most events per yielded array; evt3 is also fed ``4 * chunk_events`` bytes of the file at a
            time (EVT 3.0 spends 2 to 6 bytes on an event, or 1/6 byte in a full 12-event vector).
        library, sensor_size: as :func:`open_recording` (ignored when ``path`` is a RecordingInfo).

    Yields:
        [n] :data:`EVENT_DTYPE` arrays (t int64 µs, x, y uint16, p int8 0/1), 1 <= n <= chunk_events, file order.

    Raises:
        EventFileError: a file that cannot be decoded (one line naming the file and the library's complaint) or an
            event off the sensor. UserError: as :func:`open_recording`. ValueError: bad arguments.
    """
    if chunk_events < 1:
        raise ValueError(f"chunk_events must be >= 1, got {chunk_events}")
    if t_start_us is not None and t_end_us is not None and t_start_us > t_end_us:
        raise ValueError(f"t_start_us {t_start_us} > t_end_us {t_end_us}")
    info = path if isinstance(path, RecordingInfo) else open_recording(path, library=library, sensor_size=sensor_size)
    if info.format == "dat" and info.library == "spikeyolo":
        yield from iter_dat(info.path, t_start_us, t_end_us, chunk_events=chunk_events)
        return
    for events in _batches(info, chunk_bytes=_BYTES_PER_EVENT * int(chunk_events)):
        t = events["t"]
        if t_end_us is not None and len(t) and int(t.min()) >= t_end_us:
            return
        if t_start_us is not None or t_end_us is not None:
            keep = np.ones(len(t), bool)
            if t_start_us is not None:
                keep &= t >= t_start_us
            if t_end_us is not None:
                keep &= t < t_end_us
            events = events[keep]
        for start in range(0, len(events), int(chunk_events)):
            yield events[start:start + int(chunk_events)]


def read_recording(path: str | os.PathLike | RecordingInfo, t_start_us: int | None = None,
                   t_end_us: int | None = None, **options) -> np.ndarray:
    """All events of :func:`iter_recording` in one [N] :data:`EVENT_DTYPE` array (the interface of read_dat)."""
    return _concatenate(list(iter_recording(path, t_start_us, t_end_us, **options)))


def _concatenate(chunks: list[np.ndarray]) -> np.ndarray:
    """Chunks joined as one EVENT_DTYPE array (np.concatenate would drop the dtype's padding to 13 bytes)."""
    events = np.empty(sum(len(chunk) for chunk in chunks), EVENT_DTYPE)
    start = 0
    for chunk in chunks:
        events[start:start + len(chunk)] = chunk
        start += len(chunk)
    return events


def recording_windows(path: str | os.PathLike | RecordingInfo, window_us: int, *, ends: Iterable[int] | None = None,
                      step_us: int | None = None, first_end_us: int | None = None, end_us: int | None = None,
                      chunk_events: int = 1 << 20,
                      library: str | None = None,
                      sensor_size: tuple[int, int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """``(t_end, events)`` for the windows ``[t_end - window_us, t_end)`` of a recording, in one decoding pass.

    The streaming reader for inference: memory holds one window plus one chunk, whatever the file's length.
    Either ``ends`` (non-decreasing) are given, or ``step_us`` and the ends are ``first_end_us`` (default: the
    first event's time + ``window_us``), + step, ... up to and including the first end past the last event
    (the rule of ``engine.event_stream.window_ends``; ``end_us`` caps them there too), so no pass is needed to find
    the recording's end first. Recordings whose clock does not start near 0 (AEDAT4 has Unix times) want the
    default ``first_end_us``.

    Raises:
        ValueError: neither or both of ``ends``/``step_us``, a non-positive window or step, decreasing ends.
        EventFileError, UserError: as :func:`iter_recording`.
    """
    if window_us <= 0 or (step_us is not None and step_us <= 0):
        raise ValueError(f"window_us and step_us must be > 0, got {window_us}, {step_us}")
    if (ends is None) == (step_us is None):
        raise ValueError("give either ends or step_us")
    buffer = _Buffer(iter_recording(path, chunk_events=chunk_events, library=library, sensor_size=sensor_size))
    if ends is None:
        buffer.fill(-1)
        first = int(buffer.events["t"][0]) + window_us if len(buffer.events) else window_us
        end_iter = _stepped_ends(first if first_end_us is None else int(first_end_us), int(step_us), buffer, end_us)
    else:
        end_iter = iter(int(value) for value in ends)
    previous = None
    for t_end in end_iter:
        if previous is not None and t_end < previous:
            raise ValueError(f"window ends must be non-decreasing: {t_end} after {previous}")
        previous = t_end
        yield t_end, buffer.span(t_end - window_us, t_end)


class _Buffer:
    """The decoded events of one pass over a recording, from the oldest still needed: chunks are appended as far
    as a time asks (:meth:`fill`) and events before a span's start are dropped (:meth:`span`)."""

    def __init__(self, chunks: Iterator[np.ndarray]) -> None:
        self.chunks, self.events, self.exhausted = chunks, np.empty(0, EVENT_DTYPE), False

    def fill(self, until_us: int) -> None:
        """Decode until an event at or after ``until_us`` is held (or the recording ends)."""
        pending = [self.events]
        while not self.exhausted and (not len(pending[-1]) or int(pending[-1]["t"][-1]) < until_us):
            chunk = next(self.chunks, None)
            if chunk is None:
                self.exhausted = True
            else:
                pending.append(chunk)
        self.events = _concatenate(pending) if len(pending) > 1 else self.events

    def last_time(self) -> int | None:
        return int(self.events["t"][-1]) if len(self.events) else None

    def span(self, start: int, end: int) -> np.ndarray:
        """The events of ``[start, end)``; nothing before ``start`` is kept."""
        self.fill(end)
        self.events = self.events[self.events["t"] >= start]
        return self.events[self.events["t"] < end]


def _stepped_ends(first: int, step: int, buffer: _Buffer, end_us: int | None) -> Iterator[int]:
    """first, first + step, ... up to the first end past the last event (reading ahead to know where that is)."""
    t_end = first
    while end_us is None or t_end <= end_us:
        yield t_end
        buffer.fill(t_end + 1)
        last_t = buffer.last_time()
        if buffer.exhausted and (last_t is None or t_end > last_t):
            return
        t_end += step


def recording_spans(path: str | os.PathLike | RecordingInfo, spans: Iterable[tuple[int, int]], *,
                    chunk_events: int = 1 << 20, library: str | None = None,
                    sensor_size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """The events of each ``[start, end)`` of ``spans`` (starts and ends each non-decreasing), in one decoding pass.

    What a training cache needs from a recording that has no index (``.raw``, AEDAT4, HDF5): the windows of its
    label times, which may overlap or be clamped at the start; memory holds the span and one chunk.

    Raises:
        ValueError: a start or an end that goes back.
        EventFileError, UserError: as :func:`iter_recording`.
    """
    buffer = _Buffer(iter_recording(path, chunk_events=chunk_events, library=library, sensor_size=sensor_size))
    previous = (None, None)
    for start, end in spans:
        start, end = int(start), int(end)
        if previous[0] is not None and (start < previous[0] or end < previous[1]):
            raise ValueError(f"spans must not go back: [{start}, {end}) after [{previous[0]}, {previous[1]})")
        previous = (start, end)
        yield buffer.span(start, end)
