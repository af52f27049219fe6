"""The bounded checkpoint reader (spikeyolo.torchfile, GitHub issue #24 item 2): hostile files are refused in
one bounded line, quickly and without allocating what they ask for; real checkpoints read as torch.load reads them.

The hostile files are written here by a small protocol-2 pickle writer (no binary blobs) and wrapped as torch's
zip layout; each is read by the spikeyolo reader (``read_checkpoint`` / ``load_checkpoint``) and by the reference
reader (``load_reference_checkpoint``), which share the one unpickler.
"""

from __future__ import annotations

import random
import struct
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import spikeyolo
from spikeyolo import torchfile
from spikeyolo.engine import checkpoint as ckpt
from spikeyolo.errors import CheckpointError, ReferenceCheckpointError
from spikeyolo.checkpoints.reference import load_reference_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "previous_release"

# ----------------------------------------------------------------- a protocol-2 pickle writer


def g(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def s(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def i(value: int) -> bytes:
    return b"J" + struct.pack("<i", value) if -2**31 <= value < 2**31 else b"\x8a\x08" + value.to_bytes(8, "little")


def tup(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def put(index: int) -> bytes:
    return b"r" + struct.pack("<I", index)


def get(index: int) -> bytes:
    return b"j" + struct.pack("<I", index)


def storage(key: str = "0", numel: int = 4, kind: str = "FloatStorage") -> bytes:
    return b"(" + s("storage") + g("torch", kind) + s(key) + s("cpu") + i(numel) + b"tQ"


def tensor(size: bytes, stride: bytes, store: bytes = storage(), offset: int = 0) -> bytes:
    return g("torch._utils", "_rebuild_tensor_v2") + b"(" + store + i(offset) + size + stride + b"\x89" + \
        g("collections", "OrderedDict") + b")Rt" + b"R"


def payload(value: bytes) -> bytes:
    """{'format': 'spikeyolo-checkpoint', 'version': 1, 'model': value} as a protocol-2 pickle."""
    return b"\x80\x02}(" + s("format") + s("spikeyolo-checkpoint") + s("version") + i(1) + s("model") + value + \
        b"u."


def zip_file(path: Path, data_pkl: bytes, records: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", b"little")
        for name, data in (records or {}).items():
            archive.writestr(f"archive/{name}", data)
    return path


FLOATS = {"data/0": struct.pack("<4f", 1, 2, 3, 4)}


def doubling(levels: int, start: int = 10) -> bytes:
    """t0 = (); t[k+1] = (t[k], t[k]) through the memo: ``levels`` opcodes, 2**levels leaves."""
    out = b")" + put(start) + b"0"
    for level in range(levels):
        out += get(start + level) + get(start + level) + b"\x86" + put(start + level + 1) + b"0"
    return out + get(start + levels)


def deep(levels: int) -> bytes:
    """((((...)))) nested ``levels`` deep: one TUPLE1 opcode a level."""
    return b")" + b"\x85" * levels


def fan_out(count: int) -> bytes:
    """``count`` tensors, each a full view of the same 4-float storage record."""
    first = tensor(tup(i(4)), tup(i(1)), storage() + put(1))
    again = tensor(tup(i(4)), tup(i(1)), get(1))
    return b"(" + first + again * (count - 1) + b"l"


# (case, pickle, records, the refusal's start)
HOSTILE = {
    "BUILD on a tensor (Tensor.__setstate__, set_ with stride 0)": (
        payload(tensor(tup(i(4)), tup(i(1))) + tup(storage() + put(2), i(0), tup(i(100000), i(100000)),
                                                        tup(i(0), i(0))) + b"b"), FLOATS,
        "refusing to set state on a Tensor"),
    "one storage rebuilt by many tensors": (payload(fan_out(64)), FLOATS, "refusing tensors of more than 16 bytes"),
    "zero strides": (payload(tensor(tup(i(100000), i(100000)), tup(i(0), i(0)))), FLOATS,
                     "refusing a tensor of 10000000000 elements over a storage of 4"),
    "empty tensor of a huge shape": (payload(tensor(tup(i(0), i(2**31 - 1), i(2**31 - 1)), tup(i(1), i(1), i(1)))),
                                     FLOATS, "refusing an empty tensor of size (0, 2147483647, 2147483647)"),
    "size beyond a dimension's bound": (payload(tensor(tup(i(0), i(2**62)), tup(i(1), i(1)))), FLOATS,
                                        "refusing a tensor with size (0, 4611686018427387904)"),
    "doubling tuples as a dict key": (payload(b"}" + doubling(64) + i(1) + b"s"), {},
                                      "refusing a dict key or set member <tuple of 2 items>"),
    "doubling tuples as a set member": (payload(g("__builtin__", "set") + b"(" + doubling(64) + b"l\x85R"), {},
                                        "refusing a dict key or set member <tuple of 2 items>"),
    "doubling tuples as a tensor size": (payload(doubling(64) + b"0" + tensor(get(74), tup(i(1), i(1)))), FLOATS,
                                         "refusing a tensor with size <tuple of 2 items>"),
    "doubling tuples as a value": (payload(doubling(64)), {}, "refusing more than 1000000 reachable items"),
    "a key nested 10**6 deep": (payload(b"}" + deep(10**6) + i(1) + b"s"), {},
                                "refusing a dict key or set member <tuple of 1 items>"),
    "a value nested 10**6 deep": (payload(deep(10**6)), {}, "refusing objects nested deeper than 128 levels"),
    "a list inside itself": (payload(b"]" + put(3) + get(3) + b"a"), {}, "refusing a list that contains itself"),
    "a long str key": (payload(b"}" + s("k" * 100_000) + i(1) + b"s"), {}, "refusing a dict key of 100000 characters"),
    "a huge int key": (payload(b"}" + b"\x8b" + struct.pack("<i", 4096) + b"\x01" * 4096 + i(1) + b"s"), {},
                       "refusing a dict key <int of 32761 bits>"),
    "a huge global name": (payload(g("os" * 5000, "system")), {}, "refusing global osososos"),
    "items set on a tensor": (payload(tensor(tup(i(4)), tup(i(1))) + s("k") + i(1) + b"s"), FLOATS,
                              "refusing to set items on a Tensor"),
    "NEWOBJ of an allowed global": (payload(g("torch", "Size") + b")\x81"), {},
                                    "refusing to create an object of global torch.Size"),
    "protocol 0 INST": (payload(b"(" + b"i" + b"collections\nOrderedDict\n"), {},
                        "refusing the protocol 0/1 object opcodes"),
    "BUILD on an OrderedDict with more than _metadata": (
        payload(g("collections", "OrderedDict") + b")R}(" + s("_metadata") + b"}" + s("x") + b"Nsub"), {},
        "refusing to set state on a OrderedDict"),
}


def refused(path: Path, error: type[Exception], read, memory: bool = False) -> str:
    """The one-line refusal of ``read(path)``, within 20 s and (``memory``) 400 MB of Python allocations."""
    if memory:
        tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(error) as caught:
            read(path)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] if memory else 0
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert "\n" not in message and len(message) < 600 and str(path) in message, message
    assert elapsed < 20 and peak < 400e6, (elapsed, peak)  # never what the file asks for (GBs, 2**64 steps)
    return message


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_files_are_refused_in_one_bounded_line(tmp_path, case):
    data, records, expected = HOSTILE[case]
    path = zip_file(tmp_path / "hostile.pt", data, records)
    message = refused(path, CheckpointError, ckpt.read_checkpoint, memory=True)
    assert message.startswith(f"cannot read checkpoint {path}: {expected}"), message
    assert refused(path, CheckpointError, spikeyolo.load_checkpoint) == message
    # the reference reader shares the unpickler: the same refusal, in its own words
    reference = refused(path, ReferenceCheckpointError, load_reference_checkpoint)
    assert reference.startswith(expected) and reference.endswith(f"in a reference checkpoint: {path}"), reference


def test_a_compressed_record_is_refused_before_it_is_inflated(tmp_path):
    """A 200 MB record of zeros deflates to ~200 KB: refused from the zip directory, never inflated."""
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload(tensor(tup(i(4)), tup(i(1)))))
        archive.writestr("archive/data/0", b"\x00" * 200_000_000, compress_type=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 1_000_000
    message = refused(path, CheckpointError, ckpt.read_checkpoint, memory=True)
    assert message == f"cannot read checkpoint {path}: refusing the compressed or oversized record archive/data/0"


def test_records_that_overlap_are_refused(tmp_path):
    """Ten directory entries naming one 1 MB record would read 10 MB from a 1 MB file."""
    path = zip_file(tmp_path / "overlap.pt", payload(b"N"), {"data/0": bytes(1_000_000)})
    with zipfile.ZipFile(path, "a") as archive:
        original = archive.getinfo("archive/data/0")
        for copy in range(1, 10):  # central-directory entries pointing at the same local record
            info = zipfile.ZipInfo(f"archive/data/{copy}", original.date_time)
            info.header_offset, info.compress_size, info.file_size = original.header_offset, \
                original.compress_size, original.file_size
            info.CRC, info.compress_type = original.CRC, zipfile.ZIP_STORED
            archive.filelist.append(info)
            archive.NameToInfo[info.filename] = info
        archive._didModify = True
    message = refused(path, CheckpointError, ckpt.read_checkpoint)
    assert "refusing records of 10000" in message and "(overlapping records)" in message


def test_short_repr_is_bounded_for_what_a_file_can_build():
    nested: tuple = ()
    for _ in range(100):
        nested = (nested, nested)  # 2**100 leaves through sharing
    for value in (nested, "x" * 10**6, 10**5000, list(range(10**6)), {i: i for i in range(10)}, b"\x00" * 10**6):
        assert len(torchfile.short_repr(value)) <= torchfile.MAX_REPR_CHARS + 3


# ----------------------------------------------------------------- real checkpoints read as torch.load reads them


def same(left, right, where: str = "") -> None:
    assert type(left) is type(right), where
    if isinstance(left, torch.Tensor):
        assert left.dtype == right.dtype and torch.equal(left, right), where
    elif isinstance(left, dict):
        assert list(left) == list(right), where
        assert getattr(left, "_metadata", None) == getattr(right, "_metadata", None), where
        for key in left:
            same(left[key], right[key], f"{where}.{key}")
    elif isinstance(left, (list, tuple)):
        assert len(left) == len(right), where
        for index, (a, b) in enumerate(zip(left, right)):
            same(a, b, f"{where}[{index}]")
    else:
        assert left == right or left != left and right != right, where


@pytest.mark.parametrize("name", ["spikeyolo_n.pt", "spikeyolo_ablation.pt", "tiny_yolo.pt", "spiking_yolo.pt",
                                  "yolov8n.pt", "run/weights/last.pt"])
def test_previous_release_checkpoints_read_as_torch_load_reads_them(name):
    path = FIXTURES / name
    same(torchfile.read_torch_zip(path), torch.load(path, weights_only=True))


def test_the_spikeyolo_form_reads_without_stand_ins(tmp_path):
    """RNG states (byte tensors, python's tuple), optimizer state, an EMA and non-contiguous views."""
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.rand(2, 3, 8, 8)).sum().backward()
    optimizer.step()
    base, other = torch.arange(24.0).view(4, 6), torch.arange(24.0).view(4, 6) + 1
    payload = {"model_config": {"model": {"family": "x", "num_classes": 3}, "neuron": {"kind": "relu"}},
               "model": model.state_dict(), "ema": {k: v.clone() for k, v in model.state_dict().items()},
               "optimizer": optimizer.state_dict(), "rng": ckpt.rng_state(), "epoch": 3, "best_fitness": float("nan"),
               "names": ["a", "b", "c"], "views": [base.t(), other[1:, ::2]], "none": None, "flags": {1: True}}
    path = ckpt.save_checkpoint(payload, tmp_path / "last.pt")
    read = ckpt.read_checkpoint(path)
    same(read, torch.load(path, weights_only=True))
    ckpt.set_rng_state(read["rng"])
    assert torch.equal(read["views"][0], base.t()) and torch.equal(read["views"][1], other[1:, ::2])
