"""The error type for unreadable event/label files, and the atomic writer both file writers use."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from spikeyolo.data.errors import DatasetError

__all__ = ["EventFileError", "atomic_write"]


class EventFileError(DatasetError):
    """An event (``.dat``) or label (``*_bbox.npy``) file that cannot be read as given.

    The message is one line: the file's path, then what is wrong with it (a bad or missing header, an unknown event
    type or size, a truncated last record, a box array without the required fields). It is a ``ValueError``
    (through :class:`spikeyolo.data.DatasetError`). Readers raise it instead of returning data they are not sure of.
    """


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
