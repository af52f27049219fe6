"""The error type for unreadable event/label files (and the atomic writer the file writers use, from spikeyolo.io)."""

from __future__ import annotations

from spikeyolo.data.errors import DatasetError
from spikeyolo.io import atomic_write

__all__ = ["EventFileError", "atomic_write"]


class EventFileError(DatasetError):
    """An event (``.dat``) or label (``*_bbox.npy``) file that cannot be read as given.

    The message is one line: the file's path, then what is wrong with it (a bad or missing header, an unknown event
    type or size, a truncated last record, a box array without the required fields). It is a ``ValueError``
    (through :class:`spikeyolo.data.DatasetError`). Readers raise it instead of returning data they are not sure of.
    """
