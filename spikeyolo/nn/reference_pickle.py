"""Reading reference (BICLab/SpikeYOLO) checkpoints without running anything in them.

A reference checkpoint is what the reference's ultralytics 8.0.197 trainer writes (``save_model``):
``torch.save`` of a dict whose ``model`` and ``ema`` are pickled ``DetectionModel`` objects in fp16, with
the optimizer state, ``train_args`` and metadata; the published files went through ``strip_optimizer``
(``model`` is the EMA, ``ema``/``optimizer``/``updates`` None, epoch -1). Unpickling such a file with
pickle or ``torch.load(weights_only=False)`` imports and calls whatever it names, so its bytes are only
ever handed to :class:`_RestrictedUnpickler`:

* Only torch's zip format is read (torch >= 1.6; every ultralytics 8 checkpoint), with :mod:`zipfile`
  and stored (uncompressed) records only. The legacy format and TorchScript archives are refused before
  any byte is unpickled.
* ``find_class`` admits exactly the (module, name) pairs below, after translating protocol-2 names
  (torch.save writes protocol 2: ``__builtin__.set`` is ``builtins.set``). Anything else is refused with
  ``refusing global os.system in a reference checkpoint: PATH``. The list is what real reference
  checkpoints name, measured from files the reference code wrote
  (tests/fixtures/reference/real_checkpoint_inventory.json and PROVENANCE.md there).
* Every class the reference pickles (its modules, torch's ``nn`` modules, the loss objects, the
  ``IterableSimpleNamespace`` of ``args``) becomes an inert :class:`ReferenceObject`: it keeps the pickled
  attributes in a dict and has no methods that run, no hooks and no attribute lookup into that dict.
  Attributes missing from pickles of older torch (``_non_persistent_buffers_set``, the hook dicts, ...)
  read as empty; hooks are never restored or called.
* Tensors and numpy scalars are rebuilt by this module's own functions from the raw storage records
  (bounds-checked); the only other callables are ``collections.OrderedDict``, ``set``, ``torch.Size`` and
  ``torch.device``. Nothing else under ``torch.*`` or ``numpy.*`` is reachable.

:func:`unpickle_checkpoint` returns the unpickled object; ``spikeyolo.nn.reference_checkpoint`` reads
the weights, names and neuron type out of it.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import math
import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spikeyolo.errors import ReferenceCheckpointError

__all__ = ["ReferenceCheckpointError", "Refusal", "ReferenceObject", "ALLOWED_CLASSES", "unpickle_checkpoint",
           "is_reference_checkpoint"]


class Refusal(Exception):
    """Raised while unpickling or reading the result; becomes a one-line ReferenceCheckpointError with the file."""


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

_STORAGE_DTYPES = {f"torch.{name}Storage": dtype for name, dtype in (
    ("Float", torch.float32), ("Half", torch.float16), ("BFloat16", torch.bfloat16), ("Double", torch.float64),
    ("Long", torch.int64), ("Int", torch.int32), ("Short", torch.int16), ("Char", torch.int8),
    ("Byte", torch.uint8), ("Bool", torch.bool))}
_NUMPY_SCALAR_CODES = {"f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1"}


class ReferenceObject:
    """Inert stand-in for a pickled reference object: the pickled attribute dict, nothing that runs.

    ``__slots__`` keeps the attributes out of attribute lookup (``obj.keys`` or ``obj.__iter__`` never
    reach pickled data), and ``__setstate__`` accepts only a dict of plain attribute names.
    """

    __slots__ = ("state",)
    reference_name = "?"

    def __new__(cls, *args: Any) -> "ReferenceObject":
        if args:
            raise Refusal(f"refusing constructor arguments for {cls.reference_name}")
        obj = object.__new__(cls)
        obj.state = {}
        return obj

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict) or not all(type(key) is str for key in state):
            raise Refusal(f"refusing a state that is not an attribute dict for {self.reference_name}")
        dunder = next((key for key in state if key.startswith("__")), None)
        if dunder is not None:
            raise Refusal(f"refusing attribute {dunder} on {self.reference_name}")
        self.state.update(state)

    def __repr__(self) -> str:
        return f"<reference {self.reference_name}>"


_CLASSES = {f"{module}.{name}": type(name, (ReferenceObject,), {"__slots__": (), "reference_name":
                                                                 f"{module}.{name}"})
            for module, names in ALLOWED_CLASSES.items() for name in names}


class _Function:
    """An allowed global that is a function: callable, but its state can never be set (no BUILD)."""

    __slots__ = ("name", "function")

    def __init__(self, name: str, function: Any) -> None:
        self.name, self.function = name, function

    def __call__(self, *args: Any) -> Any:
        return self.function(*args)

    def __setstate__(self, state: Any) -> None:
        raise Refusal(f"refusing to set state on global {self.name}")


class _StorageType:
    """A typed-storage global (torch.HalfStorage, ...): only names the dtype of a persistent id."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: torch.dtype) -> None:
        self.name, self.dtype = name, dtype

    def __setstate__(self, state: Any) -> None:
        raise Refusal(f"refusing to set state on global {self.name}")


class _Storage:
    """One storage record of the archive as a flat tensor of its dtype."""

    __slots__ = ("flat",)

    def __init__(self, flat: torch.Tensor) -> None:
        self.flat = flat

    def __setstate__(self, state: Any) -> None:
        raise Refusal("refusing to set state on a tensor storage")


def _check_ints(values: Any, what: str) -> tuple[int, ...]:
    if not isinstance(values, tuple) or not all(type(v) is int and v >= 0 for v in values) or len(values) > 16:
        raise Refusal(f"refusing a tensor with {what} {values!r}")
    return values


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                    backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    """torch._utils._rebuild_tensor_v2: a bounds-checked view of the storage, copied; no hooks, no metadata."""
    del requires_grad  # loaded weights are plain tensors
    if not isinstance(storage, _Storage):
        raise Refusal("refusing a tensor whose storage is not a storage record")
    if backward_hooks or metadata:
        raise Refusal("refusing a tensor with backward hooks or metadata")
    size, stride = _check_ints(size, "size"), _check_ints(stride, "stride")
    (offset,) = _check_ints((offset,), "offset")
    if len(size) != len(stride):
        raise Refusal(f"refusing a tensor with size {size} and stride {stride}")
    if all(size):
        last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if last >= storage.flat.numel():
            raise Refusal(f"refusing a tensor reaching element {last} of a storage of {storage.flat.numel()}")
        if math.prod(size) > storage.flat.numel():  # zero or overlapping strides: a small file, a huge copy
            raise Refusal(f"refusing a tensor of {math.prod(size)} elements over a storage of {storage.flat.numel()}")
    return storage.flat.as_strided(size, stride, offset).clone()


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any) -> torch.Tensor:
    """torch._utils._rebuild_parameter: the tensor itself (weights load as plain tensors)."""
    del requires_grad
    if type(data) is not torch.Tensor or backward_hooks:
        raise Refusal("refusing a parameter that is not a plain tensor without hooks")
    return data


def _latin1_bytes(text: Any, encoding: Any = "latin1") -> bytes:
    """_codecs.encode as protocol 2 uses it for bytes: encode(str, 'latin1')."""
    if type(text) is not str or encoding not in ("latin1", "latin-1"):
        raise Refusal(f"refusing _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


class _NumpyDtype:
    """numpy.dtype('f8', False, True) plus its BUILD state: just the type code and byte order."""

    __slots__ = ("code", "order")

    def __init__(self, code: Any, align: Any = False, copy: Any = True) -> None:
        if code not in _NUMPY_SCALAR_CODES:
            raise Refusal(f"refusing numpy dtype {code!r}")
        self.code, self.order = code, "<"

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "|", "="):
            raise Refusal("refusing a numpy dtype state")
        self.order = state[1]


def _numpy_scalar(dtype: Any, data: Any = None) -> int | float | bool:
    """numpy.core.multiarray.scalar for numeric dtypes only, returned as a Python number."""
    if not isinstance(dtype, _NumpyDtype) or type(data) is not bytes:
        raise Refusal("refusing a numpy scalar that is not a number")
    kind = np.dtype(dtype.code).newbyteorder(dtype.order if dtype.order in "<>" else "=")
    if len(data) != kind.itemsize:
        raise Refusal("refusing a numpy scalar of the wrong size")
    return np.frombuffer(data, dtype=kind)[0].item()


_VALUES: dict[str, Any] = {
    "collections.OrderedDict": collections.OrderedDict,
    "builtins.set": set,
    "torch.Size": torch.Size,
    "torch.device": torch.device,
    "torch._utils._rebuild_tensor_v2": _Function("torch._utils._rebuild_tensor_v2", _rebuild_tensor),
    "torch._utils._rebuild_parameter": _Function("torch._utils._rebuild_parameter", _rebuild_parameter),
    "_codecs.encode": _Function("_codecs.encode", _latin1_bytes),
    "numpy.dtype": _NumpyDtype,  # optimizer param_groups hold numpy float64 scalars
    "numpy.core.multiarray.scalar": _Function("numpy.core.multiarray.scalar", _numpy_scalar),
    "numpy._core.multiarray.scalar": _Function("numpy._core.multiarray.scalar", _numpy_scalar),
    **{name: _StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


def _translate(module: str, name: str) -> tuple[str, str]:
    """Protocol-2 (Python 2) names to Python 3 ones, as pickle's own fix_imports does."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


class _Archive:
    """The records of a torch zip checkpoint, stored ones only."""

    def __init__(self, path: Path) -> None:
        try:
            self.zip = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise Refusal("refusing the legacy (pre-1.6, non-zip) torch format, which only unrestricted "
                           "unpicklers read; re-save it with torch >= 1.6") from None
        names = self.zip.namelist()
        pickles = [name for name in names if name.endswith("/data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise Refusal("refusing a zip file that is not one torch checkpoint (no single <archive>/data.pkl)")
        self.prefix = pickles[0][: -len("data.pkl")]
        self.size = path.stat().st_size
        if any(name.startswith((self.prefix + "code/", self.prefix + "constants.pkl")) for name in names):
            raise Refusal("refusing a TorchScript archive")
        if self.prefix + "byteorder" in names and self.read(self.prefix + "byteorder").strip() != b"little":
            raise Refusal("refusing a big-endian checkpoint")
        self.storages: dict[str, _Storage] = {}

    def read(self, name: str) -> bytes:
        info = self.zip.getinfo(name)
        if info.compress_type != zipfile.ZIP_STORED or info.file_size > self.size:
            raise Refusal(f"refusing the compressed or oversized record {name}")
        return self.zip.read(info)

    def storage(self, key: str, dtype: torch.dtype, numel: int) -> _Storage:
        name = f"{self.prefix}data/{key}"
        if name not in self.storages:
            if name not in self.zip.NameToInfo:
                raise Refusal(f"refusing a tensor whose storage record {key!r} is missing")
            raw = bytearray(self.read(name))
            itemsize = torch.empty((), dtype=dtype).element_size()
            if len(raw) < numel * itemsize:
                raise Refusal(f"refusing storage {key}: {numel} elements in {len(raw)} bytes")
            flat = torch.frombuffer(raw, dtype=torch.uint8)[: numel * itemsize] if numel else \
                torch.empty(0, dtype=torch.uint8)
            self.storages[name] = _Storage(flat.view(dtype))
        storage = self.storages[name]
        if storage.flat.dtype != dtype:
            raise Refusal(f"refusing storage {key} read as two dtypes")
        return storage


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: _Archive) -> None:
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self.archive = archive

    def find_class(self, module: str, name: str) -> Any:
        module, name = _translate(module, name)
        full = f"{module}.{name}"
        if full in _CLASSES:
            return _CLASSES[full]
        if full in _VALUES:
            return _VALUES[full]
        raise Refusal(f"refusing global {full}")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (type(pid) is tuple and len(pid) == 5 and pid[0] in ("storage", b"storage")):
            raise Refusal("refusing a persistent id that is not a tensor storage")
        _, storage_type, key, _location, numel = pid  # location: always loaded on the CPU
        if not isinstance(storage_type, _StorageType) or type(key) is not str or not key.isdigit() \
                or type(numel) is not int or numel < 0:
            raise Refusal("refusing a malformed storage id")
        return self.archive.storage(key, storage_type.dtype, numel)


def _unpickle(path: Path) -> Any:
    archive = _Archive(path)
    return _RestrictedUnpickler(archive.read(archive.prefix + "data.pkl"), archive).load()


def unpickle_checkpoint(path: Path) -> Any:
    """The object in a torch zip checkpoint, through the restricted unpickler (see the module docstring).

    Raises:
        ReferenceCheckpointError: one line naming the refused global or structure (nothing has run).
    """
    try:
        return _unpickle(path)
    except Refusal as refusal:
        raise ReferenceCheckpointError(f"{refusal} in a reference checkpoint: {path}") from None
    except Exception as exc:  # truncated zip, malformed pickle opcodes, wrong argument types, ...
        raise read_error(path, exc) from None


def read_error(path: Path, exc: BaseException) -> ReferenceCheckpointError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return ReferenceCheckpointError(f"cannot read reference checkpoint {path}: {type(exc).__name__}: {first}")


def is_reference_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a torch zip checkpoint whose pickle names ultralytics or spikingjelly classes.

    Only scans the pickle's opcodes (pickletools; nothing is unpickled). False for anything else, so
    the caller reads it as a spikeyolo checkpoint (weights-only) and reports that reader's error.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") and name.count("/") == 1]
            info = archive.getinfo(pickles[0]) if len(pickles) == 1 else None
            if info is None or info.compress_type != zipfile.ZIP_STORED or info.file_size > Path(path).stat().st_size:
                return False  # torch writes one stored data.pkl; never inflate anything here
            data = archive.read(info)
        strings: list[str] = []
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name == "GLOBAL":
                module = str(arg).split(" ", 1)[0]
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                module = strings[-2]
            else:
                if isinstance(arg, str):
                    strings.append(arg)
                continue
            if module.startswith(("ultralytics.", "spikingjelly.")):
                return True
    except Exception:  # not a zip, truncated, malformed opcodes
        return False
    return False
