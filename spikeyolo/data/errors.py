"""The one exception type for bad dataset input."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset cannot be used as given.

    Raised for a missing dataset path, yaml or json, a COCO json without its required keys, a label file with a
    malformed line or a class id out of range, and a dataset without images. The message is one line and names the
    offending file. Corrupt or unreadable images are not errors: they are skipped with a warning and counted
    (``dataset.num_corrupt``).
    """
