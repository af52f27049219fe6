"""File I/O shared across spikeyolo: the one atomic writer (checkpoints, caches, results, event files,
configs, reports), the bounded reader of ``.npy`` arrays from files users download, and plain-data conversion of
configs.

Every file spikeyolo writes goes through :func:`atomic_write` (or its path form :func:`atomic_path`, for
libraries that write by file name): a temp file beside the target, fsync, then a rename over it, so a crash
at any moment leaves either the old file or the new one, never a torn file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np

__all__ = ["atomic_write", "atomic_path", "write_text", "write_json", "read_npy", "plain"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temp file name beside ``path`` to write to; on success it is fsynced and renamed over ``path``.

    For writers that take a file name (``nir.write``, ``csv`` through ``open``); on an exception the temp
    file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp_name)
        with open(tmp_name, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temp file beside ``path`` for binary writing; on success fsync it and rename it over ``path``.

    A crash or an exception at any moment leaves either the old file or the new one, never a torn file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically; returns the path."""
    with atomic_write(path) as handle:
        handle.write(text.encode("utf-8"))
    return Path(path)


def write_json(path: str | os.PathLike, payload: Any, indent: int | None = 2) -> Path:
    """Write JSON atomically (numpy/torch scalars as floats); returns the path."""
    return write_text(path, json.dumps(payload, indent=indent, default=float))


def read_npy(handle: IO[bytes], available: int) -> np.ndarray:
    """The ``.npy`` array at ``handle``, read as data: its header may not declare more bytes than ``available`` (the
    file's or the archive member's size), so a hostile header costs no memory; object arrays (pickles) are refused.

    Raises:
        ValueError: not a ``.npy`` array (numpy's own complaint), an object array, a declared size beyond
            ``available``, or fewer bytes than declared.
    """
    version = np.lib.format.read_magic(handle)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f".npy format version {version} is not read")
    shape, fortran, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                             np.lib.format.read_array_header_2_0)(handle)
    if dtype.hasobject:
        raise ValueError("object arrays are refused")
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size > available:
        raise ValueError(f"its header declares {shape} {dtype}, more than the file holds")
    data = handle.read(size)
    if len(data) != size:
        raise ValueError(f"truncated: {len(data)} of the {size} bytes its header declares")
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")


def plain(node: Any) -> Any:
    """A config node as plain Python data: a DictConfig/ListConfig resolved (``${...}`` interpolations
    included) to dicts and lists; a mapping to a dict; a namespace to its dict; None to {}; anything else as is."""
    if node is None:
        return {}
    if hasattr(node, "_metadata"):  # an omegaconf DictConfig / ListConfig
        from omegaconf import OmegaConf

        return OmegaConf.to_container(node, resolve=True)
    if isinstance(node, Mapping):
        return dict(node)
    if hasattr(node, "__dict__") and not isinstance(node, type):
        return dict(vars(node))
    return node
