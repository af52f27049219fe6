"""Reference checkpoints through the entry points: spikeyolo-eval scores one, spikeyolo-train fine-tunes from one.

The command lines run through ``main()`` in this process with ``sys.argv`` set (the entry points' own code
path, as tests/test_reliability.py does), on the embedded trees data (1 class) at 64x64 with a width-1/16
model; the reference checkpoints are made by tests/reference_fakes.py.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

import reference_fakes as fakes
import spikeyolo
from conftest import TINY, randomize_bn, tiny_model
from spikeyolo.engine import checkpoint as ckpt
from spikeyolo.engine.checkpoint import CheckpointError, init_from_weights
from spikeyolo.checkpoints.reference import load_reference_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = ["model.width_multiple=0.0625", "data.imgsz=64", "trainer.batch_size=16", "trainer.workers=0",
         "trainer.device=cpu", "trainer.max_minutes=null", "trainer.close_mosaic=0", "logger=none",
         "optim.warmup_epochs=0", "trainer.progress=false", "trainer.epochs=1"]


def call_main(module: str, args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """spikeyolo.cli.<module>.main() with ``args`` as its command line: (exit code, stdout, stderr)."""
    main = importlib.import_module(f"spikeyolo.cli.{module}").main
    monkeypatch.setattr(sys, "argv", [f"spikeyolo-{module}", *args])
    monkeypatch.delenv("SPIKEYOLO_DEBUG", raising=False)
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code: int, stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in stderr, (code, stderr[-2000:])
    return lines[0]


@pytest.fixture(scope="module")
def reference_files(tmp_path_factory) -> dict[str, Path]:
    """Published-form reference checkpoints of the demo topology (n at width 1/16): 1 class (trees) and 3."""
    root = tmp_path_factory.mktemp("reference")
    files = {}
    for classes in (1, 3):
        weights = fakes.lively(fakes.reference_state_dict(randomize_bn(tiny_model("n", num_classes=classes))))
        names = {i: f"class{i}" for i in range(classes)}
        files[classes] = fakes.make_reference_checkpoint(root / f"ref{classes}.pt", weights, "published",
                                                         "coco", names)
    return files


def test_eval_scores_a_reference_checkpoint(tmp_path, reference_files, monkeypatch, capsys):
    code, out, err = call_main("eval", [f"checkpoint={reference_files[1]}", f"run_dir={tmp_path}"], monkeypatch,
                               capsys)
    assert code == 0, err[-2000:]
    assert f"{reference_files[1]}: reference (coco, model weights), model depth 0.33 width 0.0625, 1 classes, " \
           "T=1 D=4" in out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"map50", "map50_95"} <= set(metrics) and metrics["checkpoint"] == str(reference_files[1])
    # no data.imgsz given: eval scores at the size in the reference's train_args (64), as for its own checkpoints
    assert ckpt.trained_data_config(ckpt.read_model_checkpoint(reference_files[1])) == {"imgsz": 64}
    assert (tmp_path / "predictions.json").is_file()


def test_eval_reference_options_and_their_errors(tmp_path, reference_files, monkeypatch, capsys):
    code, _, err = call_main("eval", [f"checkpoint={reference_files[1]}", "model=spikeyolo_s",
                                      f"run_dir={tmp_path / 'a'}"], monkeypatch, capsys)
    assert "reference state_dict does not match this model" in one_line_error(code, err)
    spikeyolo_checkpoint = tmp_path / "ours.pt"
    cfg = spikeyolo.compose(list(TINY))
    ckpt.save_checkpoint({"model_config": spikeyolo.config.model_config(cfg, 1), "ema": None, "names": ["tree"],
                          "model": spikeyolo.build_model(cfg, num_classes=1).state_dict()}, spikeyolo_checkpoint)
    code, _, err = call_main("eval", [f"checkpoint={spikeyolo_checkpoint}", "neuron.time_steps=2",
                                      f"run_dir={tmp_path / 'b'}"], monkeypatch, capsys)
    assert "neuron.time_steps apply to reference checkpoints only" in one_line_error(code, err)
    code, _, err = call_main("eval", [f"checkpoint={reference_files[3]}", f"run_dir={tmp_path / 'c'}"],
                             monkeypatch, capsys)
    assert "predicts 3 classes but dataset 'trees' has 1" in one_line_error(code, err)


def test_eval_refuses_a_hostile_reference_checkpoint(tmp_path, monkeypatch, capsys):
    from test_reference_security import call, checkpoint, op_str, zip_file

    marker = tmp_path / "marker"
    path = zip_file(tmp_path / "best.pt", checkpoint(call("os", "system", op_str(f"touch {marker}"))))
    code, _, err = call_main("eval", [f"checkpoint={path}", f"run_dir={tmp_path / 'eval'}"], monkeypatch, capsys)
    assert one_line_error(code, err) == f"error: refusing global os.system in a reference checkpoint: {path}"
    assert not marker.exists()


def test_init_from_weights_copies_everything_but_other_class_layers(reference_files):
    cfg = spikeyolo.compose(list(TINY))
    config = spikeyolo.config.model_config(cfg, 1)
    model = spikeyolo.build_model(config)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = init_from_weights(model, config, reference_files[3])
    state, reference = model.state_dict(), load_reference_checkpoint(reference_files[3]).state_dict
    three = spikeyolo.build_model(config, num_classes=3).state_dict()
    reinitialised = [k for k in state if three[k].shape != state[k].shape]  # the final class convs
    assert len(reinitialised) == 6 and all(torch.equal(state[k], fresh[k]) for k in reinitialised)
    assert report == (f"weights {reference_files[3]} (reference coco): {len(state) - len(reinitialised)} tensors "
                      f"loaded, {len(reinitialised)} re-initialised for 3 -> 1 classes, 0 unexpected")
    assert reinitialised and all(".cls_branches." in k for k in reinitialised)
    assert torch.equal(state["layers.1.conv.weight"], reference["model.1.encode_conv.weight"])
    assert torch.equal(state["layers.26.box_branches.0.2.conv.bias"], reference["model.26.cv2.0.2.conv.bias"])
    wider = spikeyolo.config.model_config(spikeyolo.compose(["model.width_multiple=0.125"]), 1)
    expected = r"do not fit the configured model: 0 missing keys, 595 shape mismatches \(e\.g\. layers\.1\.conv\.weight"
    with pytest.raises(CheckpointError, match=expected + r" \(8, 3, 7, 7\) vs \(16, 3, 7, 7\)\)"):
        init_from_weights(spikeyolo.build_model(wider), wider, reference_files[1])


@pytest.mark.parametrize("classes", [1, 3])
def test_train_fine_tunes_from_a_reference_checkpoint(tmp_path, reference_files, monkeypatch, capsys, classes):
    run_dir = tmp_path / "run"
    code, out, err = call_main("train", [*TRAIN, f"model.weights={reference_files[classes]}", f"run_dir={run_dir}"],
                               monkeypatch, capsys)
    assert code == 0, err[-3000:]
    log = (run_dir / "train.log").read_text()
    reinitialised = "0 re-initialised" if classes == 1 else "re-initialised for 3 -> 1 classes"
    assert f"weights {reference_files[classes]} (reference coco): " in log and reinitialised in log, log[-2000:]
    assert (run_dir / "weights" / "best.pt").is_file() and (run_dir / "metrics.json").is_file()
    stored = ckpt.read_checkpoint(run_dir / "weights" / "last.pt")["model_config"]["model"]
    assert "weights" not in stored  # a run option, not part of the network description
    if classes == 1:  # and a spikeyolo checkpoint works as a starting point too
        code, _, err = call_main("train", [*TRAIN, f"model.weights={run_dir / 'weights' / 'best.pt'}",
                                           f"run_dir={tmp_path / 'again'}"], monkeypatch, capsys)
        assert code == 0, err[-3000:]
        assert "(spikeyolo): 755 tensors loaded, 0 re-initialised, 0 unexpected" in \
            (tmp_path / "again" / "train.log").read_text()


def test_export_and_energy_take_a_reference_checkpoint(tmp_path, reference_files, monkeypatch, capsys):
    """spikeyolo-export and spikeyolo-energy read a reference checkpoint as eval does (restricted reader)."""
    pytest.importorskip("onnxruntime")
    code, out, err = call_main("export", [f"checkpoint={reference_files[1]}", f"run_dir={tmp_path / 'export'}"],
                               monkeypatch, capsys)
    assert code == 0, err[-2000:]
    assert (tmp_path / "export" / "model_integer.onnx").is_file()
    code, out, err = call_main("energy", [f"checkpoint={reference_files[1]}", "num_images=1", "plots=false",
                                          "data.imgsz=64", f"run_dir={tmp_path / 'energy'}"], monkeypatch, capsys)
    assert code == 0, err[-2000:]
    assert json.loads((tmp_path / "energy" / "energy.json").read_text())["info"]["model"] == str(reference_files[1])
