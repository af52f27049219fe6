"""The stock YOLOv8 family (model=yolov8n, GitHub issue #20: the demo's yardstick, "YOLOv8n trained the same way").

spikeyolo.nn.yolov8.YOLOv8 runs ultralytics' own YOLOv8 layers through spikeyolo's forward contract: its decoded
output and its loss must equal what ultralytics computes with the same weights, or the yardstick would not be
"YOLOv8n". It trains and evaluates through the same commands as SpikeYOLO, and the spiking-only paths refuse it
in one line before any run folder exists.
"""

from __future__ import annotations

import pytest
import torch

import spikeyolo
from spikeyolo._ultralytics.peer import yolov8_detection_model
from spikeyolo.engine.checkpoint import load_checkpoint
from spikeyolo.nn.protocol import DetectorModel
from spikeyolo.nn.yolov8 import YOLOv8
from test_reference_cli import call_main, one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")


def _ultralytics_twin(model: YOLOv8) -> torch.nn.Module:
    """ultralytics' DetectionModel of the same scale holding ``model``'s weights (key by key, all of them)."""
    twin = yolov8_detection_model(model.scale, num_classes=model.num_classes)
    head_index = len(model.layers)
    renamed = {}
    for key, value in model.state_dict().items():
        key = key.replace("layers.", "model.", 1) if key.startswith("layers.") else key
        key = key.replace("head.box_branches.", f"model.{head_index}.cv2.").replace(
            "head.cls_branches.", f"model.{head_index}.cv3.").replace("head.dfl.", f"model.{head_index}.dfl.")
        renamed[key] = value
    assert set(renamed) == set(twin.state_dict())
    twin.load_state_dict(renamed)
    return twin


def test_yolov8n_is_ultralytics_yolov8n():
    torch.manual_seed(0)
    model = spikeyolo.build_model(spikeyolo.compose(["model=yolov8n"]), num_classes=80)
    assert model.num_parameters() == 3_157_200           # ultralytics' published YOLOv8n (80 classes)
    assert isinstance(model, DetectorModel)
    assert (model.time_steps, model.max_level, model.strides, model.in_chs) == (None, None, [8, 16, 32], 3)
    model = spikeyolo.build_model(spikeyolo.compose(["model=yolov8n"]), num_classes=2)
    for module in model.modules():          # random BN statistics, so eval mode really uses them
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    twin = _ultralytics_twin(model).eval()
    images = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        decoded, maps = model.eval()(images)
        expected, raw = twin(images)
    flat = torch.cat([m.flatten(2) for m in maps], 2)
    assert torch.equal(flat, torch.cat((raw["boxes"], raw["scores"]), 1))    # the layers: bit for bit
    # the decoding: the same formula, the float32 operations in another order (a few ulp)
    torch.testing.assert_close(decoded, expected, rtol=1e-6, atol=1e-4)

    # the loss spikeyolo trains it with is ultralytics' own loss of that model on the same batch
    batch = {"batch_idx": torch.tensor([0.0, 0.0, 1.0]), "cls": torch.tensor([[0.0], [1.0], [1.0]]),
             "bboxes": torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.7, 0.6, 0.3, 0.2], [0.5, 0.5, 0.4, 0.5]])}
    model.train()
    twin.train()
    ours = model.build_loss()(model(images), batch)
    theirs, _ = twin.loss(batch, twin(images))
    torch.testing.assert_close(ours["total"], theirs.sum(), rtol=1e-5, atol=1e-5)


def test_yolov8n_trains_evaluates_and_refuses_the_spiking_paths(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = call_main("train", ["experiment=demo", "model=yolov8n", "trainer.epochs=1", "data.imgsz=64",
                                         "logger=none", "trainer.progress=false"], monkeypatch, capsys)
    assert code == 0, err[-2000:]
    runs = list((tmp_path / "runs" / "demo_yolov8n").iterdir())     # named for what it is
    assert len(runs) == 1 and "final evaluation (best.pt)" in out
    best = runs[0] / "weights" / "best.pt"
    model = load_checkpoint(best)
    assert isinstance(model, YOLOv8) and model.scale == "n" and model.num_classes == 1 and model.names == ["tree"]

    code, out, err = call_main("eval", [f"checkpoint={best}", "run_dir=eval_out"], monkeypatch, capsys)
    assert code == 0 and "(integer path)" in out and (tmp_path / "eval_out" / "metrics.json").is_file()
    for command, args in (("eval", ["deploy=spike_driven"]), ("energy", ["num_images=1"]),
                          ("export", []), ("export", ["path=spike_driven", "fixed_point=false"])):
        code, _, err = call_main(command, [f"checkpoint={best}", "run_dir=refused", *args], monkeypatch, capsys)
        line = one_line_error(code, err)
        assert "YOLOv8 has no integer spike levels (D)" in line and "runs on the integer path" in line, line
        assert not (tmp_path / "refused").exists()
    code, out, err = call_main("export", [f"checkpoint={best}", "fixed_point=false", "run_dir=onnx"], monkeypatch,
                               capsys)
    assert code == 0 and (tmp_path / "onnx" / "model_integer.onnx").is_file(), err[-2000:]

    code, out, _ = call_main("summary", ["model=yolov8n", "data.imgsz=64"], monkeypatch, capsys)
    assert code == 0 and "C2f x1" in out and "YOLOv8: total parameters 3,157,200" in out
    code, _, err = call_main("summary", ["model=yolov8n", "model.scale=q"], monkeypatch, capsys)
    assert "model.scale='q' is not one of n, s, m, l, x" in one_line_error(code, err)
