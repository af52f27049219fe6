"""Every way of scoring a model reads the val loader once (GitHub issue #16): the conversion timestep sweep
(every (decoding, T) point) and the three Gen1 protocols, counted through ``spikeyolo-eval``; and what one pass
scores equals what separate passes would.
"""

from __future__ import annotations

import json

import pytest
import torch

import spikeyolo
import spikeyolo.cli.eval as eval_cli
from spikeyolo.config import model_config
from spikeyolo.conversion.evaluation import TimestepReadOut
from spikeyolo.data import dataloader_from_config, ensure_synthetic_dataset, spec_from_config
from spikeyolo.engine.checkpoint import save_checkpoint
from spikeyolo.engine.predict import predict, predict_each
from spikeyolo.engine.validate import validate, validate_timesteps

TINY_YOLO = ["model=tiny_yolo", "model.width_multiple=0.0625"]


class CountingLoader:
    """A loader that counts its passes (iterations started) and the batches it yields."""

    def __init__(self, loader) -> None:
        self.loader = loader
        self.dataset = loader.dataset
        self.passes = 0
        self.batches = 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        self.passes += 1
        for batch in self.loader:
            self.batches += 1
            yield batch


@pytest.fixture
def counted_loaders(monkeypatch) -> list[CountingLoader]:
    """Every loader spikeyolo-eval builds, wrapped in a :class:`CountingLoader`."""
    built: list[CountingLoader] = []

    def counting(*args, **kwargs):
        built.append(CountingLoader(dataloader_from_config(*args, **kwargs)))
        return built[-1]

    monkeypatch.setattr(eval_cli, "dataloader_from_config", counting)
    return built


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A converted Spiking-YOLO checkpoint of a randomly initialised tiny Tiny YOLO (1 class, trees)."""
    from spikeyolo.cli.convert import convert as convert_command

    root = tmp_path_factory.mktemp("converted")
    cfg = spikeyolo.compose(TINY_YOLO)
    torch.manual_seed(0)
    ann = spikeyolo.build_model(cfg, num_classes=1)
    ann_path = save_checkpoint({"model_config": model_config(cfg, 1), "model": ann.state_dict(), "ema": None,
                                "names": ["tree"]}, root / "ann.pt")
    return convert_command(spikeyolo.compose([f"checkpoint={ann_path}", "calibration.images=4",
                                              "data.imgsz=64", "timesteps=8"], config_name="convert"))


def test_timestep_sweep_reads_the_val_loader_once(converted, counted_loaders, tmp_path):
    report = eval_cli.evaluate(spikeyolo.compose([f"checkpoint={converted}", "timesteps=[2,8]", "data.imgsz=64",
                                                  "batch_size=4", f"run_dir={tmp_path}"], config_name="eval"))
    assert sorted((p["decoding"], p["time_steps"]) for p in report["points"]) == [
        ("spike", 2), ("spike", 8), ("vmem", 2), ("vmem", 8)]
    assert len(counted_loaders) == 1
    loader = counted_loaders[0]
    assert (loader.passes, loader.batches, len(loader)) == (1, 3, 3)    # 12 val tiles in batches of 4
    assert report["images"] == 12


def test_each_sweep_point_equals_a_pass_of_the_model_at_that_t_and_decoding(converted):
    model = spikeyolo.load_checkpoint(converted).eval()
    cfg = spikeyolo.compose(["data.imgsz=64"])
    spec = spec_from_config(cfg.data)
    loader = dataloader_from_config(spec, cfg.data, "val", 4, 0, device="cpu")
    device = torch.device("cpu")
    runs = predict_each(model, loader, device, TimestepReadOut(model, [8, 2]), record_firing=False)
    assert sorted(runs) == [("spike", 2), ("spike", 8), ("vmem", 2), ("vmem", 8)]
    sweep = validate_timesteps(model, loader, spec, device, [2, 8])
    for point in sweep.points:
        model.time_steps, model.network.decoding = point.time_steps, point.decoding
        alone = predict(model, loader, device)
        one_pass = runs[(point.decoding, point.time_steps)]
        assert one_pass.im_files == alone.im_files and one_pass.shapes == alone.shapes
        assert all(torch.equal(a, b) for a, b in zip(one_pass.detections, alone.detections))
        metrics = validate(model, loader, spec, device, evaluators=["coco"]).metrics
        assert (point.map50, point.map50_95) == (metrics["map50"], metrics["map50_95"])
    assert sum(len(d) for run in runs.values() for d in run.detections) > 0


@pytest.fixture(scope="module")
def gen1_checkpoint(tmp_path_factory):
    """(synthetic Gen1 root with 2 test recordings of 0.9 s, a checkpoint of a randomly initialised tiny s-model)."""
    root = tmp_path_factory.mktemp("gen1")
    ensure_synthetic_dataset({"test": 2}, duration_s=0.9, seed=0, label_period_us=100_000, workers=1,
                             root=root / "data")
    cfg = spikeyolo.compose(["experiment=gen1_synthetic", "data.synthetic=null", f"data.root={root / 'data'}"])
    torch.manual_seed(0)
    model = spikeyolo.build_model(cfg, num_classes=2)
    path = save_checkpoint({"model_config": model_config(cfg, 2), "model": model.state_dict(), "ema": None,
                            "names": ["car", "pedestrian"]}, root / "model.pt")
    return root / "data", path


def test_gen1_protocols_read_the_val_loader_once(gen1_checkpoint, counted_loaders, tmp_path, monkeypatch):
    root, checkpoint = gen1_checkpoint
    monkeypatch.setenv("SPIKEYOLO_CACHE", str(tmp_path / "cache"))
    metrics = eval_cli.evaluate(spikeyolo.compose(
        ["data=gen1", f"data.root={root}", f"checkpoint={checkpoint}", "data.imgsz=64", "data.preprocess_workers=1",
         "batch_size=3", f"run_dir={tmp_path / 'eval'}"], config_name="eval"))
    assert set(metrics["protocols"]) == {"spikeyolo", "prophesee", "cordone"}
    assert len(counted_loaders) == 1
    loader = counted_loaders[0]
    assert (loader.passes, loader.batches, len(loader)) == (1, 3, 3)    # 8 samples (4 label times x 2) in 3s
    # labels at 0.5-0.8 s: every sample is scored by spikeyolo, the 0.5 s ones are skipped by prophesee
    assert metrics["images"] == metrics["protocols"]["spikeyolo"]["images"] == 8
    assert metrics["protocols"]["prophesee"]["images"] == 6
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["protocols"] == metrics["protocols"] and "map50" in saved and "firing/all" in saved
