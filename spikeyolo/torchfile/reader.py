"""The unpickler of :mod:`spikeyolo.torchfile` (opcodes overridden), the walk of its result, and the read functions."""

from __future__ import annotations

import collections
import io
import pickle
import pickletools
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spikeyolo.errors import CheckpointError
from spikeyolo.torchfile.archive import _Archive
from spikeyolo.torchfile.bounds import MAX_DEPTH, MAX_ITEMS, MAX_KEY_CHARS, MAX_VISITS, Refusal, short_repr
from spikeyolo.torchfile.rebuild import (_CALLS, _VALUES, StandIn, _check_key, _Function, _NumpyDtype, _Storage,
                                         _StorageType, _translate)

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
