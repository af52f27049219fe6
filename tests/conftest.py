"""Shared test helpers: tiny composed configs (the real configs with small overrides)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

FIXTURES = Path(__file__).parent / "fixtures"

# A "tiny" model: the real layer list, with small width (channels = int(c * 0.0625)).
TINY = ["model.width_multiple=0.0625", "model.depth_multiple=0.33"]
IMGSZ = 64   # the image size of image_checkpoint


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests with one torch thread (restored afterwards)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


def randomize_bn(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BN non-trivial 'trained' statistics and affine parameters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                chs = bn.num_features
                bn.running_mean.copy_(torch.randn(chs, generator=gen) * 0.3)
                bn.running_var.copy_(torch.rand(chs, generator=gen) + 0.5)
                bn.weight.copy_(torch.rand(chs, generator=gen) + 0.5)
                bn.bias.copy_(torch.randn(chs, generator=gen) * 0.3)
    return module


def tiny_model(scale: str = "s", num_classes: int = 3, extra: tuple[str, ...] = ()):
    import spikeyolo

    cfg = spikeyolo.compose([f"model=spikeyolo_{scale}", *TINY, *extra])
    return spikeyolo.build_model(cfg, num_classes=num_classes)


@pytest.fixture(scope="session")
def image_checkpoint(tmp_path_factory) -> Path:
    """A width-1/16 n model with 'trained' BN statistics (it fires and detects), trained-at size 64 on the trees."""
    import spikeyolo
    import yaml

    from spikeyolo.engine import checkpoint as ckpt

    torch.manual_seed(0)
    cfg = spikeyolo.compose([*TINY, f"data.imgsz={IMGSZ}"])
    model = randomize_bn(spikeyolo.build_model(cfg, num_classes=1), seed=3)
    with torch.no_grad():   # lift the class logits so that a fair number of boxes pass a low threshold
        for branch in model.layers[-1].cls_branches:
            branch[-1].conv.bias.fill_(-1.0)
    path = tmp_path_factory.mktemp("api") / "best.pt"
    train_config = yaml.safe_dump({"data": {"source": "embedded", "name": "trees", "imgsz": IMGSZ, "val_rect": True}})
    ckpt.save_checkpoint({"model_config": spikeyolo.config.model_config(cfg, 1), "model": model.state_dict(),
                          "ema": None, "names": ["tree"], "train_config": train_config}, path)
    return path


def yolo_set(root: Path, num_train: int = 3, num_val: int = 2, names: tuple[str, ...] = ("tree",),
             extra_yaml: str = "") -> Path:
    """A YOLO-layout copy of the first images (and labels) of the embedded trees set; returns its data.yaml
    (class names ``names``, then ``extra_yaml`` lines)."""
    from spikeyolo.data import embedded_root

    source = embedded_root()
    for split, count in (("train", num_train), ("val", num_val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for image in sorted((source / "images" / split).iterdir())[:count]:
            (root / "images" / split / image.name).write_bytes(image.read_bytes())
            label = source / "labels" / split / f"{image.stem}.txt"
            if label.exists():
                (root / "labels" / split / label.name).write_text(label.read_text())
    listed = "".join(f"  {index}: {name}\n" for index, name in enumerate(names))
    (root / "data.yaml").write_text(f"path: .\ntrain: images/train\nval: images/val\nnames:\n{listed}{extra_yaml}")
    return root / "data.yaml"
