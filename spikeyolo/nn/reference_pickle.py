"""Reading reference (BICLab/SpikeYOLO) checkpoints without running anything in them.

A reference checkpoint is what the reference's ultralytics 8.0.197 trainer writes (``save_model``):
``torch.save`` of a dict whose ``model`` and ``ema`` are pickled ``DetectionModel`` objects in fp16, with
the optimizer state, ``train_args`` and metadata; the published files went through ``strip_optimizer``
(``model`` is the EMA, ``ema``/``optimizer``/``updates`` None, epoch -1). Unpickling such a file with
pickle or ``torch.load(weights_only=False)`` imports and calls whatever it names, so its bytes are only
ever handed to the bounded reader of :mod:`spikeyolo.torchfile` (zip and record checks, tensor rebuilding,
key, depth and size bounds: see there), with this module's stand-ins:

* The globals it admits beyond the reader's own are exactly the (module, name) pairs below, after
  translating protocol-2 names. Anything else is refused with
  ``refusing global os.system in a reference checkpoint: PATH``. The list is what real reference
  checkpoints name, measured from files the reference code wrote
  (tests/fixtures/reference/real_checkpoint_inventory.json and PROVENANCE.md there).
* Every class the reference pickles (its modules, torch's ``nn`` modules, the loss objects, the
  ``IterableSimpleNamespace`` of ``args``) becomes an inert :class:`ReferenceObject`: it keeps the pickled
  attributes in a dict and has no methods that run, no hooks and no attribute lookup into that dict.
  Attributes missing from pickles of older torch (``_non_persistent_buffers_set``, the hook dicts, ...)
  read as empty; hooks are never restored or called.

:func:`unpickle_checkpoint` returns the unpickled object; ``spikeyolo.nn.reference_checkpoint`` reads
the weights, names and neuron type out of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spikeyolo.errors import ReferenceCheckpointError
from spikeyolo.torchfile import Refusal, StandIn, _rebuild_tensor, pickle_globals, read_torch_zip  # noqa: F401
from spikeyolo.torchfile import read_error as _read_error

__all__ = ["ReferenceCheckpointError", "Refusal", "ReferenceObject", "ALLOWED_CLASSES", "unpickle_checkpoint",
           "is_reference_checkpoint"]


# Every class a reference checkpoint pickles (measured from files the reference trainer wrote: COCO
# training form and published form, Gen1 model). Each becomes an inert ReferenceObject.
ALLOWED_CLASSES: dict[str, tuple[str, ...]] = {
    "ultralytics.nn.tasks": ("DetectionModel",),
    "ultralytics.nn.modules.conv": ("Concat",),
    "ultralytics.nn.modules.yolo_spikformer": (
        "MS_GetT", "MS_DownSampling", "MS_AllConvBlock", "MS_ConvBlock", "SepConv", "SepRepConv", "RepConv",
        "BNAndPadLayer", "MS_StandardConv", "SpikeSPPF", "SpikeConv", "SpikeConvWithoutBN", "SpikeDetect",
        "SpikeDFL", "mem_update", "MultiSpike4"),
    "ultralytics.utils": ("IterableSimpleNamespace",),          # model.args
    "ultralytics.utils.loss": ("v8DetectionLoss", "BboxLoss"),   # model.criterion
    "ultralytics.utils.tal": ("TaskAlignedAssigner",),
    "spikingjelly.clock_driven.neuron": ("MultiStepLIFNode",),  # Gen1 neurons
    "spikingjelly.clock_driven.surrogate": ("Sigmoid",),
    "torch.nn.modules.conv": ("Conv2d",),
    "torch.nn.modules.batchnorm": ("BatchNorm2d",),
    "torch.nn.modules.container": ("Sequential", "ModuleList"),
    "torch.nn.modules.pooling": ("MaxPool2d",),
    "torch.nn.modules.upsampling": ("Upsample",),
    "torch.nn.modules.loss": ("BCEWithLogitsLoss",),
}


class ReferenceObject(StandIn):
    """Inert stand-in for a pickled reference object (:class:`spikeyolo.torchfile.StandIn`): the pickled
    attribute dict, nothing that runs; ``reference_name`` is the class it stands for."""

    __slots__ = ()
    reference_name = "?"

    @property
    def pickled_name(self) -> str:  # type: ignore[override]
        return self.reference_name


_CLASSES = {f"{module}.{name}": type(name, (ReferenceObject,), {"__slots__": (), "reference_name":
                                                                 f"{module}.{name}"})
            for module, names in ALLOWED_CLASSES.items() for name in names}


def unpickle_checkpoint(path: Path) -> Any:
    """The object in a torch zip checkpoint, through the shared bounded reader with the reference stand-ins.

    Raises:
        ReferenceCheckpointError: one line naming the refused global or structure (nothing has run).
    """
    return read_torch_zip(path, _CLASSES, ReferenceCheckpointError, "reference checkpoint")


def read_error(path: Path, exc: BaseException) -> ReferenceCheckpointError:
    return _read_error(path, exc, ReferenceCheckpointError, "reference checkpoint")


_REFERENCE_ONLY = ("ultralytics.nn.modules.yolo_spikformer.", "spikingjelly.")


def is_reference_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a torch zip checkpoint whose pickle names ultralytics or spikingjelly classes.

    Only scans the pickle's opcodes (:func:`spikeyolo.torchfile.pickle_globals`; nothing is unpickled).
    False for anything else, so the caller reads it as a spikeyolo checkpoint and reports that reader's error.
    A stock ultralytics checkpoint also answers True here; ``read_model_checkpoint`` asks
    :func:`spikeyolo.nn.ultralytics_checkpoint.is_ultralytics_checkpoint` first.
    """
    return any(name.startswith(("ultralytics.", "spikingjelly.")) for name in pickle_globals(path))
