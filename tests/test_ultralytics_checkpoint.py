"""Stock ultralytics YOLOv8 checkpoints (GitHub issue #24 item 5): ``yolo train``'s best.pt, written by
ultralytics' own trainer here (1 epoch of yolov8n at 64 px on three tree images), is read by the bounded reader
with stand-ins (nothing it names runs), gives the same decoded boxes as ultralytics' own model, and
``spikeyolo-eval checkpoint=best.pt data=<its yaml>`` scores it.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import yolo_set
from spikeyolo.checkpoints.ultralytics import (ALLOWED_CLASSES, is_ultralytics_checkpoint, ultralytics_payload,
                                               ultralytics_state_dict)
from spikeyolo.engine import checkpoint as ckpt
from spikeyolo.errors import CheckpointError
from spikeyolo.nn.yolov8 import YOLOv8
from spikeyolo.torchfile import pickle_globals
from test_reference_cli import call_main


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(best.pt, data.yaml) of a 1-epoch ``yolo train model=yolov8n.yaml`` run (ultralytics' own trainer)."""
    import spikeyolo._ultralytics.env  # noqa: F401 - offline variables, config dir and font before ultralytics
    from ultralytics import YOLO

    root = tmp_path_factory.mktemp("ultralytics")
    data = yolo_set(root / "set")
    data.write_text(data.read_text().replace("path: .", f"path: {root / 'set'}"))  # ultralytics: relative to cwd
    YOLO("yolov8n.yaml").train(data=str(data), epochs=1, imgsz=64, batch=2, device="cpu", workers=0, plots=False,
                               amp=False, verbose=False, project=str(root / "runs"), name="train", exist_ok=True)
    best = root / "runs" / "train" / "weights" / "best.pt"
    assert best.is_file()
    return best, data


def test_yolo_train_best_pt_reads_into_yolov8_with_ultralytics_outputs(trained):
    best, _ = trained
    assert is_ultralytics_checkpoint(best)
    allowed = {f"{module}.{name}" for module, names in ALLOWED_CLASSES.items() for name in names}
    classes = {name for name in pickle_globals(best) if name.startswith(("ultralytics.", "torch.nn."))}
    assert classes <= allowed  # the measured inventory covers what the trainer pickles
    payload = ckpt.read_model_checkpoint(best)
    assert payload["model_config"] == {"model": {"family": "yolov8", "scale": "n", "num_classes": 1, "in_chs": 3},
                                       "neuron": {"kind": "relu"}}
    assert payload["names"] == ["tree"] and ckpt.trained_data_config(payload) == {"imgsz": 64}
    assert all(value.dtype != torch.float16 for value in payload["model"].values())
    ours = YOLOv8(num_classes=1, scale="n", in_chs=3)
    ours.load_state_dict(payload["model"], strict=True)
    theirs = torch.load(best, weights_only=False)["model"].float().eval()  # the test's own file: trusted here
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        decoded, theirs_decoded = ours.eval()(images)[0], theirs(images)[0]
    assert decoded.shape == theirs_decoded.shape == (2, 5, 84)
    torch.testing.assert_close(decoded, theirs_decoded, rtol=1e-5, atol=1e-4)


def test_spikeyolo_eval_scores_a_yolo_train_checkpoint(trained, tmp_path, monkeypatch, capsys):
    best, data = trained
    code, _, err = call_main("eval", [f"checkpoint={best}", "data=yolo", f"data.yaml={data}",
                                        f"run_dir={tmp_path / 'eval'}"], monkeypatch, capsys)
    assert code == 0, err[-2000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["images"] == 2 and metrics["checkpoint"] == str(best)
    assert 0.0 <= metrics["map50_95"] <= metrics["map50"] <= 1.0  # one epoch on three images: ~0
    predictions = json.loads((tmp_path / "eval" / "predictions.json").read_text())
    assert predictions and {p["category_id"] for p in predictions} == {1}  # the stock model's boxes, scored


def test_key_mapping_covers_yolov8_of_every_shape():
    """ultralytics' own DetectionModel keys map one to one onto YOLOv8's (the same modules, renamed)."""
    from spikeyolo._ultralytics.peer import yolov8_detection_model

    reference = yolov8_detection_model("n", num_classes=2, in_chs=1).state_dict()
    renamed = ultralytics_state_dict(dict(reference))
    ours = YOLOv8(num_classes=2, scale="n", in_chs=1).state_dict()
    assert set(renamed) == set(ours)
    assert all(renamed[key].shape == ours[key].shape for key in ours)


def test_a_foreign_class_in_an_ultralytics_checkpoint_is_refused(trained, tmp_path):
    best, _ = trained
    with zipfile.ZipFile(best) as archive:
        records = {info.filename: archive.read(info) for info in archive.infolist()}
    name = next(n for n in records if n.endswith("/data.pkl"))
    records[name] = records[name].replace(b"ctorch.nn.modules.activation\nSiLU\n", b"cposix\nsystem\n")
    hostile = tmp_path / "best.pt"
    with zipfile.ZipFile(hostile, "w") as archive:
        for record, data in records.items():
            archive.writestr(record, data)
    with pytest.raises(CheckpointError) as error:
        ckpt.read_model_checkpoint(hostile)
    assert str(error.value) == f"refusing global posix.system in an ultralytics checkpoint: {hostile}"
    with pytest.raises(CheckpointError, match="apply to reference checkpoints only"):
        ultralytics_payload(best, time_steps=2)
    assert not os.path.exists(tmp_path / "system")


def test_fine_tuning_starts_from_a_yolo_train_checkpoint(trained):
    best, _ = trained
    payload = ckpt.read_model_checkpoint(best)
    same = YOLOv8(num_classes=1, scale="n")
    report = ckpt.init_from_weights(same, payload["model_config"], best)
    assert "(ultralytics)" in report and "0 re-initialised" in report
    assert all(torch.equal(same.state_dict()[k], v) for k, v in payload["model"].items())
    config = {"model": {"family": "yolov8", "scale": "n", "num_classes": 3, "in_chs": 3}, "neuron": {"kind": "relu"}}
    other = YOLOv8(num_classes=3, scale="n")
    report = ckpt.init_from_weights(other, config, best)
    assert "for 1 -> 3 classes" in report   # the class branches keep their fresh initialisation, the rest loads
