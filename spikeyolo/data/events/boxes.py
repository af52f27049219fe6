"""Gen1 / 1Mpx box labels (``<name>_bbox.npy``): read either release dtype, write one, normalise to one dtype.

The releases store a 1-D structured array of boxes (x, y = top-left corner in pixels, w, h in pixels):

- Gen1 (older):  ``ts <u8, x y w h <f4, class_id u1, confidence <f4, track_id <u4``
- 1Mpx (newer):  ``t <u8, x y w h <f4, class_id u1, class_confidence <f4, track_id <u4``

Both load to :data:`BOX_DTYPE` (``t`` int64 µs, ``class_confidence``), the one layout used inside spikeyolo.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from spikeyolo.errors import EventFileError
from spikeyolo.io import atomic_write, read_npy

__all__ = ["BOX_DTYPE", "BOX_FILE_DTYPE", "BOX_FILE_DTYPE_LEGACY", "as_boxes", "read_boxes", "write_boxes"]

#: Normalised boxes: t int64 µs, x/y/w/h float32 pixels, class_id uint8, class_confidence float32, track_id uint32.
BOX_DTYPE = np.dtype([("t", "<i8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"), ("class_id", "u1"),
                      ("class_confidence", "<f4"), ("track_id", "<u4")])
#: The newer release layout (1Mpx), written by default.
BOX_FILE_DTYPE = np.dtype([("t", "<u8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"), ("class_id", "u1"),
                           ("class_confidence", "<f4"), ("track_id", "<u4")])
#: The older release layout (Gen1): ``ts`` and ``confidence``.
BOX_FILE_DTYPE_LEGACY = np.dtype([("ts", "<u8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"),
                                  ("class_id", "u1"), ("confidence", "<f4"), ("track_id", "<u4")])

# normalised field -> names it has in the releases, in order of preference
_ALIASES = {"t": ("t", "ts"), "class_confidence": ("class_confidence", "confidence")}
_INTEGER_RANGES = {"t": (0, np.iinfo(np.int64).max), "class_id": (0, 255), "track_id": (0, np.iinfo(np.uint32).max)}


def as_boxes(array: np.ndarray, source: str = "boxes") -> np.ndarray:
    """Convert a structured box array in either release dtype (or already normalised) to :data:`BOX_DTYPE`.

    Args:
        array: [N] structured array with fields (t or ts), x, y, w, h, class_id, (class_confidence or confidence),
            track_id.
        source: what to name in error messages (the file path when reading).

    Returns:
        [N] array of :data:`BOX_DTYPE` (a copy).

    Raises:
        EventFileError: a missing or ambiguous field, a non-integer t/class_id/track_id, or a value out of range.
    """
    array = np.asarray(array)
    names = array.dtype.names
    if names is None or array.ndim != 1:
        raise EventFileError(f"{source}: expected a 1-D structured box array, got dtype {array.dtype} "
                             f"with shape {array.shape}")
    boxes = np.empty(len(array), BOX_DTYPE)
    for name in BOX_DTYPE.names:
        present = [alias for alias in _ALIASES.get(name, (name,)) if alias in names]
        if not present:
            raise EventFileError(f"{source}: box array has no field {' or '.join(_ALIASES.get(name, (name,)))} "
                                 f"(fields: {', '.join(names)})")
        if len(present) > 1:
            raise EventFileError(f"{source}: box array has both fields {present[0]} and {present[1]}")
        values = array[present[0]]
        if name in _INTEGER_RANGES:
            if values.dtype.kind not in "iu":
                raise EventFileError(f"{source}: field {present[0]} must be an integer, got dtype {values.dtype}")
            low, high = _INTEGER_RANGES[name]
            if len(values) and (values.min() < low or values.max() > high):
                raise EventFileError(f"{source}: field {present[0]} has values in [{values.min()}, {values.max()}], "
                                     f"outside [{low}, {high}]")
        elif values.dtype.kind not in "iuf":
            raise EventFileError(f"{source}: field {present[0]} must be a number, got dtype {values.dtype}")
        boxes[name] = values
    return boxes


def read_boxes(path: str | os.PathLike) -> np.ndarray:
    """Read a ``*_bbox.npy`` label file in either release dtype.

    Returns:
        [N] array of :data:`BOX_DTYPE`, in file order (the releases sort it by t).

    Raises:
        EventFileError: the file is not a readable ``.npy`` array (pickled object arrays are refused) or its
            fields do not describe boxes (see :func:`as_boxes`).
    """
    try:
        with open(path, "rb") as handle:                 # bounded by the file's size: a header's claim costs nothing
            array = read_npy(handle, os.fstat(handle.fileno()).st_size)
    except (OSError, ValueError, EOFError) as exc:
        raise EventFileError(f"{os.fspath(path)}: cannot read as a .npy box array: {exc}") from None
    return as_boxes(array, source=os.fspath(path))


def write_boxes(path: str | os.PathLike, boxes: np.ndarray, *, legacy: bool = False) -> Path:
    """Write boxes as a ``.npy`` file in a release dtype, atomically (a temp file, then ``os.replace``).

    Args:
        path: the file to write (its folder is created; no ``.npy`` suffix is added).
        boxes: [N] structured array in either release dtype or :data:`BOX_DTYPE`.
        legacy: write the Gen1 dtype (``ts``, ``confidence``) instead of the newer one (``t``,
            ``class_confidence``).
    """
    boxes = as_boxes(boxes)
    dtype = BOX_FILE_DTYPE_LEGACY if legacy else BOX_FILE_DTYPE
    out = np.empty(len(boxes), dtype)
    for name, file_name in zip(BOX_DTYPE.names, dtype.names, strict=True):
        out[file_name] = boxes[name]
    with atomic_write(path) as handle:
        np.save(handle, out, allow_pickle=False)
    return Path(path)
