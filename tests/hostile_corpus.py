"""Hostile checkpoints and run folders, generated into a folder (GitHub issue 24; test support for
tests/test_hostile.py). Nothing binary is committed: every file is written here, on demand.

Three kinds of file:

* raw torch-zip archives written opcode by opcode (:class:`PickleWriter`, :func:`write_zip`), so that every
  opcode is ours: a BUILD on a rebuilt tensor, thousands of tensors on one storage, a compressed record that
  inflates to 3 GB, a dict key of shared doubling tuples, a key nested 10^6 deep, ...;
* "valid-looking" spikeyolo checkpoints (``spikeyolo.engine.checkpoint.save_checkpoint`` of a real tiny
  model's state_dict) whose ``model_config`` is tampered: Hydra ``_target_``s, layer class paths, values out of
  range or of the wrong type;
* run folders: a copy of tests/fixtures/previous_release/run (written by the previous release) with a tampered
  config.yaml or weights/last.pt.

Every attempt to run code aims at :data:`MARKER`, a *relative* path: it lands in the working directory of the
process that reads the file, so "nothing ran" is "no MARKER file there". Attempts that only import a module
name one of :data:`CANARY_MODULES` (modules nothing in spikeyolo imports), so "nothing was imported" is
checkable too. Each case has a short id (:data:`CASES`) and says what it attacks.
"""

from __future__ import annotations

import copy
import functools
import pickle
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MARKER = "PWNED"                       # relative: lands in the reading process's working directory
CANARY_MODULES = ("this", "__hello__")  # modules a layer class path imports; spikeyolo never does
FIXTURE_RUN = Path(__file__).parent / "fixtures" / "previous_release" / "run"
TINY = ["model.width_multiple=0.0625", "data.imgsz=64"]   # (spikeyolo_n's depth is already 0.33)

# ----------------------------------------------------------------------------- a protocol-2 pickle writer


@dataclass
class Raw:
    """Opcodes inserted as they are (a hostile fragment)."""

    data: bytes


@dataclass
class TensorRef:
    """``torch._utils._rebuild_tensor_v2`` of storage record ``key`` (``dtype``: a torch storage class name)."""

    key: str
    numel: int
    size: Any
    stride: Any
    offset: int = 0
    dtype: str = "FloatStorage"
    build: Any = None   # a BUILD state applied to the rebuilt tensor (Tensor.set_(*state) in torch's reader)


@dataclass
class OrderedDictOf:
    """A ``collections.OrderedDict`` (what torch's state_dict is)."""

    items: dict


class PickleWriter:
    """Encode plain values, :class:`TensorRef` and :class:`Raw` fragments as protocol-2 opcodes."""

    def __init__(self) -> None:
        self.out = bytearray(b"\x80\x02")

    def finish(self, value: Any) -> bytes:
        self.encode(value)
        self.out += b"."
        return bytes(self.out)

    def encode(self, value: Any) -> None:
        out = self.out
        if isinstance(value, Raw):
            out += value.data
        elif value is None:
            out += b"N"
        elif value is True or value is False:
            out += b"\x88" if value else b"\x89"
        elif isinstance(value, int):
            if -2 ** 31 <= value < 2 ** 31:
                out += b"J" + struct.pack("<i", value)
            else:
                data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
                out += b"\x8a" + bytes([len(data)]) + data
        elif isinstance(value, float):
            out += b"G" + struct.pack(">d", value)
        elif isinstance(value, str):
            data = value.encode("utf-8", "surrogatepass")
            out += b"X" + struct.pack("<I", len(data)) + data
        elif isinstance(value, tuple):
            out += b"("
            for item in value:
                self.encode(item)
            out += b"t"
        elif isinstance(value, list):
            out += b"]("
            for item in value:
                self.encode(item)
            out += b"e"
        elif isinstance(value, OrderedDictOf):
            out += b"ccollections\nOrderedDict\n)R"
            self._items(value.items)
        elif isinstance(value, dict):
            out += b"}"
            self._items(value)
        elif isinstance(value, TensorRef):
            self._tensor(value)
        else:
            raise TypeError(f"cannot encode {type(value).__name__}")

    def _items(self, items: dict) -> None:
        if items:
            self.out += b"("
            for key, item in items.items():
                self.encode(key)
                self.encode(item)
            self.out += b"u"

    def _tensor(self, ref: TensorRef) -> None:
        self.out += b"ctorch._utils\n_rebuild_tensor_v2\n("
        self.storage(ref.key, ref.numel, ref.dtype)
        for item in (ref.offset, ref.size, ref.stride, False, OrderedDictOf({})):
            self.encode(item)
        self.out += b"tR"
        if ref.build is not None:
            self.encode(ref.build)
            self.out += b"b"

    def storage(self, key: str, numel: int, dtype: str = "FloatStorage") -> None:
        """The persistent id torch's reader loads a storage record by: ('storage', torch.<dtype>, key, 'cpu', n)."""
        self.out += b"(" + b"X" + struct.pack("<I", 7) + b"storage" + f"ctorch\n{dtype}\n".encode()
        self.encode(key)
        self.encode("cpu")
        self.encode(numel)
        self.out += b"tQ"


def storage_id(key: str, numel: int, dtype: str = "FloatStorage") -> Raw:
    """The storage of record ``key`` as a value (for a BUILD state)."""
    writer = PickleWriter()
    writer.out = bytearray()
    writer.storage(key, numel, dtype)
    return Raw(bytes(writer.out))


def doubling_tuple(levels: int, first_memo: int = 1000) -> Raw:
    """t0 = (), t_{i+1} = (t_i, t_i), each kept in the memo and fetched twice: ~14 bytes a level, 2^levels leaves
    (hashing or printing it walks every leaf: 2^64 steps for 64 levels)."""
    out = bytearray(b")r" + struct.pack("<I", first_memo))
    for level in range(levels):   # the stack holds t_i; with t_i from the memo, TUPLE2 makes t_{i+1}
        out += b"j" + struct.pack("<I", first_memo + level) + b"\x86" + b"r" + struct.pack("<I", first_memo + level + 1)
    return Raw(bytes(out))


def nested_tuple(depth: int) -> Raw:
    """A tuple nested ``depth`` deep, one byte a level: ((((...),),),)."""
    return Raw(b")" + b"\x85" * depth)


def nested_list(depth: int) -> Raw:
    """A list nested ``depth`` deep: [[[...]]]."""
    return Raw(b"]" * depth + b"a" * (depth - 1))


def call_global(module: str, name: str, *args: Any) -> Raw:
    """``module.name(*args)`` as opcodes (GLOBAL, a tuple, REDUCE)."""
    writer = PickleWriter()
    writer.out = bytearray(f"c{module}\n{name}\n".encode())
    writer.encode(tuple(args))
    writer.out += b"R"
    return Raw(bytes(writer.out))


def tensor_records(state: dict, prefix: str = "") -> tuple[OrderedDictOf, dict[str, bytes]]:
    """A state_dict as TensorRefs and the storage records they read (one record per tensor)."""
    import torch

    names = {torch.float32: "FloatStorage", torch.int64: "LongStorage", torch.float16: "HalfStorage"}
    refs, records = {}, {}
    for index, (name, tensor) in enumerate(state.items()):
        tensor = tensor.detach().contiguous().cpu()
        key = f"{prefix}{index}"
        records[key] = tensor.numpy().tobytes() if tensor.numel() else b""
        stride = tuple(tensor.stride())
        refs[name] = TensorRef(key, tensor.numel(), tuple(tensor.shape), stride, dtype=names[tensor.dtype])
    return OrderedDictOf(refs), records


# ----------------------------------------------------------------------------- a torch zip archive, by hand


@dataclass
class Record:
    """One zip member: its bytes as stored, how they are stored, the size and CRC they claim once read."""

    name: str
    stored: bytes
    method: int = 0          # 0 stored, 8 deflate
    size: int | None = None  # the inflated size (default len(stored))
    crc: int | None = None


def write_zip(path: Path, records: list[Record]) -> Path:
    """A zip file of ``records`` exactly as given (a deflated record may claim any inflated size)."""
    body, central = bytearray(), bytearray()
    for record in records:
        name = record.name.encode()
        size = len(record.stored) if record.size is None else record.size
        crc = zlib.crc32(record.stored) if record.crc is None else record.crc
        fields = struct.pack("<HHHHHIII", 20, 0, record.method, 0, 0x21, crc, len(record.stored), size)
        offset = len(body)
        body += b"PK\x03\x04" + fields + struct.pack("<HH", len(name), 0) + name + record.stored
        central += (b"PK\x01\x02" + struct.pack("<H", 20) + fields
                    + struct.pack("<HHHHHII", len(name), 0, 0, 0, 0, 0, offset) + name)
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, len(records), len(records), len(central), len(body), 0)
    path.write_bytes(bytes(body + central + end))
    return path


def torch_zip(path: Path, data_pkl: bytes, storages: dict[str, bytes] | None = None,
              extra: list[Record] | None = None) -> Path:
    """The layout ``torch.save`` writes: archive/data.pkl, archive/data/<key>, byteorder, version."""
    records = [Record("archive/data.pkl", data_pkl), Record("archive/byteorder", b"little"),
               Record("archive/version", b"3\n")]
    records += [Record(f"archive/data/{key}", data) for key, data in (storages or {}).items()]
    return write_zip(path, records + list(extra or []))


@functools.lru_cache(maxsize=2)
def deflated_zeros(total: int, chunk: int = 10 ** 6) -> tuple[bytes, int]:
    """A deflate stream of ``total`` zero bytes (~1/1030 of that on disk), built from one compressed chunk
    repeated (a full flush makes every chunk after the first compress to the same bytes): (stream, CRC-32)."""
    assert total % chunk == 0
    zeros = bytes(chunk)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    repeat = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    stream = first + repeat * (total // chunk - 1) + compressor.flush()
    crc = 0
    for _ in range(total // chunk):
        crc = zlib.crc32(zeros, crc)
    return stream, crc


def bomb_record(name: str) -> Record:
    """Record ``name``: BOMB_BYTES of zeros, deflated."""
    stream, crc = deflated_zeros(BOMB_BYTES)
    return Record(name, stream, method=8, size=BOMB_BYTES, crc=crc)


# ----------------------------------------------------------------------------- genuine files (the controls)


def model_config_of(model: str = "spikeyolo_n", num_classes: int = 1) -> dict:
    """The ``model_config`` spikeyolo writes for a tiny model (width 1/16, 64 px)."""
    import spikeyolo

    cfg = spikeyolo.compose([f"model={model}", *TINY])
    return spikeyolo.config.model_config(cfg, num_classes)


def genuine_payload(model: str = "spikeyolo_n") -> dict:
    """The payload of a genuine tiny checkpoint (trained on the embedded trees at 64 px), as save_checkpoint takes."""
    import torch
    import yaml

    import spikeyolo

    torch.manual_seed(0)
    config = model_config_of(model)
    network = spikeyolo.build_model(config)
    train_config = yaml.safe_dump({"data": {"source": "embedded", "name": "trees", "imgsz": 64, "val_rect": True}})
    return {"model_config": config, "model": network.state_dict(), "ema": None, "names": ["tree"],
            "train_config": train_config}


def save(payload: dict, path: Path) -> Path:
    from spikeyolo.engine.checkpoint import save_checkpoint

    return save_checkpoint(payload, path)


# ----------------------------------------------------------------------------- hostile model_config tampering


def write_marker(text: str = "pwned") -> dict:
    """``pathlib.Path(MARKER).write_text(text)`` as a Hydra node."""
    return {"_target_": "pathlib.Path.write_text", "_args_": [{"_target_": "pathlib.Path", "_args_": [MARKER]}, text]}


def os_system() -> dict:
    return {"_target_": "os.system", "_args_": [f"touch {MARKER}"]}


def subprocess_run() -> dict:
    return {"_target_": "subprocess.run", "_args_": [["touch", MARKER]]}


def torch_load_pickle() -> dict:
    """``torch.load(io.BytesIO(<a pickle that runs os.system>), weights_only=False)`` as a Hydra node."""

    class Touch:
        def __reduce__(self):
            import os
            return os.system, (f"touch {MARKER}",)

    return {"_target_": "torch.load", "weights_only": False,
            "f": {"_target_": "io.BytesIO", "_args_": [pickle.dumps(Touch(), protocol=2)]}}


def logging_file() -> dict:
    """``logging.basicConfig(filename=MARKER, force=True, ...)``: creates the file before refusing extra keys."""
    return {"_target_": "logging.basicConfig", "filename": MARKER, "force": True}


def get_class(path: str) -> dict:
    """``hydra.utils.get_class(path)`` as a Hydra node (what a layer's class column goes through)."""
    return {"_target_": "hydra.utils.get_class", "path": path}


def _tamper(change: Callable[[dict], None]) -> Callable[[dict], dict]:
    def apply(payload: dict) -> dict:
        payload = {**payload, "model_config": copy.deepcopy(payload["model_config"])}
        change(payload["model_config"])
        return payload
    return apply


def _set(section: str, key: str, value: Any) -> Callable[[dict], dict]:
    return _tamper(lambda config: config[section].__setitem__(key, value))


def _layer_class(path: str) -> Callable[[dict], dict]:
    def change(config: dict) -> None:
        config["model"]["layers"][1][2] = path
    return _tamper(change)


def _neuron(node: dict) -> Callable[[dict], dict]:
    return _tamper(lambda config: config.__setitem__("neuron", node))


def _model_top(node: dict) -> Callable[[dict], dict]:
    return _tamper(lambda config: config["model"].update(node))


def _without_model_config(payload: dict) -> dict:
    return {key: value for key, value in payload.items() if key != "model_config"}


def _train_imgsz(payload: dict) -> dict:
    return {**payload, "train_config": "data: {source: embedded, name: trees, imgsz: 1000000, val_rect: true}\n"}


# ----------------------------------------------------------------------------- raw hostile archives


def _raw_spikeyolo(path: Path, genuine: dict, replace: Callable[[dict, dict], None],
                   extra: list[Record] | None = None) -> Path:
    """A spikeyolo checkpoint written opcode by opcode from ``genuine``; ``replace(payload, storages)`` swaps
    hostile pieces in (payload values may be Raw / TensorRef)."""
    state, storages = tensor_records(genuine["model"])
    payload = {"format": "spikeyolo-checkpoint", "version": 1, "model_config": genuine["model_config"],
               "model": state, "ema": None, "names": ["tree"], "train_config": genuine["train_config"]}
    replace(payload, storages)
    return torch_zip(path, PickleWriter().finish(payload), storages, extra)


def _reference(path: Path, hostile: Any, storages: dict[str, bytes] | None = None,
               extra: list[Record] | None = None) -> Path:
    """The shape of a reference (ultralytics) checkpoint: {'model': DetectionModel with ``hostile`` as an
    attribute, 'ema': None}; the restricted reference reader takes it (its pickle names ultralytics classes)."""
    writer = PickleWriter()
    writer.out += b"}" + b"X" + struct.pack("<I", 5) + b"model"
    writer.out += b"cultralytics.nn.tasks\nDetectionModel\n)\x81"
    writer.encode({"_modules": {}, "training": False, "hostile": hostile})
    writer.out += b"bs"
    writer.encode("ema")
    writer.out += b"Ns"
    return torch_zip(path, writer.finish(Raw(b"")), storages, extra)


# storage record keys of the hostile tensors (digits, as torch writes them; after the genuine ones)
ONE, SHARED, BOMB = "9001", "9002", "9003"
DEEP = 3 * 10 ** 5        # nesting levels: hashing a tuple this deep overflows the C stack (8 MB; 10^5 does not)
SHARED_VIEWS = 12000      # tensors on one 2 MB storage: ~24 GB once each is copied
BOMB_BYTES = 3 * 10 ** 9  # a storage record that inflates to 3 GB from ~2.9 MB


def _first_key(payload: dict) -> str:
    return next(iter(payload["model"].items))


def raw_build_stride0(payload: dict, storages: dict) -> None:
    """``names``: a one-float tensor that BUILD resizes (Tensor.set_) to 10^10 elements of stride 0: 40 GB asked
    by a few bytes, for whatever copies or iterates it."""
    payload["names"] = TensorRef(ONE, 1, (1,), (1,), build=(storage_id(ONE, 1), 0, (10 ** 10,), (0,)))
    storages[ONE] = bytes(4)


def raw_shared_storage(payload: dict, storages: dict) -> None:
    """``ema``: SHARED_VIEWS tensors each viewing the whole of one 2 MB storage (the archive holds it once)."""
    numel = (2 << 20) // 4
    payload["ema"] = OrderedDictOf({f"view.{index}": TensorRef(SHARED, numel, (numel,), (1,))
                                    for index in range(SHARED_VIEWS)})
    storages[SHARED] = bytes(2 << 20)


def raw_empty_huge(payload: dict, storages: dict) -> None:
    """The first weight: an empty tensor of shape (0, 2^62, 2^62): zero bytes, a shape nothing can allocate."""
    payload["model"].items[_first_key(payload)] = TensorRef(ONE, 0, (0, 2 ** 62, 2 ** 62), (1, 1, 1))
    storages[ONE] = b""


def raw_zip_bomb(payload: dict, storages: dict) -> None:
    """The first weight reads record BOMB: 3 GB once inflated, ~2.9 MB in the file."""
    numel = BOMB_BYTES // 4
    payload["model"].items[_first_key(payload)] = TensorRef(BOMB, numel, (numel,), (1,))


def raw_doubling_key(payload: dict, storages: dict) -> None:
    """A dict key made of 64 levels of shared doubling tuples (~1 KB): hashing it takes 2^64 steps."""
    payload["x"] = Raw(b"}" + doubling_tuple(64).data + b"K\x00s")


def raw_doubling_size(payload: dict, storages: dict) -> None:
    """The first weight's size is the 64-level doubling tuple: a repr of it (an error message) never ends."""
    payload["model"].items[_first_key(payload)] = TensorRef(ONE, 1, doubling_tuple(64), (1,))
    storages[ONE] = bytes(4)


def raw_deep_key(payload: dict, storages: dict) -> None:
    """A dict key nested DEEP levels (one byte a level): hashing or printing it overflows the C stack."""
    payload["x"] = Raw(b"}" + nested_tuple(DEEP).data + b"K\x00s")


def raw_deep_config(payload: dict, storages: dict) -> None:
    """model_config.model.in_chs a list nested DEEP levels: OmegaConf, repr or a recursive check overflows."""
    payload["model_config"] = copy.deepcopy(payload["model_config"])
    payload["model_config"]["model"]["in_chs"] = nested_list(DEEP)


def raw_global(payload: dict, storages: dict) -> None:
    """A pickled ``os.system`` call in the payload (refused by torch's weights-only reader)."""
    payload["x"] = call_global("os", "system", f"touch {MARKER}")


# ----------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    """One hostile (or genuine) file: its id, the attack in words, the kind of file (``spikeyolo``: a spikeyolo
    checkpoint; ``reference``: a reference-format one; ``run``: a run folder) and whether it is genuine. ``live``:
    the hostile Hydra node on its own, for the check that it really runs (writes MARKER or imports a canary)."""

    id: str
    attack: str
    kind: str = "spikeyolo"
    genuine: bool = False
    model: str = "spikeyolo_n"
    make: Any = field(default=None, compare=False, repr=False)
    live: Any = field(default=None, compare=False, repr=False)   # the hostile node alone: instantiating it runs
    entries: tuple[str, ...] | None = None   # only these entry points read the hostile part (None: all)


def _case(id: str, attack: str, make: Any, kind: str = "spikeyolo", **extra: Any) -> Case:
    return Case(id, attack, kind, make=make, **extra)


CASES: list[Case] = [
    # genuine files: every entry point must accept them (the harness can fail)
    Case("genuine", "a genuine tiny spikeyolo_n checkpoint", genuine=True),
    Case("genuine_tiny_yolo", "a genuine tiny tiny_yolo (ANN) checkpoint", genuine=True, model="tiny_yolo"),
    Case("genuine_reference", "a genuine reference-format (BICLab) checkpoint", kind="reference", genuine=True),
    Case("genuine_run", "an untampered copy of the previous release's run folder", kind="run", genuine=True),
    # (a) Hydra _target_s in a stored model_config
    _case("target_torch_load", "neuron: _target_ torch.load(io.BytesIO(<pickle running os.system>), "
          "weights_only=False)", _neuron(torch_load_pickle()), live=torch_load_pickle()),
    _case("target_write_text", "neuron: _target_ pathlib.Path.write_text(Path(MARKER), ...)",
          _neuron(write_marker()), live=write_marker()),
    _case("target_nested_model", "model.num_classes: a nested _target_ pathlib.Path.write_text (returns 5: the "
          "model builds with 5 classes)", _set("model", "num_classes", write_marker()), live=write_marker()),
    _case("target_block_overrides", "model.block_overrides: a _target_ pathlib.Path.write_text nested in a layer's "
          "args", _set("model", "block_overrides", {"2": {"mlp_ratio": write_marker()}}),
          live=write_marker()),
    _case("target_os_system", "model.block_overrides: a nested _target_ os.system (Hydra's own blocklist names it)",
          _set("model", "block_overrides", {"2": {"mlp_ratio": os_system()}})),
    _case("target_subprocess", "neuron: _target_ subprocess.run(['touch', MARKER]) (Hydra's blocklist names it)",
          _neuron(subprocess_run())),
    _case("target_model_top", "model._target_ logging.basicConfig(filename=MARKER): the file is created before "
          "the extra keys are refused", _model_top(logging_file()), live=logging_file()),
    _case("target_model_os_system", "model._target_ os.system with _args_ ['touch MARKER']",
          _model_top({**os_system()})),
    # (b) layer class paths
    _case("layer_class_hello", "a layer row's class column names __hello__.TestFrozenUtf8_1 (get_class imports "
          "any module)", _layer_class("__hello__.TestFrozenUtf8_1"),
          live=get_class("__hello__.TestFrozenUtf8_1")),
    _case("layer_class_this", "a layer row's class column names this.Zen (importing `this` prints)",
          _layer_class("this.Zen"), live=get_class("this.Zen")),
    _case("layer_class_os", "a layer row's class column names os.system", _layer_class("os.system")),
    # (d) values that build a huge model, (e) values of the wrong type
    _case("num_classes_huge", "model.num_classes = 10**7 (a ~15 GB head)", _set("model", "num_classes", 10 ** 7)),
    _case("num_classes_str", "model.num_classes = 'abc'", _set("model", "num_classes", "abc")),
    _case("width_negative", "model.width_multiple = -1", _set("model", "width_multiple", -1.0)),
    _case("layers_not_list", "model.layers = 'abc' (not a list)", _set("model", "layers", "abc")),
    _case("layers_row_short", "a layer row of two columns", _tamper(
        lambda config: config["model"]["layers"].__setitem__(1, [-1, 1]))),
    _case("time_steps_huge", "neuron.time_steps = 10**9", _set("neuron", "time_steps", 10 ** 9)),
    _case("imgsz_huge", "the run config's data.imgsz = 10**6 (a 10^12-pixel letterbox)", _train_imgsz,
          entries=("Detector.load", "eval", "predict", "export")),   # those that take the trained image size
    _case("no_model_config", "a checkpoint without model_config (KeyError)", _without_model_config),
    _case("model_config_str", "model_config = 'abc'", lambda payload: {**payload, "model_config": "abc"}),
    # (d) raw archives: resources
    _case("raw_build_stride0", "BUILD on a rebuilt tensor: set_ to 10^10 elements of stride 0 (names)",
          raw_build_stride0, kind="raw"),
    _case("raw_shared_storage", f"{SHARED_VIEWS} tensors rebuilding one 2 MB storage (~24 GB if copied)",
          raw_shared_storage, kind="raw"),
    _case("raw_empty_huge", "an empty tensor of shape (0, 2^62, 2^62)", raw_empty_huge, kind="raw"),
    _case("raw_zip_bomb", "a deflated storage record of 3 GB in a ~2.9 MB file", raw_zip_bomb, kind="raw"),
    _case("raw_doubling_key", "a dict key of 64 shared doubling tuples (2^64 hash steps)", raw_doubling_key,
          kind="raw"),
    _case("raw_doubling_size", "a tensor size of 64 shared doubling tuples (its repr never ends)",
          raw_doubling_size, kind="raw"),
    _case("raw_deep_key", f"a dict key nested {DEEP} deep (C stack overflow)", raw_deep_key, kind="raw"),
    _case("raw_deep_config", f"model_config.model.in_chs nested {DEEP} deep", raw_deep_config, kind="raw"),
    _case("raw_global", "a pickled os.system call", raw_global, kind="raw"),
    _case("truncated", "a genuine checkpoint cut in half", None, kind="truncated"),
    _case("legacy_pickle", "a bare (pre-1.6, non-zip) pickle that runs os.system", None, kind="legacy"),
    # the reference reader: resources
    _case("ref_doubling_key", "reference form: a dict key of 64 shared doubling tuples",
          Raw(b"}" + doubling_tuple(64).data + b"K\x00s"), kind="reference"),
    _case("ref_deep_key", f"reference form: a key nested {DEEP} deep", Raw(b"}" + nested_tuple(DEEP).data + b"K\x00s"),
          kind="reference"),
    _case("ref_deep_list", f"reference form: an attribute nested {DEEP} deep", nested_list(DEEP), kind="reference"),
    _case("ref_zip_bomb", "reference form: a tensor whose storage record inflates to 3 GB",
          TensorRef(BOMB, BOMB_BYTES // 4, (BOMB_BYTES // 4,), (1,)), kind="reference"),
    _case("ref_build_stride0", "reference form: BUILD of a tensor to 10^10 elements of stride 0",
          TensorRef(ONE, 1, (1,), (1,), build=(storage_id(ONE, 1), 0, (10 ** 10,), (0,))), kind="reference"),
    _case("ref_shared_storage", f"reference form: {SHARED_VIEWS} tensors on one 2 MB storage",
          [TensorRef(SHARED, (2 << 20) // 4, ((2 << 20) // 4,), (1,)) for _ in range(SHARED_VIEWS)],
          kind="reference"),
    # (c) tampered run folders (resume)
    _case("run_model_target", "config.yaml model.block_overrides: a nested _target_ pathlib.Path.write_text",
          lambda config: config["model"].__setitem__("block_overrides", {2: {"mlp_ratio": write_marker()}}),
          kind="run", live=write_marker()),
    _case("run_model_num_classes", "config.yaml model.num_classes: a nested _target_ pathlib.Path.write_text",
          lambda config: config["model"].__setitem__("num_classes", write_marker()), kind="run",
          live=write_marker()),
    _case("run_neuron_target", "config.yaml neuron: _target_ torch.load(io.BytesIO(<pickle running os.system>))",
          lambda config: config.__setitem__("neuron", torch_load_pickle()), kind="run",
          live=torch_load_pickle()),
    _case("run_neuron_os_system", "config.yaml neuron._target_ os.system, the schema's keys kept (Hydra's "
          "blocklist names it)", lambda config: config["neuron"].__setitem__("_target_", "os.system"), kind="run"),
    _case("run_logger_target", "config.yaml logger: _target_ logging.basicConfig(filename=MARKER)",
          lambda config: config.__setitem__("logger", logging_file()), kind="run", live=logging_file()),
    _case("run_logger_os_system", "config.yaml logger._target_ os.system (the schema's only key)",
          lambda config: config["logger"].__setitem__("_target_", "os.system"), kind="run"),
    _case("run_layer_class", "config.yaml: a layer row's class column names this.Zen",
          lambda config: config["model"]["layers"][1].__setitem__(2, "this.Zen"), kind="run"),
    _case("run_last_pt", "weights/last.pt whose model_config neuron is _target_ pathlib.Path.write_text",
          "last.pt", kind="run", live=write_marker()),
]
BY_ID = {case.id: case for case in CASES}


# ----------------------------------------------------------------------------- writing the corpus


def make_case(case: Case, folder: Path, genuine: dict[str, dict]) -> Path:
    """Write ``case`` into ``folder``; returns the file (or run folder). ``genuine``: payloads by model name."""
    path = folder / f"{case.id}.pt"
    if case.kind == "run":
        return make_run(case, folder / case.id)
    if case.kind == "reference":
        if case.genuine:
            return make_genuine_reference(path)
        storages = {ONE: bytes(4), SHARED: bytes(2 << 20)}
        extra = [bomb_record(f"archive/data/{BOMB}")] if case.id == "ref_zip_bomb" else None
        return _reference(path, case.make, storages, extra)
    payload = genuine[case.model]
    if case.genuine:
        return save(payload, path)
    if case.kind == "raw":
        extra = [bomb_record(f"archive/data/{BOMB}")] if case.id == "raw_zip_bomb" else None
        return _raw_spikeyolo(path, payload, case.make, extra)
    if case.kind == "truncated":
        data = save(payload, folder / "whole.pt").read_bytes()
        (folder / "whole.pt").unlink()
        path.write_bytes(data[: len(data) // 2])
        return path
    if case.kind == "legacy":
        path.write_bytes(PickleWriter().finish(call_global("os", "system", f"touch {MARKER}")))
        return path
    return save(case.make(payload), path)


def make_genuine_reference(path: Path) -> Path:
    """A published-form reference checkpoint of the tiny n topology (tests/reference_fakes.py)."""
    import reference_fakes as fakes
    from conftest import tiny_model

    weights = fakes.lively(fakes.reference_state_dict(tiny_model("n", num_classes=1)))
    return fakes.make_reference_checkpoint(path, weights, "published", "coco", {0: "tree"})


def make_run(case: Case, folder: Path) -> Path:
    """A copy of the previous release's run folder, its config.yaml or last.pt tampered as ``case`` says."""
    import torch
    import yaml

    shutil.copytree(FIXTURE_RUN, folder)
    config_path = folder / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["run_dir"] = str(folder)
    if case.make == "last.pt":
        last = folder / "weights" / "last.pt"
        payload = torch.load(last, weights_only=True)
        payload["model_config"]["neuron"] = {**payload["model_config"]["neuron"], **write_marker()}
        save({k: v for k, v in payload.items() if k not in ("format", "version")}, last)
    elif case.make is not None:
        case.make(config)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def make_corpus(folder: Path, ids: list[str] | None = None) -> dict[str, Path]:
    """Write the cases (all, or ``ids``) into ``folder``: {case id: its file or run folder}."""
    folder.mkdir(parents=True, exist_ok=True)
    cases = [BY_ID[i] for i in ids] if ids is not None else CASES
    genuine = {model: genuine_payload(model) for model in {case.model for case in cases}}
    return {case.id: make_case(case, folder, genuine) for case in cases}
