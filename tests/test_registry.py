"""Files name what they build (GitHub issue #24): the registry of families, neurons and layer kinds, the checks
before a model is built, and the files older releases wrote (tests/fixtures/previous_release, made by 1594679)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import spikeyolo
from spikeyolo.config import model_config
from spikeyolo.config.names import FAMILIES, LAYER_KINDS, LOGGERS, NEURONS, translate_model_config
from spikeyolo.engine import checkpoint as ckpt
from spikeyolo.engine.loggers import LOGGERS as LOGGER_CLASSES
from spikeyolo.errors import CheckpointError, UserError
from spikeyolo.models import FAMILIES as FAMILY_CLASSES, MAX_PARAMETERS, NEURONS as NEURON_CLASSES, build_model
from spikeyolo.nn.detector import LAYER_KINDS as LAYER_CLASSES
from tests.conftest import TINY

PREVIOUS = Path(__file__).parent / "fixtures" / "previous_release"
EXPECTED = json.loads((PREVIOUS / "expected.json").read_text())


def strings(value):
    """Every string in a nested description (keys and values)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value


def test_one_table_of_names_per_kind():
    assert set(FAMILY_CLASSES) == set(FAMILIES)
    assert set(NEURON_CLASSES) == set(NEURONS)
    assert set(LAYER_CLASSES) == set(LAYER_KINDS)
    assert set(LOGGER_CLASSES) == set(LOGGERS)


@pytest.mark.parametrize("overrides", [["model=spikeyolo_n"], ["model=tiny_yolo"], ["model=yolov8n"],
                                       ["model=spikeyolo_s", "neuron=relu", "model.head=anchor_based"]])
def test_descriptions_hold_names_and_plain_values(overrides):
    tiny = {"model=spikeyolo_n": TINY, "model=spikeyolo_s": TINY, "model=tiny_yolo": ["model.width_multiple=0.0625"]}
    description = model_config(spikeyolo.compose([*overrides, *tiny.get(overrides[0], [])]), 3)
    texts = list(strings(description))
    assert not [t for t in texts if t.startswith("_") or "spikeyolo." in t or "torch." in t]
    assert description["model"]["family"] in FAMILIES
    assert translate_model_config(description) == description   # nothing to translate in a current file


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_previous_release_checkpoints_load_with_the_same_outputs(name):
    stored = ckpt.read_checkpoint(PREVIOUS / name)["model_config"]
    assert any("spikeyolo." in t for t in strings(stored))      # the fixture really holds Python paths
    model = spikeyolo.load_checkpoint(PREVIOUS / name).double()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    with torch.no_grad():
        decoded = model(images)[0]
    expected = EXPECTED[name]
    assert list(decoded.shape) == expected["shape"]
    assert float(decoded.sum()) == pytest.approx(expected["sum"], rel=1e-12)
    assert float(decoded.abs().sum()) == pytest.approx(expected["abs_sum"], rel=1e-12)


def test_previous_release_run_folder_resumes(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(PREVIOUS / "run", run)
    old = (run / "config.yaml").read_text()
    assert "_target_: spikeyolo.nn.detector.SpikeYOLO" in old
    result = subprocess.run([sys.executable, "-m", "spikeyolo.cli.train", f"run_dir={run}", "trainer.resume=true",
                             "trainer.epochs=2", "trainer.progress=false"], capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if "epoch" in r] == [1, 2]     # epoch 1 from the old run, 2 resumed
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["family"] == "spikeyolo" and saved["neuron"]["kind"] == "ilif"
    assert saved["logger"]["kind"] == "csv" and "_target_" not in (run / "config.yaml").read_text()
    assert (run / "config.1.yaml").read_text() == old                  # the old one kept as history
    stored = ckpt.read_checkpoint(run / "weights" / "last.pt")["model_config"]
    assert not [t for t in strings(stored) if "spikeyolo." in t or t.startswith("_")]


def _tiny_description():
    return model_config(spikeyolo.compose(["model=spikeyolo_n", *TINY]), 3)


def _tampered(change):
    description = json.loads(json.dumps(_tiny_description()))
    change(description)
    return description


@pytest.mark.parametrize("change, message", [
    (lambda d: d["model"].update(family="os.system"), "model_config.model.family: unknown model family 'os.system'"),
    (lambda d: d["model"].update(_target_="os.system"), "model_config.model._target_: unknown family 'os.system'"),
    (lambda d: d["model"].update(_target_="spikeyolo.nn.detector.SpikeYOLO", _args_=[1]),
     "model_config.model._args_: a Hydra key is not allowed"),
    (lambda d: d["neuron"].update(kind="builtins.eval"), "model_config.neuron.kind: unknown 'builtins.eval'"),
    (lambda d: d["model"]["layers"][3].__setitem__(2, "__hello__.TestFrozenUtf8_1"),
     "model_config.model.layers[3]: unknown layer kind '__hello__.TestFrozenUtf8_1'"),
    (lambda d: d["model"]["layers"][3].__setitem__(2, "os"), "model_config.model.layers[3]: unknown layer kind 'os'"),
    (lambda d: d["model"]["block_overrides"].update({"25": {"mlp_ratio": {"_target_": "os.system"}}}),
     "model_config.model.block_overrides.25.mlp_ratio must be a number, got <dict>"),
    (lambda d: d["model"].update(num_classes={"_target_": "os.system", "_args_": ["true"]}),
     "model_config.model.num_classes must be an integer, got <dict>"),
    (lambda d: d["model"].update(num_classes=10**7), "model_config.model.num_classes=10000000 is out of range"),
    (lambda d: d["model"].update(num_classes="abc"), "model_config.model.num_classes must be an integer, got 'abc'"),
    (lambda d: d["model"].update(width_multiple=-1), "model_config.model.width_multiple=-1 is out of range"),
    (lambda d: d["model"].update(layers="x" * 10**6), "model_config.model.layers must be a list, got 'xxxx"),
    (lambda d: d["model"].update(surprise=1), "model_config.model: unknown key 'surprise' for family spikeyolo"),
    (lambda d: d["neuron"].update(time_steps=10**9), "model_config.neuron.time_steps=1000000000 is out of range"),
    (lambda d: d["neuron"].update(time_steps=float("nan")), "model_config.neuron.time_steps must be an integer"),
    (lambda d: d.pop("neuron"), "model_config.neuron must be a mapping, got None"),
    (lambda d: d["model"]["layers"][5].__setitem__(0, 7), "model_config.model.layers[5].from must name earlier layers"),
    (lambda d: d["model"]["layers"][1][3].update(kernel_size=10**6), "kernel_size=1000000 is out of range"),
])
def test_a_description_may_name_only_what_spikeyolo_builds(change, message, tmp_path):
    with pytest.raises(CheckpointError) as refused:
        build_model(_tampered(change), source="ckpt.pt")
    text = str(refused.value)
    assert text.startswith("ckpt.pt: ") and message in text, text
    assert "\n" not in text and len(text) < 400


def test_a_file_cannot_describe_an_oversized_model():
    # within every range, but out of proportion: ~8 G parameters, refused from the meta-device count
    description = _tampered(lambda d: d["model"].update(width_multiple=8.0, max_channels=8192, num_classes=10_000))
    with pytest.raises(CheckpointError, match=f"parameters \\(at most {MAX_PARAMETERS:,}"):
        build_model(description, source="big.pt")
    with pytest.raises(CheckpointError, match="the described model cannot be built"):
        build_model(_tampered(lambda d: d["model"]["layers"][1][3].update(kernel_size=8000)), source="k.pt")


def test_the_command_line_gets_the_same_checks_as_user_errors():
    with pytest.raises(UserError, match="^model.num_classes=20000 is out of range"):
        build_model(spikeyolo.compose(["model=spikeyolo_n", *TINY]), num_classes=20_000)


def test_converted_checkpoints_store_names():
    from spikeyolo.conversion import spiking_model_config

    ann = model_config(spikeyolo.compose(["model=tiny_yolo", "model.width_multiple=0.0625"]), 2)
    config = spiking_model_config(ann, {"kind": "ibt", "v_threshold": 1.0, "alpha": 0.1}, 8, "vmem", 4, "channel",
                                  None)
    assert not [t for t in strings(config) if "." in t and not t.replace(".", "").isdigit()]
    model = build_model(config, source="snn.pt")
    assert type(model).__name__ == "SpikingYOLO" and model.time_steps == 8
