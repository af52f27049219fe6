"""What a torch pickle may call in :mod:`spikeyolo.torchfile`: inert stand-ins, the tensor and numpy-scalar rebuilders,
checked dict keys, and the few plain constructors (every one bounds its input)."""

from __future__ import annotations

import _compat_pickle
import collections
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from spikeyolo.torchfile.bounds import (MAX_DIM_SIZE, MAX_EMPTY_VOLUME, MAX_KEY_CHARS, MAX_KEY_INT_BITS,
                                        MAX_REPR_CHARS, MAX_TENSOR_DIMS, Refusal, short_repr)

if TYPE_CHECKING:
    from spikeyolo.torchfile.archive import _Archive

# ------------------------------------------------------------------------------------------------- stand-ins
class StandIn:
    """Inert stand-in for a pickled object: the pickled attribute dict, nothing that runs.

    ``__slots__`` keeps the attributes out of attribute lookup (``obj.keys`` or ``obj.__iter__`` never reach
    pickled data); ``__new__`` takes no arguments and ``__setstate__`` only a dict of plain attribute names.
    Subclasses name the class they stand for in ``pickled_name``.
    """

    __slots__ = ("state",)
    pickled_name = "?"

    def __new__(cls, *args: Any) -> StandIn:
        obj = object.__new__(cls)
        if args:
            raise Refusal(f"refusing constructor arguments for {obj.pickled_name}")
        obj.state = {}
        return obj

    def __setstate__(self, state: Any) -> None:
        if type(state) is not dict or not all(type(key) is str for key in state):
            raise Refusal(f"refusing a state that is not an attribute dict for {self.pickled_name}")
        dunder = next((key for key in state if key.startswith("__")), None)
        if dunder is not None:
            raise Refusal(f"refusing attribute {dunder[:MAX_REPR_CHARS]} on {self.pickled_name}")
        self.state.update(state)

    def __repr__(self) -> str:
        return f"<stand-in {self.pickled_name}>"


def stand_in_classes(names: Mapping[str, tuple[str, ...]], base: type = StandIn) -> dict[str, type]:
    """``{module: (class, ...)}`` -> ``{"module.class": stand-in class}`` (subclasses of ``base``)."""
    return {f"{module}.{name}": type(name, (base,), {"__slots__": (), "pickled_name": f"{module}.{name}"})
            for module, classes in names.items() for name in classes}


# ------------------------------------------------------------------------------------------------- rebuilders
class _Function:
    """An allowed global that is a function: callable, its state can never be set."""

    __slots__ = ("name", "function")

    def __init__(self, name: str, function: Any) -> None:
        self.name, self.function = name, function

    def __call__(self, *args: Any) -> Any:
        return self.function(*args)


class _StorageType:
    """A typed-storage global (torch.HalfStorage, ...): only names the dtype of a persistent id."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: torch.dtype) -> None:
        self.name, self.dtype = name, dtype


class _Storage:
    """One storage record of the archive as a flat tensor of its dtype, and the reader it accounts to."""

    __slots__ = ("flat", "archive")

    def __init__(self, flat: torch.Tensor, archive: _Archive) -> None:
        self.flat, self.archive = flat, archive


_STORAGE_DTYPES = {f"torch.{name}Storage": dtype for name, dtype in (
    ("Float", torch.float32), ("Half", torch.float16), ("BFloat16", torch.bfloat16), ("Double", torch.float64),
    ("Long", torch.int64), ("Int", torch.int32), ("Short", torch.int16), ("Char", torch.int8),
    ("Byte", torch.uint8), ("Bool", torch.bool))}
_NUMPY_SCALAR_CODES = ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1")


def _check_ints(values: Any, what: str, bound: int) -> tuple[int, ...]:
    if type(values) is not tuple or len(values) > MAX_TENSOR_DIMS or \
            not all(type(v) is int and 0 <= v <= bound for v in values):
        raise Refusal(f"refusing a tensor with {what} {short_repr(values)}")
    return values


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                    backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    """torch._utils._rebuild_tensor_v2: a bounds-checked view of the storage; no hooks, no metadata.

    A view with torch's contiguous strides shares the record's buffer; any other is copied.
    """
    del requires_grad  # loaded tensors are plain tensors
    if type(storage) is not _Storage:
        raise Refusal("refusing a tensor whose storage is not a storage record")
    if backward_hooks or metadata:
        raise Refusal("refusing a tensor with backward hooks or metadata")
    size, stride = _check_ints(size, "size", MAX_DIM_SIZE), _check_ints(stride, "stride", MAX_DIM_SIZE)
    (offset,) = _check_ints((offset,), "offset", 2**40)
    if len(size) != len(stride):
        raise Refusal(f"refusing a tensor with size {short_repr(size)} and stride {short_repr(stride)}")
    available = storage.flat.numel()
    numel = math.prod(size)
    if numel:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= available:
            raise Refusal(f"refusing a tensor reaching element {last} of a storage of {available}")
        if numel > available:  # zero or overlapping strides: a small file, a huge copy
            raise Refusal(f"refusing a tensor of {numel} elements over a storage of {available}")
    elif math.prod(n or 1 for n in size) > max(available, MAX_EMPTY_VOLUME):
        raise Refusal(f"refusing an empty tensor of size {short_repr(size)}")
    storage.archive.account(numel * storage.flat.element_size())
    contiguous = all(s == math.prod(size[i + 1:]) for i, s in enumerate(stride) if size[i] > 1)
    if contiguous:
        return storage.flat[offset: offset + numel].view(size)
    return storage.flat.as_strided(size, stride, offset).clone()


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any) -> torch.Tensor:
    """torch._utils._rebuild_parameter: the tensor itself (weights load as plain tensors)."""
    del requires_grad
    if type(data) is not torch.Tensor or backward_hooks:
        raise Refusal("refusing a parameter that is not a plain tensor without hooks")
    return data


def _latin1_bytes(text: Any, encoding: Any = "latin1") -> bytes:
    """_codecs.encode as protocol 2 uses it for bytes: encode(str, 'latin1')."""
    if type(text) is not str or type(encoding) is not str or encoding not in ("latin1", "latin-1"):
        raise Refusal(f"refusing _codecs.encode({type(text).__name__}, {short_repr(encoding)})")
    return text.encode("latin1")


class _NumpyDtype:
    """numpy.dtype('f8', False, True) plus its BUILD state: just the type code and byte order."""

    __slots__ = ("code", "order")

    def __init__(self, code: Any, align: Any = False, copy: Any = True) -> None:
        if type(code) is not str or code not in _NUMPY_SCALAR_CODES:
            raise Refusal(f"refusing numpy dtype {short_repr(code)}")
        self.code, self.order = code, "<"

    def __setstate__(self, state: Any) -> None:
        if type(state) is not tuple or len(state) < 2 or type(state[1]) is not str or state[1] not in "<>|=" \
                or len(state[1]) != 1:
            raise Refusal("refusing a numpy dtype state")
        self.order = state[1]


def _numpy_scalar(dtype: Any, data: Any = None) -> int | float | bool:
    """numpy.core.multiarray.scalar for numeric dtypes only, returned as a Python number."""
    if type(dtype) is not _NumpyDtype or type(data) is not bytes:
        raise Refusal("refusing a numpy scalar that is not a number")
    kind = np.dtype(dtype.code).newbyteorder(dtype.order if dtype.order in "<>" else "=")
    if len(data) != kind.itemsize:
        raise Refusal("refusing a numpy scalar of the wrong size")
    return np.frombuffer(data, dtype=kind)[0].item()


def _check_key(key: Any) -> None:
    """A dict key or set member: a scalar whose hash is cheap (checked before anything hashes it)."""
    kind = type(key)
    if kind is str:
        if len(key) > MAX_KEY_CHARS:
            raise Refusal(f"refusing a dict key of {len(key)} characters")
    elif kind is int:
        if key.bit_length() > MAX_KEY_INT_BITS:
            raise Refusal(f"refusing a dict key {short_repr(key)}")
    elif not (key is None or kind in (bool, float)):
        raise Refusal(f"refusing a dict key or set member {short_repr(key)}")


def _ordered_dict(*args: Any) -> collections.OrderedDict:
    """collections.OrderedDict() as protocol 2 writes it: no arguments (the items follow as SETITEMS)."""
    if args:
        raise Refusal("refusing OrderedDict constructor arguments")
    return collections.OrderedDict()


def _set(items: Any = ()) -> set:
    """builtins.set([...]) as protocol 2 writes a set: a list of keys."""
    if type(items) not in (list, tuple):
        raise Refusal(f"refusing set({short_repr(items)})")
    for item in items:
        _check_key(item)
    return set(items)


def _size(dims: Any = ()) -> torch.Size:
    return torch.Size(_check_ints(tuple(dims) if type(dims) is list else dims, "size", 2**62))


def _device(*args: Any) -> torch.device:
    if not 1 <= len(args) <= 2 or not all(type(a) in (str, int) and (type(a) is int or len(a) <= 32) for a in args):
        raise Refusal(f"refusing torch.device{short_repr(args)}")
    return torch.device(*args)


_VALUES: dict[str, Any] = {
    "collections.OrderedDict": _Function("collections.OrderedDict", _ordered_dict),
    "builtins.set": _Function("builtins.set", _set),
    "torch.Size": _Function("torch.Size", _size),
    "torch.device": torch.device,  # as data (a hook dict may name it); calling it goes through _device
    "torch._utils._rebuild_tensor_v2": _Function("torch._utils._rebuild_tensor_v2", _rebuild_tensor),
    "torch._utils._rebuild_parameter": _Function("torch._utils._rebuild_parameter", _rebuild_parameter),
    "_codecs.encode": _Function("_codecs.encode", _latin1_bytes),
    "numpy.dtype": _NumpyDtype,  # optimizer param_groups may hold numpy float64 scalars
    "numpy.core.multiarray.scalar": _Function("numpy.core.multiarray.scalar", _numpy_scalar),
    "numpy._core.multiarray.scalar": _Function("numpy._core.multiarray.scalar", _numpy_scalar),
    **{name: _StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()},
}
_CALLS = {id(torch.device): _Function("torch.device", _device), id(_NumpyDtype): _NumpyDtype}


def _translate(module: str, name: str) -> tuple[str, str]:
    """Protocol-2 (Python 2) names to Python 3 ones, as pickle's own fix_imports does."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name
