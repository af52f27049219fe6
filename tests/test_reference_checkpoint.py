"""Reference (BICLab/SpikeYOLO) checkpoints load exactly, in every form the reference trainer writes.

The checkpoints are made here by tests/reference_fakes.py without the reference code. Their fidelity is
checked against tests/fixtures/reference/real_checkpoint_inventory.json, measured from files the real
reference code wrote (see PROVENANCE.md there): the same pickle globals (``__builtin__.set`` of protocol 2,
numpy float64 momenta in the optimizer, the loss objects, ...), the same module classes and counts, the
neurons in the same places, the same attribute names.

Verified once against the real reference code (BICLab/SpikeYOLO @309ef5e, its ``.cuda()`` calls removed,
torch 2.14.1 on CPU, in a throwaway venv; commands in PROVENANCE.md): files written by its trainer
(``save_model`` training form and the ``strip_optimizer`` published form; tiny width, and scale s at full
width) and a Gen1 ``DetectionModel`` saved in the same layout load with spikeyolo's reader to exactly the
state_dict the reference's own ``model.state_dict()`` gives after ``.float()`` (same keys, same order,
equal tensors), and the spikeyolo model built from them gives outputs ``torch.equal`` to the reference
model's: COCO (T=1) tiny and s, and Gen1 (T=2, ``neuron.charge=lif``).
"""

from __future__ import annotations

import collections
import json
import os
import pickletools
import re
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import reference_fakes as fakes
import spikeyolo
from conftest import randomize_bn, tiny_model
from spikeyolo.engine.checkpoint import read_model_checkpoint
from spikeyolo.config.reference import reference_model_config
from spikeyolo.checkpoints.reference import (ReferenceCheckpointError, ReferenceObject, load_reference_checkpoint,
                                             load_reference_weights, unpickle_checkpoint)
from spikeyolo.nn.reference import ReferenceKeyError, convert_reference_state_dict

REPO = Path(__file__).resolve().parents[1]
INVENTORY = json.loads((fakes.FIXTURES / "real_checkpoint_inventory.json").read_text())
NAMES = {0: "tree", 1: "bush", 2: "rock"}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    """Reference-key weights of a tiny s-topology model, 3 classes, non-trivial BN statistics."""
    return fakes.lively(fakes.reference_state_dict(randomize_bn(tiny_model("s", num_classes=3))))


def pickle_globals(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))
    return sorted({arg.replace(" ", ".") for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"})


def inventory(path: Path) -> dict:
    """The facts real_checkpoint_inventory.json records, read from ``path`` with the restricted unpickler."""
    checkpoint = unpickle_checkpoint(path)
    entry = checkpoint["ema"] if checkpoint.get("ema") is not None else checkpoint["model"]
    rows, attributes = [], collections.defaultdict(set)

    def walk(module: ReferenceObject, prefix: str) -> None:
        name = module.reference_name.rsplit(".", 1)[-1]
        rows.append((prefix, name))
        attributes[name].update(k for k in module.state if k not in ("_parameters", "_buffers", "_modules")
                                and not (k.startswith("_") and ("hook" in k or k == "_non_persistent_buffers_set")))
        for child_name, child in (module.state.get("_modules") or {}).items():
            if child is not None:
                walk(child, f"{prefix}.{child_name}" if prefix else child_name)

    walk(entry, "")
    by_path = dict(rows)
    return {
        "globals": pickle_globals(path),
        "top_level": {k: v.reference_name if isinstance(v, ReferenceObject) else type(v).__name__
                      for k, v in checkpoint.items()},
        "model_attributes": sorted(k for k in entry.state if k not in ("_parameters", "_buffers", "_modules")),
        "module_classes": dict(sorted(collections.Counter(name for _, name in rows).items())),
        "neuron_positions": dict(sorted(collections.Counter(
            f"{by_path[p.rsplit('.', 1)[0]]}.{p.rsplit('.', 1)[1]}" for p, name in rows
            if name in ("mem_update", "MultiStepLIFNode")).items())),
        "attributes_by_class": {k: sorted(v) for k, v in attributes.items()},
    }


@pytest.mark.parametrize(("form", "kind", "label"), [("train", "coco", "coco_train_form"),
                                                     ("published", "coco", "coco_published"),
                                                     ("train", "gen1", "gen1_save_model_form")])
def test_fakes_match_what_the_real_reference_writes(tmp_path, weights, form, kind, label):
    path = fakes.make_reference_checkpoint(tmp_path / "ref.pt", weights, form, kind, NAMES)
    measured, real = inventory(path), INVENTORY[label]
    for fact in ("globals", "top_level", "model_attributes", "module_classes", "neuron_positions"):
        assert measured[fact] == real[fact], fact
    assert measured["attributes_by_class"] == real["attributes_by_class"]
    assert "__builtin__.set" in measured["globals"]  # protocol 2, as torch.save writes it
    assert sum(measured["neuron_positions"].values()) == 89


def test_fake_modules_leave_sys_modules_as_they_were():
    before = {name: sys.modules.get(name) for name in fakes._FAKE_MODULES}
    with fakes.reference_modules():
        assert sys.modules["ultralytics.nn.tasks"].DetectionModel.__module__ == "ultralytics.nn.tasks"
    assert {name: sys.modules.get(name) for name in fakes._FAKE_MODULES} == before


@pytest.mark.parametrize("form", ["train", "published", "old_torch"])
def test_every_form_loads_exactly(tmp_path, weights, form):
    training = {k: v + 1 if v.is_floating_point() else v for k, v in weights.items()}  # the non-EMA model
    path = fakes.make_reference_checkpoint(tmp_path / "ref.pt", weights, form, "coco", NAMES, training)
    if form == "old_torch":  # the pickled modules really lack what newer torch added
        model = unpickle_checkpoint(path)["model"]
        assert "_state_dict_pre_hooks" not in model.state and "_non_persistent_buffers_set" not in model.state
    reference = load_reference_checkpoint(path)
    assert reference.entry == ("ema" if form == "train" else "model")  # the EMA weights, as ultralytics loads
    assert list(reference.state_dict) == fakes.reference_keys()
    expected = fakes.fp16(weights)
    for key, value in reference.state_dict.items():  # fp16 -> float32 is exact; int64 counters unchanged
        assert value.dtype == expected[key].dtype and torch.equal(value, expected[key]), key
    assert reference.names == ["tree", "bush", "rock"]
    assert reference.neurons == {"mem_update": 89} and reference.kind == "coco"
    assert reference.train_args["imgsz"] == 64


def test_legacy_format_is_refused_before_unpickling(tmp_path, weights):
    path = fakes.make_reference_checkpoint(tmp_path / "legacy.pt", weights, "legacy")
    with pytest.raises(ReferenceCheckpointError) as error:
        load_reference_checkpoint(path)
    assert str(error.value) == (f"refusing the legacy (pre-1.6, non-zip) torch format, which only unrestricted "
                                f"unpicklers read; re-save it with torch >= 1.6 in a reference checkpoint: {path}")


def test_loaded_model_equals_the_model_loaded_from_the_state_dict(tmp_path, weights):
    path = fakes.make_reference_checkpoint(tmp_path / "ref.pt", weights, "train", "coco", NAMES)
    via_file = load_reference_weights(tiny_model("s", num_classes=3), path).eval()
    direct = tiny_model("s", num_classes=3).eval()
    direct.load_state_dict(convert_reference_state_dict(fakes.fp16(weights), direct))
    inferred = spikeyolo.load_checkpoint(path)  # scale, classes and names from the file alone
    assert inferred.names == ["tree", "bush", "rock"]
    image = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2
    with torch.no_grad():
        expected, maps = direct(image)
        for model in (via_file, inferred):
            boxes, model_maps = model(image)
            assert torch.equal(boxes, expected)
            assert all(torch.equal(a, b) for a, b in zip(model_maps, maps, strict=True))
    assert expected[:, 4:].std() > 0.05  # the classes respond: the comparison is not of constants


@pytest.mark.parametrize(("scale", "width", "name"), [("n", 0.375, "spikeyolo_n"), ("s", 0.5, "spikeyolo_s")])
def test_scale_is_inferred_from_the_shapes(scale, width, name):
    lines = (fakes.FIXTURES / f"spikeyolo_{scale}_state_dict.tsv").read_text().splitlines()[1:]
    state = {}
    for line in lines:
        key, shape, _ = line.split("\t")
        state[key] = torch.empty(() if shape == "scalar" else tuple(int(d) for d in shape.split("x")))
    config = reference_model_config(state)
    model = config["model"]
    assert (model["width_multiple"], model["depth_multiple"], model["num_classes"], model["in_chs"]) == \
        (width, 0.33, 80, 3)
    assert model["block_overrides"] == {}  # layer 25 at mlp ratio 1, as the n/s yaml
    assert {k: config["neuron"][k] for k in ("time_steps", "max_level", "decay", "charge")} == \
        {"time_steps": 1, "max_level": 4, "decay": 0.25, "charge": "ilif"}
    named = reference_model_config(state, model=name, time_steps=2, max_level=8)
    assert named["model"]["width_multiple"] == width and named["neuron"]["time_steps"] == 2
    assert named["neuron"]["max_level"] == 8


def test_wrong_scale_or_unknown_depth_is_one_clear_error(tmp_path, weights):
    path = fakes.make_reference_checkpoint(tmp_path / "ref.pt", weights)
    with pytest.raises(ReferenceKeyError, match=r"shape mismatches: model\.1\.encode_conv\.weight"):
        read_model_checkpoint(path, model="spikeyolo_s")  # full width given, the weights are width 1/16
    state = {k: v for k, v in weights.items() if not k.startswith("model.6.2.")}
    with pytest.raises(ReferenceKeyError, match=r"repeat \[1, 2, 2, 1\]"):
        reference_model_config(state)


def test_readme_python_snippets_run_as_written(tmp_path, weights, monkeypatch):
    """README.md's Python blocks, executed verbatim (in order, one namespace) against files at the paths they name."""
    import cv2
    import yaml

    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert any('spikeyolo.load_reference_weights(model, "23M_best.pt")' in block for block in blocks)
    assert any("spikeyolo.Detector.load(" in block for block in blocks)
    monkeypatch.chdir(tmp_path)
    fakes.make_reference_checkpoint(Path("23M_best.pt"), weights, "published", "coco", NAMES)
    cfg = spikeyolo.compose(["model.width_multiple=0.0625"])
    demo = spikeyolo.build_model(cfg, num_classes=1)
    spikeyolo.engine.checkpoint.save_checkpoint(
        {"model_config": spikeyolo.config.model_config(cfg, 1), "model": demo.state_dict(), "ema": None,
         "names": ["tree"], "train_config": yaml.safe_dump({"data": {"source": "embedded", "imgsz": 64}})},
        Path("runs/demo_spikeyolo_n/RUN/weights/best.pt"))
    tile = sorted((spikeyolo.data.embedded_root() / "images" / "val").glob("*.jpg"))[0]
    cv2.imwrite("tree.jpg", cv2.imread(str(tile)))
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own lines
    results, spiking = namespace["results"], namespace["spiking"]
    assert len(results) == 3 and all(r.shape == (400, 400) and r.class_names == ["tree"] for r in results)
    assert spiking.shape == (400, 400) and namespace["detector"].path == "spike_driven"
    model = namespace["model"]
    assert model.names == ["tree", "bush", "rock"] and model.num_classes == 3
    expected = fakes.fp16(weights)
    assert torch.equal(model.state_dict()["layers.1.conv.weight"], expected["model.1.encode_conv.weight"])
    assert os.path.isfile("23M_best.pt")
