"""The seven commands answer alike (GitHub issues #20 and #21): --help lists the config groups a command uses,
--cfg job prints its config, and an unknown key, a value of the wrong type or an unknown config-group option is one
line on stderr with exit code 2, before anything is written. Also: no hidden experiment, runs named for what they
are, errors that name a key the command has, summary for every model family, predict refuses an image model.

The command lines run through ``main()`` in this process with ``sys.argv`` set (the entry points' own code path, as
tests/test_reliability.py does), in an empty working directory that must stay empty when a command is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import spikeyolo
from spikeyolo.data.events import write_dat
from spikeyolo.engine import checkpoint as ckpt
from test_reference_cli import call_main as run   # main() of spikeyolo.cli.<command>: (exit code, stdout, stderr)

pytestmark = pytest.mark.usefixtures("one_thread")

COMMANDS = ("train", "eval", "energy", "convert", "summary", "export", "predict")

# the config groups each command uses (its --help lists exactly these)
GROUPS = {"train": {"model", "neuron", "data", "optim", "trainer", "logger", "experiment"},
          "eval": {"data", "energy", "model"}, "energy": {"model", "neuron", "data", "energy"},
          "convert": {"data"}, "summary": {"model", "neuron"}, "export": set(), "predict": set()}
ALL_GROUPS = {path.name for path in spikeyolo.config.CONFIG_DIR.iterdir() if path.is_dir()}

# per command: an unknown key, a value of the wrong type, an unknown config-group option (or a group it lacks)
BAD = {
    "train": [("trainer.epochz=3", "unknown config key 'trainer.epochz'", "valid keys of trainer: amp,"),
              ("trainer.epochs=abc", "trainer.epochs must be an integer, got 'abc'"),
              ("model=spikeyolo_x", "unknown model option 'spikeyolo_x'; valid options: spikeyolo_base,")],
    "eval": [("nms.cof=0.1", "unknown config key 'nms.cof'", "valid keys of nms: conf, iou, max_det"),
             ("batch_size=abc", "batch_size must be an integer, got 'abc'"),
             ("data=nope", "unknown data option 'nope'; valid options: coco, coco_json,")],
    "energy": [("num_imagez=3", "unknown config key 'num_imagez'", "num_images"),
               ("num_images=many", "num_images must be an integer, got 'many'"),
               ("energy=nope", "unknown energy option 'nope'; valid options: float32_45nm, int_spiking_yolo")],
    "convert": [("calibration.imagez=3", "unknown config key 'calibration.imagez'", "batch_size, images, split"),
                ("timesteps=[1,2]", "timesteps must be an integer, got '[1,2]'"),
                ("data=nope", "unknown data option 'nope'")],
    "summary": [("neuron.max_levle=4", "unknown config key 'neuron.max_levle'", "max_level"),
                ("data.imgsz=abc", "data.imgsz must be an integer or null, got 'abc'"),
                ("model=spikeyolo_x", "unknown model option 'spikeyolo_x'")],
    "export": [("opsett=17", "unknown config key 'opsett'", "opset"),
               ("check=maybe", "check must be a boolean (true/false), got 'maybe'"),
               ("model=spikeyolo_n", "'model' in 'model=spikeyolo_n' is not a config group of this command",
                "(its config groups: none)")],
    "predict": [("window=5", "unknown config key 'window'", "window_us"),
                ("window_us=abc", "window_us must be an integer or null, got 'abc'"),
                ("neuron=ilif", "'neuron' in 'neuron=ilif' is not a config group of this command")],
}


def one_line_error(code: int, stderr: str, *expected: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, stderr[-2000:])
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch) -> Path:
    """An empty working directory (the default run folders are relative: runs/...)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_only_the_groups_the_command_uses(command, empty_cwd, monkeypatch, capsys):
    code, out, err = run(command, ["--help"], monkeypatch, capsys)
    assert code == 0 and not err, err[-2000:]
    assert out.startswith(f"spikeyolo-{command}:") and f"Usage: spikeyolo-{command} " in out
    listed = {line.split(":")[0].strip() for line in out.split("Config groups", 1)[1].splitlines()[1:]
              if line.startswith("  ") and line.split(":")[0].strip() in ALL_GROUPS}
    assert listed == GROUPS[command], out
    if not GROUPS[command]:
        assert "Config groups: none" in out
    assert not any(empty_cwd.iterdir())


@pytest.mark.parametrize("command", COMMANDS)
def test_cfg_job_prints_the_config(command, empty_cwd, monkeypatch, capsys):
    code, out, err = run(command, ["--cfg", "job"], monkeypatch, capsys)
    assert code == 0, err[-2000:]
    printed = yaml.safe_load(out)
    assert set(GROUPS[command]) - {"experiment"} <= set(printed), printed.keys()
    assert not any(empty_cwd.iterdir())


@pytest.mark.parametrize("command,bad", [(command, bad) for command in COMMANDS for bad in BAD[command]],
                         ids=[f"{command}-{bad[0]}" for command in COMMANDS for bad in BAD[command]])
def test_bad_input_is_one_line_and_writes_nothing(command, bad, empty_cwd, monkeypatch, capsys):
    override, *expected = bad
    code, _, err = run(command, [override], monkeypatch, capsys)
    one_line_error(code, err, *expected)
    assert not any(empty_cwd.iterdir()), list(empty_cwd.rglob("*"))


# --------------------------------------------------------------------------- issue 21: no hidden demo, run names


def test_real_data_does_not_run_the_demo_schedule():
    cfg = spikeyolo.compose(["data=yolo", "data.yaml=X"])
    default = spikeyolo.config.schema.TrainerConfig()
    assert (cfg.trainer.epochs, cfg.trainer.max_minutes, cfg.trainer.device) == (default.epochs, None, "auto") \
        == (300, None, "auto")
    assert (cfg.optim.name, cfg.optim.lr0, cfg.optim.nominal_batch_size) == ("sgd", 0.01, 64)
    assert cfg.name == "spikeyolo_n_yolo" and cfg.run_dir.startswith("runs/spikeyolo_n_yolo/")
    demo = spikeyolo.compose(["experiment=demo"])
    # issue 20: a fixed schedule (epochs), the time cap only a guard far above it, the yardstick said at the end
    assert (demo.trainer.epochs, demo.data.imgsz, demo.optim.name) == (60, 256, "adamw")
    assert demo.trainer.max_minutes >= 30 and "model=yolov8n" in demo.trainer.yardstick
    assert demo.name == "demo_spikeyolo_n"
    # Tiny YOLO lands under its own name, with or without the demo's schedule
    assert spikeyolo.compose(["model=tiny_yolo"]).name == "tiny_yolo_trees"
    assert spikeyolo.compose(["experiment=demo", "model=tiny_yolo"]).name == "demo_tiny_yolo"
    assert spikeyolo.compose(["experiment=gen1_synthetic"]).name == "gen1_synthetic"


def tiny_checkpoint(path: Path, train_config: str | None = None) -> Path:
    cfg = spikeyolo.compose(["model.width_multiple=0.0625"])
    model = spikeyolo.build_model(cfg, num_classes=1)
    return ckpt.save_checkpoint({"model_config": spikeyolo.config.model_config(cfg, 1), "model": model.state_dict(),
                                 "ema": None, "names": ["tree"], "train_config": train_config}, path)


def test_errors_name_a_key_of_the_command(tmp_path, empty_cwd, monkeypatch, capsys):
    checkpoint = tiny_checkpoint(tmp_path / "best.pt", "data:\n  imgsz: 64\n")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run_dir = tmp_path / "eval"
    code, _, err = run("eval", [f"checkpoint={checkpoint}", "device=cuda", f"run_dir={run_dir}"], monkeypatch, capsys)
    line = one_line_error(code, err, "device=cuda asks for CUDA but no GPU is available (use device=cpu")
    assert "trainer.device" not in line and not run_dir.exists()

    code, _, err = run("eval", [f"checkpoint={tmp_path / 'nope.pt'}", f"run_dir={run_dir}"], monkeypatch, capsys)
    one_line_error(code, err, f"checkpoint not found: {tmp_path / 'nope.pt'}")
    assert not run_dir.exists()   # a missing checkpoint creates no run folder

    train = ["trainer.device=cpu", "trainer.workers=0", f"run_dir={run_dir}"]
    code, _, err = run("train", ["data=yolo", *train], monkeypatch, capsys)
    line = one_line_error(code, err, "data.yaml", "dataset yaml")
    assert "???" not in line and not run_dir.exists()
    code, _, err = run("train", ["data=yolo", f"data.yaml={tmp_path}", *train], monkeypatch, capsys)
    one_line_error(code, err, f"data.yaml={tmp_path}: a folder, expected an Ultralytics dataset yaml file")
    assert not run_dir.exists() and not any(empty_cwd.iterdir())


# --------------------------------------------------------------------------- issue 20: summary, predict


def test_summary_of_every_model_family(empty_cwd, monkeypatch, capsys):
    code, out, err = run("summary", ["model=tiny_yolo", "model.width_multiple=0.0625", "data.imgsz=64"],
                         monkeypatch, capsys)
    tiny = spikeyolo.build_model(spikeyolo.compose(["model=tiny_yolo", "model.width_multiple=0.0625"]), 80)
    assert code == 0, err[-2000:]
    assert out.strip() == f"TinyYOLO: total parameters {tiny.num_parameters():,} (trainable " \
                          f"{tiny.num_parameters(True):,}); ANN (no T, D), strides [32], 80 classes"
    code, out, err = run("summary", ["model.width_multiple=0.0625", "data.imgsz=64", "model.num_classes=3"],
                         monkeypatch, capsys)
    assert code == 0, err[-2000:]
    rows = out.strip().splitlines()
    assert rows[0].endswith("output [C x H x W] at 64") and len(rows) == 1 + 27 + 1   # header, layers 0..26, total
    assert rows[-1].startswith("SpikeYOLO: total parameters") and rows[-1].endswith("T=1 D=4, strides [8, 16, 32], "
                                                                                    "3 classes")
    assert not any(empty_cwd.iterdir())


def test_predict_refuses_a_model_trained_on_images(tmp_path, empty_cwd, monkeypatch, capsys):
    events = np.zeros(3, dtype=[("t", "<u4"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")])
    events["t"] = [10, 20, 30]
    recording = write_dat(tmp_path / "rec_td.dat", events, width=304, height=240)
    checkpoint = tiny_checkpoint(tmp_path / "rgb.pt", "data:\n  source: embedded\n  name: trees\n  imgsz: 64\n")
    code, _, err = run("predict", [f"events={recording}", f"checkpoint={checkpoint}", f"out={tmp_path / 'out'}"],
                       monkeypatch, capsys)
    one_line_error(code, err, f"checkpoint={checkpoint} was trained on images (data.source=embedded, trees)",
                   f"events={recording} is an event recording")
    assert not (tmp_path / "out").exists()
