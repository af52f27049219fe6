"""Reference (BICLab/SpikeYOLO) checkpoints: read without running anything in them, loaded onto spikeyolo models.

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

:func:`load_reference_checkpoint` reads the weights (:mod:`spikeyolo.checkpoints.module_tree`), class names and
neuron type out of the unpickled object; :func:`load_reference_weights` puts them into a spikeyolo model through
:func:`spikeyolo.nn.reference.convert_reference_state_dict` (each module's ``reference_key_map``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from spikeyolo.checkpoints.module_tree import class_names, collect_state_dict, plain_tensor
from spikeyolo.errors import ReferenceCheckpointError
from spikeyolo.nn.reference import convert_reference_state_dict
from spikeyolo.torchfile import Refusal, StandIn, pickle_globals, read_torch_zip
from spikeyolo.torchfile import read_error as _read_error

__all__ = ["ReferenceCheckpointError", "ReferenceObject", "ALLOWED_CLASSES", "ReferenceCheckpoint",
           "unpickle_checkpoint", "is_reference_checkpoint", "load_reference_checkpoint", "read_reference_checkpoint",
           "load_reference_weights"]

WHAT = "reference checkpoint"

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
    return read_torch_zip(path, _CLASSES, ReferenceCheckpointError, WHAT)


def is_reference_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a torch zip checkpoint whose pickle names ultralytics or spikingjelly classes.

    Only scans the pickle's opcodes (:func:`spikeyolo.torchfile.pickle_globals`; nothing is unpickled).
    False for anything else, so the caller reads it as a spikeyolo checkpoint and reports that reader's error.
    A stock ultralytics checkpoint also answers True here; ``read_model_checkpoint`` asks
    :func:`spikeyolo.checkpoints.ultralytics.is_ultralytics_checkpoint` first.
    """
    return any(name.startswith(("ultralytics.", "spikingjelly.")) for name in pickle_globals(path))


@dataclass
class ReferenceCheckpoint:
    """What a reference checkpoint holds that spikeyolo uses.

    Attributes:
        path: the file.
        entry: ``ema`` or ``model`` (the module the weights come from; ultralytics prefers the EMA).
        state_dict: reference keys (``model.<i>[.<j>].<...>``) -> tensors, floating ones as float32.
        names: class names (the pickled ``names`` dict, in index order); empty if absent.
        neurons: reference class name -> count of neuron modules (``mem_update``, ``MultiStepLIFNode``).
        lif_settings: the distinct (tau, decay_input, v_reset, detach_reset) of the Gen1 LIF neurons.
        train_args: the primitive entries of ``train_args`` (imgsz, ...).
    """

    path: Path
    entry: str
    state_dict: dict[str, torch.Tensor]
    names: list[str] = field(default_factory=list)
    neurons: dict[str, int] = field(default_factory=dict)
    lif_settings: set[tuple] = field(default_factory=set)
    train_args: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """``gen1`` (spikingjelly LIF neurons, SpikeYOLO_for_Gen1) or ``coco`` (mem_update I-LIF)."""
        return "gen1" if "MultiStepLIFNode" in self.neurons else "coco"

    def count_neuron(self, module: StandIn) -> None:
        """Record ``module`` if it is a neuron (its class, and a Gen1 LIF's settings)."""
        short = module.pickled_name.rsplit(".", 1)[-1]
        if short not in _NEURON_CLASSES:
            return
        self.neurons[short] = self.neurons.get(short, 0) + 1
        if short == "MultiStepLIFNode":  # spikingjelly keeps v_reset among its registered memories
            memories = module.state.get("_memories")
            v_reset = memories.get("v_reset", "missing") if isinstance(memories, dict) else "missing"
            self.lif_settings.add((module.state.get("tau"), module.state.get("decay_input"), v_reset,
                                   module.state.get("detach_reset")))


_NEURON_CLASSES = {"mem_update", "MultiStepLIFNode"}


def load_reference_checkpoint(path: str | Path) -> ReferenceCheckpoint:
    """Read a reference checkpoint (training or published form) or a reference-key state_dict file.

    Raises:
        ReferenceCheckpointError: one line naming the refused global or structure (nothing has run).
    """
    path = Path(path)
    if not path.is_file():
        raise ReferenceCheckpointError(f"reference checkpoint not found: {path}")
    obj = unpickle_checkpoint(path)
    try:
        if isinstance(obj, dict) and obj and all(type(v) is torch.Tensor for v in obj.values()):
            return ReferenceCheckpoint(path, "state_dict", {str(k): plain_tensor(v, str(k)) for k, v in obj.items()})
        if not isinstance(obj, dict):
            raise Refusal(f"refusing a top-level {type(obj).__name__} (a reference checkpoint is a dict)")
        entry = "ema" if obj.get("ema") is not None else "model"
        module = obj.get(entry)
        if module is None:
            raise Refusal("refusing a dict without a 'model' or 'ema' entry")
        if not isinstance(module, StandIn) or module.pickled_name != "ultralytics.nn.tasks.DetectionModel":
            raise Refusal(f"refusing a {entry} entry that is not a DetectionModel")
        result = ReferenceCheckpoint(path, entry, {})
        result.state_dict = collect_state_dict(module, result.count_neuron)
        result.names = class_names(module.state.get("names"))
        args = obj.get("train_args")
        if isinstance(args, dict):
            result.train_args = {k: v for k, v in args.items()
                                 if type(k) is str and (v is None or type(v) in (str, int, float, bool))}
        return result
    except Refusal as refusal:
        raise ReferenceCheckpointError(f"{refusal} in a {WHAT}: {path}") from None
    except (TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise _read_error(path, exc, ReferenceCheckpointError, WHAT) from None


def read_reference_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state_dict (reference keys, float32) of a reference checkpoint: its ``ema``, else its ``model``."""
    return load_reference_checkpoint(path).state_dict


def load_reference_weights(model: nn.Module, source: str | Path | Mapping[str, torch.Tensor]) -> nn.Module:
    """Load a reference checkpoint (path) or reference state_dict into ``model`` (strict, shape-checked).

    Raises:
        ReferenceCheckpointError: the file is refused (one line; nothing in it has run).
        ReferenceKeyError: the weights do not match ``model`` (unmatched keys, shapes, uncovered keys).
    """
    reference = read_reference_checkpoint(source) if isinstance(source, (str, Path)) else source
    model.load_state_dict(convert_reference_state_dict(reference, model), strict=True)
    return model
