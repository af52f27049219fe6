"""One bounded reader of torch zip files that never runs anything the file names (checkpoints are data).

Every checkpoint spikeyolo reads (its own, a reference BICLab/SpikeYOLO one, a stock ultralytics one) goes
through :func:`read_torch_zip` instead of ``torch.load``. What it admits:

* torch's zip format only (torch >= 1.6), read with :mod:`zipfile`: one ``<archive>/data.pkl``, no
  TorchScript ``code/``, little-endian, and every record *stored* (torch never compresses), so a record's
  size is its size in the file; all records together may not hold more bytes than the file (overlapping
  records are refused), so nothing is inflated beyond the file.
* The pickle is read by a pure-Python unpickler (``pickle._Unpickler``) whose opcodes are overridden:
  globals resolve only to this module's own functions (tensor and numpy-scalar rebuilders, typed-storage
  names, ``OrderedDict``, ``set``, ``torch.Size``, ``torch.device``) and to the caller's inert stand-in
  classes (:class:`StandIn` subclasses, by qualified name). ``BUILD`` sets state only on stand-ins, on the
  reader's numpy dtype and on an ``OrderedDict``'s plain ``_metadata`` (torch state_dicts carry it); never on
  a tensor (``Tensor.__setstate__`` skips torch's overlap checks). ``NEWOBJ`` makes stand-ins only; the
  protocol 0/1 object opcodes (``INST``, ``OBJ``) are refused.
* Dict keys and set members are checked when they are inserted (before anything hashes them): str of at
  most ``MAX_KEY_CHARS`` characters, int of at most ``MAX_KEY_INT_BITS`` bits, float, bool or None.
* Tensors are rebuilt from the storage records by :func:`_rebuild_tensor`: rank, sizes, strides and offset
  checked against the storage, and the bytes of all rebuilt tensors together (a view rebuilt N times
  counts N times) may not exceed the bytes of the file's storage records (no fan-out of one storage).
* The result is walked once (iteratively): at most ``MAX_DEPTH`` levels, at most ``MAX_VISITS`` items
  reachable counting every path (shared containers count once per path), no object inside itself.

Every refusal is one line made of bounded text (:func:`short_repr`), never the repr of what the file holds.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import math
import pickle
import pickletools
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spikeyolo.errors import CheckpointError

__all__ = ["Refusal", "StandIn", "stand_in_classes", "read_torch_zip", "unpickle_torch_zip", "pickle_globals",
           "short_repr", "MAX_DEPTH", "MAX_VISITS", "MAX_ITEMS", "MAX_KEY_CHARS", "MAX_KEY_INT_BITS",
           "MAX_TENSOR_DIMS", "MAX_DIM_SIZE", "MAX_EMPTY_VOLUME"]

# ------------------------------------------------------------------------------------------------- the bounds
MAX_DEPTH = 128               # container levels of the result (a YOLO module tree is ~40, a spikeyolo payload ~6)
MAX_VISITS = 1_000_000        # items reachable from the result, counting each path to a shared container
MAX_ITEMS = 4_000_000         # items the pickle puts into lists, dicts, sets and mark-tuples, in total
MAX_KEY_CHARS = 4096          # a str dict key or set member (state_dict keys are ~100)
MAX_KEY_INT_BITS = 64         # an int dict key or set member
MAX_TENSOR_DIMS = 16          # a tensor's rank
MAX_DIM_SIZE = 2**31 - 1      # one tensor dimension (size or stride), and a storage offset is below 2**40
MAX_EMPTY_VOLUME = 2**16      # product of the sizes (zeros as 1) of a tensor beyond its storage's elements
MAX_REPR_CHARS = 60           # of a value quoted in a refusal


class Refusal(Exception):
    """What the file holds is refused; the text is one bounded line (the reader adds the file)."""


def short_repr(value: Any, limit: int = MAX_REPR_CHARS) -> str:
    """A bounded, constant-time description of ``value`` for messages (never recurses into containers)."""
    kind = type(value)
    if value is None or kind in (bool, float):
        text = repr(value)
    elif kind is int:
        text = repr(value) if value.bit_length() <= 64 else f"<int of {value.bit_length()} bits>"
    elif kind in (str, bytes):
        text = repr(value[:limit])
    elif kind in (tuple, list) and len(value) <= 8 and all(
            v is None or type(v) in (bool, float) or type(v) is int and v.bit_length() <= 64 for v in value):
        text = repr(value)
    elif kind in (tuple, list, dict, set, frozenset, collections.OrderedDict):
        text = f"<{kind.__name__} of {len(value)} items>"
    else:
        text = f"<{kind.__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


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


# ------------------------------------------------------------------------------------------------- the archive
class _Archive:
    """The records of a torch zip file: stored ones only, together no larger than the file."""

    def __init__(self, path: Path) -> None:
        try:
            self.zip = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise Refusal("refusing the legacy (pre-1.6, non-zip) torch format, which only unrestricted "
                          "unpicklers read; re-save it with torch >= 1.6") from None
        self.size = path.stat().st_size
        infos = self.zip.infolist()
        total = 0
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size \
                    or info.file_size > self.size:
                raise Refusal(f"refusing the compressed or oversized record {short_repr(info.filename, 200)[1:-1]}")
            total += info.file_size
        if total > self.size:
            raise Refusal(f"refusing records of {total} bytes in a file of {self.size} bytes (overlapping records)")
        names = [info.filename for info in infos]
        pickles = [name for name in names if name.endswith("/data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise Refusal("refusing a zip file that is not one torch checkpoint (no single <archive>/data.pkl)")
        self.prefix = pickles[0][: -len("data.pkl")]
        if any(name.startswith((self.prefix + "code/", self.prefix + "constants.pkl")) for name in names):
            raise Refusal("refusing a TorchScript archive")
        if self.prefix + "byteorder" in names and self.read(self.prefix + "byteorder").strip() != b"little":
            raise Refusal("refusing a big-endian checkpoint")
        self.tensor_budget = sum(info.file_size for info in infos if info.filename.startswith(self.prefix + "data/"))
        self.tensor_bytes = 0
        self.storages: dict[str, _Storage] = {}

    def read(self, name: str) -> bytearray:
        info = self.zip.getinfo(name)  # stored and bounded: checked in __init__
        raw = bytearray(info.file_size)
        with self.zip.open(info) as handle:
            if handle.readinto(raw) != info.file_size or handle.read(1):
                raise Refusal(f"refusing the truncated record {short_repr(name, 200)[1:-1]}")
        return raw

    def account(self, nbytes: int) -> None:
        self.tensor_bytes += nbytes
        if self.tensor_bytes > self.tensor_budget:
            raise Refusal(f"refusing tensors of more than {self.tensor_budget} bytes in total (what the file's "
                          "storage records hold)")

    def storage(self, key: str, dtype: torch.dtype, numel: int) -> _Storage:
        name = f"{self.prefix}data/{key}"
        if name not in self.storages:
            if name not in self.zip.NameToInfo:
                raise Refusal(f"refusing a tensor whose storage record {short_repr(key)} is missing")
            raw = self.read(name)
            itemsize = torch.empty((), dtype=dtype).element_size()
            if len(raw) < numel * itemsize:
                raise Refusal(f"refusing storage {key}: {numel} elements in {len(raw)} bytes")
            flat = torch.frombuffer(raw, dtype=torch.uint8)[: numel * itemsize] if numel else \
                torch.empty(0, dtype=torch.uint8)
            self.storages[name] = _Storage(flat.view(dtype), self)
        storage = self.storages[name]
        if storage.flat.dtype != dtype:
            raise Refusal(f"refusing storage {key} read as two dtypes")
        return storage


# ------------------------------------------------------------------------------------------------- the unpickler
def _plain_metadata(value: Any) -> bool:
    """A state_dict's ``_metadata``: {module prefix: {"version": int, ...}} of scalars only."""
    return type(value) in (dict, collections.OrderedDict) and len(value) <= MAX_ITEMS and all(
        type(key) is str and len(key) <= MAX_KEY_CHARS and type(entry) is dict and len(entry) <= 16 and all(
            type(name) is str and len(name) <= 64 and (item is None or type(item) in (int, float, str, bool))
            for name, item in entry.items()) for key, entry in value.items())


def _describe(obj: Any) -> str:
    if type(obj) in (_Function, _StorageType):
        return f"global {obj.name}"
    if type(obj) is _Storage:
        return "a tensor storage"
    if isinstance(obj, type):
        return f"class {obj.__name__}"
    return f"a {type(obj).__name__}"


class _Unpickler(pickle._Unpickler):  # the pure-Python one: its opcodes can be overridden
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, data: bytes | bytearray, archive: _Archive, stand_ins: Mapping[str, type]) -> None:
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self.archive, self.stand_ins, self.items = archive, stand_ins, 0
        self.stand_in_ids = {id(cls) for cls in stand_ins.values()}

    def count(self, items: int) -> None:
        self.items += items
        if self.items > MAX_ITEMS:
            raise Refusal(f"refusing more than {MAX_ITEMS} container items")

    def find_class(self, module: str, name: str) -> Any:
        module, name = _translate(module, name)
        full = f"{module}.{name}"
        if full in self.stand_ins:
            return self.stand_ins[full]
        if full in _VALUES:
            return _VALUES[full]
        raise Refusal(f"refusing global {short_repr(full, 200)[1:-1]}")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (type(pid) is tuple and len(pid) == 5 and type(pid[0]) in (str, bytes) and pid[0] in
                ("storage", b"storage")):
            raise Refusal("refusing a persistent id that is not a tensor storage")
        _, storage_type, key, _location, numel = pid  # location: always loaded on the CPU
        if type(storage_type) is not _StorageType or type(key) is not str or len(key) > 20 or not key.isdigit() \
                or type(numel) is not int or numel < 0:
            raise Refusal("refusing a malformed storage id")
        return self.archive.storage(key, storage_type.dtype, numel)

    def dict_target(self) -> dict:
        target = self.stack[-1]
        if type(target) not in (dict, collections.OrderedDict):
            raise Refusal(f"refusing to set items on {_describe(target)}")
        return target

    def load_setitem(self) -> None:
        value, key = self.stack.pop(), self.stack.pop()
        target = self.dict_target()
        _check_key(key)
        self.count(1)
        target[key] = value
    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_setitems(self) -> None:
        items = self.pop_mark()
        target = self.dict_target()
        self.count(len(items) // 2)
        for index in range(0, len(items) - 1, 2):
            _check_key(items[index])
            target[items[index]] = items[index + 1]
    dispatch[pickle.SETITEMS[0]] = load_setitems

    def load_dict(self) -> None:
        items = self.pop_mark()
        self.count(len(items) // 2)
        result = {}
        for index in range(0, len(items) - 1, 2):
            _check_key(items[index])
            result[items[index]] = items[index + 1]
        self.append(result)
    dispatch[pickle.DICT[0]] = load_dict

    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is not set:
            raise Refusal(f"refusing to add items to {_describe(target)}")
        self.count(len(items))
        for item in items:
            _check_key(item)
        target.update(items)
    dispatch[pickle.ADDITEMS[0]] = load_additems

    def load_frozenset(self) -> None:
        items = self.pop_mark()
        self.count(len(items))
        for item in items:
            _check_key(item)
        self.append(frozenset(items))
    dispatch[pickle.FROZENSET[0]] = load_frozenset

    def load_append(self) -> None:
        value = self.stack.pop()
        target = self.stack[-1]
        if type(target) is not list:
            raise Refusal(f"refusing to append to {_describe(target)}")
        self.count(1)
        target.append(value)
    dispatch[pickle.APPEND[0]] = load_append

    def load_appends(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is not list:
            raise Refusal(f"refusing to append to {_describe(target)}")
        self.count(len(items))
        target.extend(items)
    dispatch[pickle.APPENDS[0]] = load_appends

    def load_list(self) -> None:
        items = self.pop_mark()
        self.count(len(items))
        self.append(items)
    dispatch[pickle.LIST[0]] = load_list

    def load_tuple(self) -> None:
        items = self.pop_mark()
        self.count(len(items))
        self.append(tuple(items))
    dispatch[pickle.TUPLE[0]] = load_tuple

    def load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        func = _CALLS.get(id(func), func)
        if type(func) is not _Function and func is not _NumpyDtype and id(func) not in self.stand_in_ids:
            raise Refusal(f"refusing to call {_describe(func)}")
        if type(args) is not tuple:
            raise Refusal("refusing call arguments that are not a tuple")
        self.stack[-1] = func(*args)
    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        if id(cls) not in self.stand_in_ids or type(args) is not tuple:
            raise Refusal(f"refusing to create an object of {_describe(cls)}")
        self.append(cls.__new__(cls, *args))
    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        if kwargs:
            raise Refusal("refusing keyword arguments of an object")
        self.load_newobj()
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def load_old_object(self) -> None:
        raise Refusal("refusing the protocol 0/1 object opcodes (INST, OBJ)")
    dispatch[pickle.INST[0]] = load_old_object
    dispatch[pickle.OBJ[0]] = load_old_object

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, StandIn) and id(type(inst)) in self.stand_in_ids or type(inst) is _NumpyDtype:
            inst.__setstate__(state)
        elif type(inst) is collections.OrderedDict and type(state) is dict and list(state) == ["_metadata"] \
                and _plain_metadata(state["_metadata"]):
            inst._metadata = state["_metadata"]
        else:
            raise Refusal(f"refusing to set state on {_describe(inst)}")
    dispatch[pickle.BUILD[0]] = load_build


# ------------------------------------------------------------------------------------------------- the result
_LEAVE = object()


def _children(obj: Any) -> Any:
    kind = type(obj)
    if kind in (dict, collections.OrderedDict):
        return obj.values()
    if kind in (list, tuple, set, frozenset):
        return obj
    if isinstance(obj, StandIn):
        return obj.state.values()
    return None


def _check_tree(root: Any) -> None:
    """Depth, reachable items (every path counts) and self-containment of the result, without recursion.

    Each container is measured once (its height and the items below it, by identity), so a file of shared
    containers whose paths multiply is refused in as many steps as it has containers. A stand-in reached
    through its parents' ``_modules`` dicts is named by its module path in the refusal.
    """
    measured: dict[int, tuple[int, int]] = {}  # id -> (height, items below it counting every path)
    path: set[int] = set()
    stack: list[tuple[Any, Any, bool]] = [(root, None, False)]
    while stack:
        obj, label, done = stack.pop()
        children = _children(obj)
        if done:
            path.discard(id(obj))
            height, items = 1, 0
            for child in children:
                below = measured.get(id(child), (0, 0))
                height, items = max(height, below[0] + 1), items + 1 + below[1]
            if height > MAX_DEPTH:
                raise Refusal(f"refusing objects nested deeper than {MAX_DEPTH} levels")
            if items > MAX_VISITS:
                raise Refusal(f"refusing more than {MAX_VISITS} reachable items (a shared container counts once "
                              "per path to it)")
            measured[id(obj)] = (height, items)
            continue
        if children is None or id(obj) in measured:
            continue
        if id(obj) in path:
            if isinstance(obj, StandIn) and type(label) is str:
                raise Refusal(f"refusing module {label or 'model'}, which contains itself")
            raise Refusal(f"refusing {_describe(obj)} that contains itself")
        if len(path) >= MAX_DEPTH:
            raise Refusal(f"refusing objects nested deeper than {MAX_DEPTH} levels")
        path.add(id(obj))
        stack.append((obj, label, True))
        if isinstance(obj, StandIn):  # its _modules dict names the children modules
            prefix = label if type(label) is str else ""
            stack.extend((value, ("modules", prefix) if name == "_modules" else None, False)
                         for name, value in obj.state.items())
        elif type(label) is tuple and type(obj) in (dict, collections.OrderedDict):
            stack.extend((child, f"{label[1]}.{key}".lstrip("."), False) for key, child in obj.items())
        else:
            stack.extend((child, None, False) for child in children)


def unpickle_torch_zip(path: str | Path, stand_ins: Mapping[str, type] | None = None) -> Any:
    """The object in a torch zip file, read with the bounds of the module docstring.

    Raises:
        Refusal: what the file holds is refused (one bounded line, without the file).
        Exception: a malformed file (truncated zip, bad opcodes): the caller reports it in one line.
    """
    archive = _Archive(Path(path))
    result = _Unpickler(archive.read(archive.prefix + "data.pkl"), archive, stand_ins or {}).load()
    _check_tree(result)
    return result


def read_torch_zip(path: str | Path, stand_ins: Mapping[str, type] | None = None,
                   error: type[Exception] = CheckpointError, what: str = "checkpoint") -> Any:
    """:func:`unpickle_torch_zip`, every failure as one line ``error``: ``<refusal> in a(n) <what>: <path>`` or
    ``cannot read <what> <path>: <exception type>: <first line, bounded>``."""
    try:
        return unpickle_torch_zip(path, stand_ins)
    except Refusal as refusal:
        raise error(f"{refusal} in {'an' if what[:1] in 'aeiou' else 'a'} {what}: {path}") from None
    except Exception as exc:  # truncated zip, malformed opcodes, wrong argument types, out of memory, ...
        raise read_error(path, exc, error, what) from None


def read_error(path: str | Path, exc: BaseException, error: type[Exception] = CheckpointError,
               what: str = "checkpoint") -> Exception:
    """One line for an unexpected failure while reading ``path`` (the exception's first line, bounded)."""
    text = str(exc)[:400].strip()
    first = (text.splitlines() or [type(exc).__name__])[0][:200]
    return error(f"cannot read {what} {path}: {type(exc).__name__}: {first}")


def pickle_globals(path: str | Path) -> list[str]:
    """The ``module.name`` globals a torch zip file's pickle names, by scanning its opcodes (nothing unpickled).

    Empty for anything else (not a zip, a compressed or oversized data.pkl, malformed opcodes).
    """
    names: list[str] = []
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") and name.count("/") == 1]
            info = archive.getinfo(pickles[0]) if len(pickles) == 1 else None
            if info is None or info.compress_type != zipfile.ZIP_STORED or info.file_size > Path(path).stat().st_size:
                return []  # torch writes one stored data.pkl; never inflate anything here
            data = archive.read(info)
        strings: list[str] = []
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name == "GLOBAL":
                names.append(str(arg).replace(" ", ".", 1))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # not a zip, truncated, malformed opcodes
        return names
    return names
