"""Trainer: optimisation, resume equivalence, config plumbing, DDP (gloo) smoke run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import spikeyolo
from spikeyolo.engine import checkpoint as ckpt
from spikeyolo.engine.optim import build_optimizer, lr_factor
from spikeyolo.engine.trainer import Trainer, TrainingError
from test_reference_cli import call_main

REPO = Path(__file__).resolve().parents[1]

# a tiny but real training configuration on the embedded tree data
TINY_RUN = ["model.width_multiple=0.0625", "data.imgsz=64", "trainer.batch_size=8", "trainer.workers=0",
            "trainer.device=cpu", "trainer.max_minutes=null", "trainer.close_mosaic=0", "logger=none",
            "optim.warmup_epochs=1", "optim.warmup_min_iters=2", "trainer.progress=false"]


def compose_run(tmp_path: Path, *extra: str):
    return spikeyolo.compose([*TINY_RUN, f"run_dir={tmp_path}", *extra])


def test_optimizer_groups_and_schedule():
    model = spikeyolo.build_model(spikeyolo.compose(["model.width_multiple=0.0625"]), num_classes=1)
    optimizer = build_optimizer(model, lr0=0.01, momentum=0.937, weight_decay=5e-4)
    biases, weights, norms = (group["params"] for group in optimizer.param_groups)
    assert all(p.ndim == 1 for p in biases) and all(p.ndim == 4 for p in weights) and all(p.ndim == 1 for p in norms)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.0, 5e-4, 0.0]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == trainable
    adamw = build_optimizer(model, lr0=0.002, momentum=0.9, weight_decay=5e-4, name="adamw")
    assert isinstance(adamw, torch.optim.AdamW) and [g["weight_decay"] for g in adamw.param_groups] == [0.0, 5e-4, 0.0]
    assert adamw.param_groups[0]["betas"] == (0.9, 0.999)
    with pytest.raises(ValueError, match="optim.name"):
        build_optimizer(model, lr0=0.01, momentum=0.9, weight_decay=0.0, name="lion")
    # linear schedule of the reference: lf(e) = (1 - e/E)(1 - lrf) + lrf
    assert lr_factor(0, 300, 0.004) == 1.0
    assert lr_factor(150, 300, 0.004) == pytest.approx(0.502)
    assert lr_factor(300, 300, 0.004) == pytest.approx(0.004)


def test_one_optimizer_step_reduces_loss_on_a_fixed_batch():
    from spikeyolo.data import build_dataloader, load_dataset_spec

    torch.manual_seed(0)
    spec = load_dataset_spec("embedded")
    batch = next(iter(build_dataloader(spec, "train", imgsz=64, batch_size=4, workers=0, augment=False,
                                       shuffle=False)))
    model = spikeyolo.build_model(spikeyolo.compose(["model.width_multiple=0.0625"]), num_classes=1)
    loss_fn = model.build_loss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = batch["img"].float() / 255

    def loss_value():
        return loss_fn(model(images), batch)["total"]

    model.train()
    before = loss_value()
    before.backward()
    optimizer.step()
    optimizer.zero_grad()
    with torch.no_grad():
        after = loss_value()
    assert torch.isfinite(before) and after.item() < before.item()


def test_overrides_reach_the_objects(tmp_path):
    cfg = compose_run(tmp_path, "neuron.time_steps=2", "neuron.max_level=3", "optim.lr0=0.02", "optim.nominal_batch_size=64",
                      "trainer.batch_size=4", "data.imgsz=96", "trainer.epochs=7")
    trainer = Trainer(cfg)
    assert trainer.model.time_steps == 2 and trainer.model.max_level == 3
    assert {n.max_level for _, n in trainer.model.neurons()} == {3}
    assert {n.time_steps for _, n in trainer.model.neurons()} == {2}
    assert trainer.model.num_classes == 1  # follows the data
    assert all(g["initial_lr"] == 0.02 for g in trainer.optimizer.param_groups)
    assert trainer.train_loader.batch_size == 4 and trainer.train_loader.dataset.imgsz == 96
    assert trainer.epochs == 7 and trainer.accumulate == 16  # nominal batch 64 / 4


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return ckpt.read_checkpoint(run_dir / "weights" / "last.pt")["model"]


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    Trainer(compose_run(straight, "trainer.epochs=2", "trainer.val_interval=10")).fit()

    killed = tmp_path / "killed"
    original = Trainer.train_epoch

    def dies_in_second_epoch(self, epoch, deadline=None):
        if epoch == 1:
            raise KeyboardInterrupt("simulated kill")
        return original(self, epoch, deadline)

    monkeypatch.setattr(Trainer, "train_epoch", dies_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        Trainer(compose_run(killed, "trainer.epochs=2", "trainer.val_interval=10")).fit()
    monkeypatch.setattr(Trainer, "train_epoch", original)
    assert ckpt.read_checkpoint(killed / "weights" / "last.pt")["epoch"] == 0
    Trainer(compose_run(killed, "trainer.epochs=2", "trainer.val_interval=10", "trainer.resume=true")).fit()

    a, b = _final_weights(straight), _final_weights(killed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    with pytest.raises(TrainingError, match="already finished"):
        Trainer(compose_run(killed, "trainer.epochs=2", "trainer.resume=true"))


def test_resume_without_checkpoint_is_an_error(tmp_path):
    with pytest.raises(TrainingError, match="does not exist"):
        Trainer(compose_run(tmp_path, "trainer.resume=true"))


@pytest.mark.slow
def test_ddp_two_process_gloo_smoke(tmp_path):
    run_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
               "-m", "spikeyolo.cli.train", *TINY_RUN, "trainer.epochs=1", f"run_dir={run_dir}"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = (run_dir / "metrics.json").read_text()
    assert '"map50"' in metrics and '"map50_95"' in metrics
    payload = ckpt.read_checkpoint(run_dir / "weights" / "last.pt")
    assert payload["epoch"] == 0


def test_loggers_write_their_files(tmp_path, monkeypatch):
    from spikeyolo.engine.loggers import CSVLogger, MetricsFile, WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    csv_logger = CSVLogger(tmp_path, run_config={"a": 1})
    csv_logger.log_metrics({"train/box": 1.5, "metrics/map50": 0.25}, step=1)
    csv_logger.log_metrics({"train/box": 1.25}, step=2)
    csv_logger.log_metrics({"train/box": 1.0}, step=2)  # a resumed run re-logs a step: newest wins
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert rows[0] == "step,train/box,metrics/map50" and rows[1:] == ["1,1.5,0.25", "2,1.0,"]
    MetricsFile(tmp_path).write({"epoch": 1, "x": float("nan")})
    assert MetricsFile(tmp_path).read() == [{"epoch": 1, "x": "nan"}]
    wandb_logger = WandbLogger(tmp_path, run_config={"model": {"scale": "n"}}, project="spikeyolo-test")
    wandb_logger.log_metrics({"metrics/map50": 0.5}, step=1)
    wandb_logger.finish()
    offline_runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1 and any(offline_runs[0].iterdir())


def test_max_minutes_is_a_guard_that_says_what_it_cut(tmp_path, monkeypatch, capsys):
    """GitHub issue #20: the schedule is trainer.epochs; trainer.max_minutes only guards it, and a run it stops says
    so (log, stdout, metrics.json) instead of passing a shortened run off as the configured one."""
    monkeypatch.chdir(tmp_path)
    args = [*TINY_RUN, "trainer.epochs=3", "trainer.max_minutes=0.000001", "run_dir=cut",
            "trainer.yardstick=the figure to compare with"]
    code, out, err = call_main("train", args, monkeypatch, capsys)
    assert code == 0, err[-2000:]
    note = ("note: trainer.max_minutes=1e-06 stopped the run after epoch 1 of 3 (cut short): the schedule was not "
            "completed, so its result is not the configured run's (trainer.max_minutes=null lifts the cap; "
            "trainer.resume=true run_dir=cut continues)")
    assert note in out.splitlines() and "yardstick: the figure to compare with" in out.splitlines()
    summary = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert summary["epochs_trained"] == 1 and summary["epochs_planned"] == 3
    assert summary["cut_by_max_minutes"] == note.removeprefix("note: ")
    # the configured schedule, uncut: nothing to say
    code, out, _ = call_main("train", [*TINY_RUN, "trainer.epochs=1", "run_dir=whole"], monkeypatch, capsys)
    assert code == 0 and "note:" not in out and "yardstick:" not in out
    assert json.loads((tmp_path / "whole" / "metrics.json").read_text())["cut_by_max_minutes"] is None
