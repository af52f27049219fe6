"""The error types of bad input, in one place (the bottom layer: any module may raise them).

Every one is an :class:`InputError`: what was given cannot be used, and the message is one line that
names the offending file, key or value. The command-line entry points print it as ``error: ...`` and
exit with code 2 (``spikeyolo.cli.common.friendly_errors``); nothing already written is touched.
"""

from __future__ import annotations

__all__ = ["InputError", "UserError", "DatasetError", "EventFileError", "CheckpointError",
           "ReferenceCheckpointError", "ReferenceKeyError", "TrainingError", "ExportError",
           "DeployError"]


class InputError(ValueError):
    """Input that cannot be used as given (the base of every error below)."""


class UserError(InputError):
    """A command line or config value an entry point rejects."""


class DatasetError(InputError):
    """A dataset cannot be used as given.

    Raised for a missing dataset path, yaml or json, a COCO json without its required keys, a label file with a
    malformed line or a class id out of range, and a dataset without images. The message is one line and names the
    offending file. Corrupt or unreadable images are not errors: they are skipped with a warning and counted
    (``dataset.num_corrupt``).
    """


class EventFileError(DatasetError):
    """An event (.dat) or box (.npy) file that cannot be read: bad header, wrong dtype, truncated, missing."""


class CheckpointError(InputError):
    """A checkpoint that cannot be read or does not fit the model."""


class ReferenceCheckpointError(CheckpointError):
    """A reference checkpoint that is refused (a global or structure not allowed) or cannot be read."""


class ReferenceKeyError(CheckpointError, KeyError):
    """Reference weights whose keys do not map onto the model (or model keys left uncovered)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class TrainingError(InputError):
    """A training run that cannot start or continue as configured (resume without a checkpoint, ...)."""


class ExportError(InputError):
    """An export that cannot be done as asked (bad image size, missing package, unknown path)."""


class DeployError(InputError):
    """A deploy path asked of a model that does not have it (the spike-driven path of an ANN, ...)."""
