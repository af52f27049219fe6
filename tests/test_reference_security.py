"""Hostile checkpoints: reading a reference checkpoint never runs or writes anything (issue #15).

Each payload below is a pickle that, read with ``pickle.load`` or ``torch.load(weights_only=False)``,
runs a command, evaluates code or writes a file: where that is quick to show, the test first runs it
with the unrestricted ``pickle.loads`` and sees its marker file appear (so the payload is live). The
same bytes are then wrapped as torch's zip checkpoint and as a legacy (non-zip) file, next to the globals
a real reference checkpoint names, and ``spikeyolo.load_reference_weights`` / ``spikeyolo.load_checkpoint``
must refuse them with one line naming the global (or the structure) and leave no file behind.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch

import reference_fakes as fakes
import spikeyolo
from conftest import tiny_model
from spikeyolo import torchfile
from spikeyolo.checkpoints import reference as reference_format
from spikeyolo.checkpoints.reference import ReferenceCheckpointError, load_reference_checkpoint
from spikeyolo.engine.checkpoint import CheckpointError

# ----------------------------------------------------------------- protocol-2 pickle opcodes, written by hand


def op_global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def op_str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def op_tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def call(module: str, name: str, *args: bytes) -> bytes:
    return op_global(module, name) + op_tuple(*args) + b"R"


def op_dict(**items: bytes) -> bytes:
    return b"(" + b"".join(op_str(k) + v for k, v in items.items()) + b"d"


def detection_model(state: bytes) -> bytes:
    """A reference DetectionModel object (NEWOBJ) whose BUILD state is ``state``."""
    return op_global("ultralytics.nn.tasks", "DetectionModel") + b")\x81" + state + b"b"


def as_pickle(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


def checkpoint(payload: bytes) -> bytes:
    """{'model': DetectionModel with the payload as an attribute, 'ema': None}: the shape of a real file."""
    return as_pickle(b"}" + op_str("model") + detection_model(op_dict(_modules=b"}", hostile=payload)) + b"s"
                     + op_str("ema") + b"Ns")


def zip_file(path: Path, data_pkl: bytes, records: dict[str, bytes] | None = None,
             compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", b"little")
        archive.writestr("archive/version", b"3\n")
        for name, data in (records or {}).items():
            archive.writestr(f"archive/{name}", data)
    return path


# ----------------------------------------------------------------- the corpus: (name, payload, live check)


def corpus(tmp: Path) -> list[tuple[str, bytes, str, bool]]:
    """(case, payload, the global the refusal names, whether unrestricted pickle.loads of it is checked live)."""
    marker = tmp / "marker"
    script = tmp / "script.py"
    script.write_text(f"open({str(marker)!r}, 'w').close()\n")
    touch = op_str(f"touch {marker}")
    return [
        ("os.system", call("os", "system", touch), "os.system", True),
        ("posix.system", call("posix", "system", touch), "posix.system", True),
        ("builtins.eval", call("builtins", "eval", op_str(f"open({str(marker)!r}, 'w')")), "builtins.eval", True),
        ("__builtin__.eval", call("__builtin__", "eval", op_str(f"open({str(marker)!r}, 'w')")), "builtins.eval",
         True),
        ("builtins.exec", call("builtins", "exec", op_str(f"open({str(marker)!r}, 'w').close()")), "builtins.exec",
         True),
        ("builtins.open", call("builtins", "open", op_str(str(marker)), op_str("w")), "builtins.open", True),
        ("builtins.compile", call("builtins", "compile", op_str("1"), op_str("x"), op_str("eval")),
         "builtins.compile", False),
        ("builtins.getattr", call("builtins", "getattr", call("builtins", "__import__", op_str("os")),
                                  op_str("system")), "builtins.getattr", False),
        ("builtins.__import__", call("builtins", "__import__", op_str("os")), "builtins.__import__", False),
        ("numpy.save", call("numpy", "save", op_str(str(marker)), b"K\x00"), "numpy.save", True),
        ("numpy.load", call("numpy", "load", op_str(str(tmp / "x.npy")), b"N", b"\x88"), "numpy.load", False),
        ("numpy _reconstruct", call("numpy.core.multiarray", "_reconstruct", b"N", op_tuple(b"K\x00"), op_str("b")),
         "numpy.core.multiarray._reconstruct", False),
        ("subprocess.check_output", call("subprocess", "check_output", b"(" + op_str("touch") + op_str(str(marker))
                                         + b"l"), "subprocess.check_output", True),
        ("subprocess.Popen", call("subprocess", "Popen", b"(" + op_str("touch") + op_str(str(marker)) + b"l"),
         "subprocess.Popen", False),
        ("torch.load", call("torch", "load", op_str(str(tmp / "other.pt"))), "torch.load", False),
        ("torch.serialization.load", call("torch.serialization", "load", op_str(str(tmp / "other.pt"))),
         "torch.serialization.load", False),
        ("torch.hub.load", call("torch.hub", "load", op_str("owner/repo"), op_str("model")), "torch.hub.load", False),
        ("runpy.run_path", call("runpy", "run_path", op_str(str(script))), "runpy.run_path", True),
        ("importlib.import_module", call("importlib", "import_module", op_str("antigravity")),
         "importlib.import_module", False),
        ("functools.partial", call("functools", "partial", op_global("os", "system"), touch) + b")R",
         "functools.partial", True),
        ("copyreg._reconstructor", call("copyreg", "_reconstructor", op_global("builtins", "object"),
                                        op_global("builtins", "object"), b"N"), "copyreg._reconstructor", False),
        ("torch _rebuild_from_type_v2", call("torch._tensor", "_rebuild_from_type_v2", op_global("os", "system"),
                                             b"N", op_tuple(touch), b"}"), "torch._tensor._rebuild_from_type_v2",
         False),
        ("hook set by BUILD", detection_model(op_dict(_forward_pre_hooks=b"(K\x00" + op_global("os", "system")
                                                                      + b"d")), "os.system", False),
    ]


def test_corpus_payloads_are_live(tmp_path):
    """Unrestricted unpickling of the corpus really runs or writes (what the restricted reader must stop)."""
    for case, payload, _, live in corpus(tmp_path):
        if not live:
            continue
        pickle.loads(as_pickle(payload))  # noqa: S301 - proving the payload is live, in tmp_path
        written = [p for p in tmp_path.iterdir() if p.name.startswith("marker")]  # numpy.save adds .npy
        assert written, case
        for path in written:
            path.unlink()


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_hostile_checkpoints_are_refused_and_nothing_runs(tmp_path, fmt):
    model = tiny_model("s", num_classes=3)
    for case, payload, name, _ in corpus(tmp_path):
        path = tmp_path / f"{case}.pt"
        data = checkpoint(payload)
        if fmt == "zip":
            zip_file(path, data)
        else:
            path.write_bytes(data)  # a legacy torch file starts with a plain pickle
        with pytest.raises(ReferenceCheckpointError) as error:
            spikeyolo.load_reference_weights(model, path)
        message = str(error.value)
        assert "\n" not in message and message.endswith(f"in a reference checkpoint: {path}"), case
        expected = f"refusing global {name} " if fmt == "zip" else "refusing the legacy (pre-1.6, non-zip)"
        assert message.startswith(expected), (case, message)
        with pytest.raises(CheckpointError) as generic:  # the generic entry point refuses too, in one line
            spikeyolo.load_checkpoint(path)
        assert "\n" not in str(generic.value)
        assert (message if fmt == "zip" else "not a torch zip archive") in str(generic.value), case
        assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".pt") == ["script.py"], case  # no marker


def refusal(path: Path) -> str:
    with pytest.raises(ReferenceCheckpointError) as error:
        load_reference_checkpoint(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    return message


STORAGE = op_tuple(op_str("storage"), op_global("torch", "FloatStorage"), op_str("0"), op_str("cpu"), b"K\x04")


def tensor(size: bytes = op_tuple(b"K\x04"), stride: bytes = op_tuple(b"K\x01"), offset: bytes = b"K\x00",
           storage: bytes = STORAGE + b"Q", hooks: bytes = b"ccollections\nOrderedDict\n)R") -> bytes:
    return call("torch._utils", "_rebuild_tensor_v2", storage, offset, size, stride, b"\x89", hooks)


def module_with(parameters: bytes) -> bytes:
    return detection_model(op_dict(_parameters=parameters, _modules=b"}"))


STRUCTURE_CASES = {
    # BUILD setting a dunder attribute, or a (dict, slots) state whose setattr could replace __class__
    "dunder attribute": (detection_model(op_dict(__class__=op_global("builtins", "set"))),
                         "refusing attribute __class__ on ultralytics.nn.tasks.DetectionModel"),
    "slot state": (detection_model(b"N" + op_dict(__class__=b"N") + b"\x86"),
                   "refusing a state that is not an attribute dict for ultralytics.nn.tasks.DetectionModel"),
    # BUILD on an allowed function: its __defaults__ / __code__ must stay out of reach
    "state on a function": (op_global("torch._utils", "_rebuild_tensor_v2") + b"N" + op_dict(__defaults__=b"N")
                            + b"\x86b", "refusing to set state on global torch._utils._rebuild_tensor_v2"),
    "constructor arguments": (op_global("ultralytics.nn.tasks", "DetectionModel") + op_tuple(op_str("x"))
                              + b"\x81", "refusing constructor arguments for ultralytics.nn.tasks.DetectionModel"),
    "object numpy scalar": (call("numpy.core.multiarray", "scalar", call("numpy", "dtype", op_str("O"), b"\x89",
                                                                          b"\x88"), b"N"),
                            "refusing numpy dtype 'O'"),
    "persistent id not a storage": (op_tuple(op_str("module"), op_str("os")) + b"Q",
                                    "refusing a persistent id that is not a tensor storage"),
    "missing storage record": (module_with(b"(" + op_str("w") + tensor(storage=op_tuple(
        op_str("storage"), op_global("torch", "FloatStorage"), op_str("7"), op_str("cpu"), b"K\x04") + b"Q")
        + b"d"), "refusing a tensor whose storage record '7' is missing"),
    "tensor past its storage": (module_with(b"(" + op_str("w") + tensor(size=op_tuple(b"K\x09")) + b"d"),
                                "refusing a tensor reaching element 8 of a storage of 4"),
    "zero strides": (module_with(b"(" + op_str("w") + tensor(size=op_tuple(b"M\x00\x10", b"M\x00\x10"),
                                                              stride=op_tuple(b"K\x00", b"K\x00")) + b"d"),
                     "refusing a tensor of 16777216 elements over a storage of 4"),
    "tensor backward hooks": (module_with(b"(" + op_str("w") + tensor(hooks=b"(K\x00K\x01d") + b"d"),
                              "refusing a tensor with backward hooks or metadata"),
    "module inside itself": (op_global("ultralytics.nn.tasks", "DetectionModel") + b")\x81q\x01" + b"(" + op_str(
        "_modules") + b"(" + op_str("x") + b"h\x01" + b"d" + b"d" + b"b", "refusing module x, which contains itself"),
}


@pytest.mark.parametrize("case", list(STRUCTURE_CASES))
def test_structure_attacks_are_refused(tmp_path, case):
    payload, expected = STRUCTURE_CASES[case]
    body = b"}" + op_str("model") + payload + b"s"
    path = zip_file(tmp_path / "hostile.pt", as_pickle(body), {"data/0": struct.pack("<4f", 1, 2, 3, 4)})
    assert refusal(path).startswith(expected)
    # nothing leaked into the stand-in classes or the allowed functions
    for cls in reference_format._CLASSES.values():
        assert set(vars(cls)) <= {"__module__", "__slots__", "reference_name", "__doc__"}, cls
    assert torchfile._rebuild_tensor.__defaults__ == (False, None, None)


def test_stand_ins_have_no_behaviour_and_allowed_hooks_never_run(tmp_path):
    """A hook dict of allowed callables is kept as data: the stand-in is no nn.Module and calls nothing."""
    hooks = b"(K\x00" + op_global("torch", "device") + b"d"
    payload = b"}" + op_str("model") + detection_model(op_dict(_forward_pre_hooks=hooks, _modules=b"}")) + b"s"
    path = zip_file(tmp_path / "hooks.pt", as_pickle(payload))
    loaded = load_reference_checkpoint(path)
    assert loaded.state_dict == {} and loaded.entry == "model"
    stand_in = reference_format.unpickle_checkpoint(path)["model"]
    assert not isinstance(stand_in, torch.nn.Module) and not callable(stand_in)
    assert not hasattr(stand_in, "_forward_pre_hooks")  # the pickled dict is not reachable as attributes
    assert stand_in.state["_forward_pre_hooks"] == {0: torch.device}  # kept as data, never called


@pytest.mark.parametrize("case", ["compressed", "torchscript", "two archives", "big endian"])
def test_archive_shapes_that_are_refused(tmp_path, case):
    data = as_pickle(b"}")
    path = tmp_path / f"{case}.pt"
    if case == "compressed":
        zip_file(path, data, compression=zipfile.ZIP_DEFLATED)
        expected = "refusing the compressed or oversized record archive/"
    elif case == "torchscript":
        zip_file(path, data, {"code/__torch__.py": b"", "constants.pkl": as_pickle(b")")})
        expected = "refusing a TorchScript archive"
    elif case == "two archives":
        zip_file(path, data)
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr("other/data.pkl", data)
        expected = "refusing a zip file that is not one torch checkpoint"
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", data)
            archive.writestr("archive/byteorder", b"big")
        expected = "refusing a big-endian checkpoint"
    assert refusal(path).startswith(expected)


def test_a_real_shaped_checkpoint_with_one_extra_global_is_refused(tmp_path):
    """The allow-list is exact: one unknown class next to a valid model is enough to refuse the file."""
    model = tiny_model("s", num_classes=3)
    path = fakes.make_reference_checkpoint(tmp_path / "ok.pt", fakes.reference_state_dict(model))
    with zipfile.ZipFile(path) as archive:
        records = {info.filename: archive.read(info) for info in archive.infolist()}
    name = next(n for n in records if n.endswith("/data.pkl"))
    records[name] = records[name].replace(b"ctorch.nn.modules.pooling\nMaxPool2d\n",
                                          b"ctorch.nn.modules.pooling\nMaxPool3d\n")
    hostile = tmp_path / "hostile.pt"
    with zipfile.ZipFile(hostile, "w") as archive:
        for record, data in records.items():
            archive.writestr(record, data)
    assert load_reference_checkpoint(path).neurons == {"mem_update": 89}
    assert refusal(hostile).startswith("refusing global torch.nn.modules.pooling.MaxPool3d")


def test_truncated_reference_checkpoint_is_one_line(tmp_path):
    model = tiny_model("s", num_classes=3)
    path = fakes.make_reference_checkpoint(tmp_path / "ok.pt", fakes.reference_state_dict(model))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert refusal(truncated).startswith("refusing the legacy")  # no zip directory left: not a zip file
    buffer = io.BytesIO()
    torch.save({"x": 1}, buffer)
    assert load_reference_checkpoint_or_error(tmp_path, buffer.getvalue()).startswith("refusing a dict without")


def load_reference_checkpoint_or_error(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "plain.pt"
    path.write_bytes(data)
    return refusal(path)
