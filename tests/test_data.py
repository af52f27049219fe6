"""Datasets and loaders: the embedded trees set, COCO-json conversion, Hydra data configs, bad input, caching."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import yolo_set
from spikeyolo.data import (
    AUGMENT_DEFAULTS,
    DatasetError,
    augmentation_hyp,
    build_dataloader,
    coco_image_ids,
    count_boxes,
    embedded_root,
    load_dataset_spec,
    maybe_close_mosaic,
    spec_from_config,
)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "spikeyolo" / "configs"
ASSETS = REPO / "spikeyolo" / "assets"


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """A private SPIKEYOLO_CACHE, and the check that nothing is written inside spikeyolo/assets."""
    before = _listing(ASSETS)
    cache = tmp_path_factory.mktemp("spikeyolo-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPIKEYOLO_CACHE", str(cache))
        yield cache
    assert _listing(ASSETS) == before, "something was written inside spikeyolo/assets"


@pytest.fixture(scope="module")
def trees():
    return load_dataset_spec()


def _copy_images(split: str, count: int, dest: Path, labels: Path | None = None) -> list[Path]:
    """The first ``count`` embedded images of ``split`` (and their labels) copied into ``dest``."""
    src = embedded_root()
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for image in sorted((src / "images" / split).iterdir())[:count]:
        shutil.copyfile(image, dest / image.name)
        copied.append(dest / image.name)
        if labels is not None:
            labels.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / "labels" / split / f"{image.stem}.txt", labels / f"{image.stem}.txt")
    return copied


def _yolo_set(root: Path, num_train: int = 3, num_val: int = 2) -> Path:
    """A small YOLO-layout copy of the trees set with its data.yaml (with a download: the loader must not fetch it)."""
    return yolo_set(root, num_train, num_val, extra_yaml="download: https://example.invalid/never-fetched.zip\n")


# --------------------------------------------------------------------------- embedded trees


def test_embedded_spec(trees):
    assert trees.source == "embedded" and trees.names == ["tree"] and trees.num_classes == 1
    assert trees.category_ids == [1]
    assert trees.val_json == embedded_root() / "annotations" / "instances_val.json"
    ids = coco_image_ids(trees)
    assert len(ids) == 12 and min(ids.values()) == 1


def test_embedded_counts_and_train_batch(trees):
    loader = build_dataloader(trees, "train", imgsz=320, batch_size=4, workers=0)
    dataset = loader.dataset
    assert (len(dataset), count_boxes(dataset), dataset.num_corrupt) == (44, 780, 0)
    batch = next(iter(loader))
    assert batch["img"].dtype == torch.uint8 and tuple(batch["img"].shape) == (4, 3, 320, 320)
    num_boxes = batch["bboxes"].shape[0]
    assert num_boxes > 0 and batch["cls"].shape == (num_boxes, 1) and batch["batch_idx"].shape == (num_boxes,)
    assert set(batch["batch_idx"].long().tolist()) <= {0, 1, 2, 3}
    assert batch["cls"].eq(0).all()
    assert batch["bboxes"].min() >= 0 and batch["bboxes"].max() <= 1  # normalised xywh
    assert len(batch["im_file"]) == len(batch["ori_shape"]) == len(batch["ratio_pad"]) == 4
    assert all(Path(f).is_absolute() for f in batch["im_file"])


def test_embedded_val_batch_is_letterboxed_labels(trees):
    loader = build_dataloader(trees, "val", imgsz=320, batch_size=4, workers=0)
    assert (len(loader.dataset), count_boxes(loader.dataset)) == (12, 414)
    batch = next(iter(loader))
    assert tuple(batch["img"].shape) == (4, 3, 320, 320)
    assert batch["ori_shape"][0] == (400, 400) and batch["ratio_pad"][0] == ((0.8, 0.8), (0, 0))
    # no augmentation: a square 400 px tile letterboxed to 320 keeps the normalised label rows
    first = Path(batch["im_file"][0])
    expected = np.loadtxt(embedded_root() / "labels" / "val" / f"{first.stem}.txt", ndmin=2)
    mine = batch["batch_idx"] == 0
    got = torch.cat([batch["cls"][mine], batch["bboxes"][mine]], 1).numpy()
    np.testing.assert_allclose(got[np.lexsort(got.T[::-1])], expected[np.lexsort(expected.T[::-1])], atol=1e-5)


def test_val_rect_batches_are_stride_multiples(trees):
    loader = build_dataloader(trees, "val", imgsz=320, batch_size=4, workers=0, rect=True, stride=32)
    batch = next(iter(loader))
    height, width = batch["img"].shape[2:]
    assert height % 32 == 0 and width % 32 == 0 and max(height, width) == 352  # 320 + pad 0.5 * stride


def _mosaic_probabilities(transforms) -> list[float]:
    found = []
    for transform in getattr(transforms, "transforms", []):
        if type(transform).__name__ == "Mosaic":
            found.append(transform.p)
        found += _mosaic_probabilities(transform)
    return found


def test_close_mosaic_last_epochs(trees):
    loader = build_dataloader(trees, "train", imgsz=320, batch_size=4, workers=0)
    assert _mosaic_probabilities(loader.dataset.transforms) == [1.0]
    assert not maybe_close_mosaic(loader, epoch=89, epochs=100)  # recipe: close_mosaic 10
    assert maybe_close_mosaic(loader, epoch=90, epochs=100)
    assert not maybe_close_mosaic(loader, epoch=91, epochs=100)  # once
    assert _mosaic_probabilities(loader.dataset.transforms) == [0.0]
    batch = next(iter(loader))
    assert tuple(batch["img"].shape) == (4, 3, 320, 320)


def test_augmentation_hyp_recipe_defaults_and_overrides():
    hyp = augmentation_hyp()
    assert (hyp.mosaic, hyp.translate, hyp.scale, hyp.fliplr, hyp.mixup, hyp.copy_paste) == (1.0, 0.1, 0.5, 0.5, 0, 0)
    assert (hyp.hsv_h, hyp.hsv_s, hyp.hsv_v, hyp.close_mosaic) == (0.015, 0.7, 0.4, 10)
    assert hyp.augmentations == []  # no Albumentations stage
    hyp = augmentation_hyp({"mosaic": 0.5, "lr0": 0.1})  # keys other than augmentation ones are ignored
    assert hyp.mosaic == 0.5 and hyp.translate == AUGMENT_DEFAULTS["translate"]


# --------------------------------------------------------------------------- COCO json


def _coco_json_set(root: Path) -> tuple[Path, Path, Path, list[Path]]:
    """4 train + 2 val tree images, categories [7 'dead', 3 'alive'] (non-contiguous, not sorted)."""
    images = root / "images"
    files = _copy_images("train", 4, images / "sub") + _copy_images("val", 2, images)
    cats = [{"id": 7, "name": "dead"}, {"id": 3, "name": "alive"}]

    def entry(i, f):
        return {"id": 100 + i, "file_name": str(f.relative_to(images)), "width": 400, "height": 400}

    train = {"images": [entry(i, f) for i, f in enumerate(files[:4])], "categories": cats, "annotations": [
        {"id": 1, "image_id": 100, "category_id": 3, "bbox": [40, 80, 40, 20], "iscrowd": 0},
        {"id": 2, "image_id": 100, "category_id": 7, "bbox": [200, 200, 100, 50]},
        {"id": 3, "image_id": 101, "category_id": 7, "bbox": [0, 0, 400, 400], "iscrowd": 0},
        {"id": 4, "image_id": 101, "category_id": 3, "bbox": [10, 10, 50, 50], "iscrowd": 1},  # skipped
        {"id": 5, "image_id": 103, "category_id": 3, "bbox": [360, 380, 80, 40]},  # clipped to 40x20
    ]}  # image 102: no boxes
    val = {"images": [entry(i, f) for i, f in enumerate(files[4:])], "categories": cats, "annotations": [
        {"id": 6, "image_id": 100, "category_id": 7, "bbox": [100, 100, 40, 40]},
    ]}
    train_json, val_json = root / "train.json", root / "val.json"
    train_json.write_text(json.dumps(train))
    val_json.write_text(json.dumps(val))
    return images, train_json, val_json, files


def test_coco_json_conversion(tmp_path):
    images, train_json, val_json, files = _coco_json_set(tmp_path / "coco")
    before = _listing(tmp_path / "coco")
    spec = load_dataset_spec("coco_json", images=images, train_json=train_json, val_json=val_json)
    assert spec.names == ["dead", "alive"] and spec.category_ids == [7, 3]  # index = position in categories
    assert spec.val_json == val_json.resolve()
    loader = build_dataloader(spec, "train", imgsz=320, batch_size=4, workers=0, augment=False, shuffle=False)
    labels = {Path(lb["im_file"]).name: np.concatenate([lb["cls"], lb["bboxes"]], 1) for lb in loader.dataset.labels}
    assert len(labels) == 4 and loader.dataset.num_corrupt == 0
    np.testing.assert_allclose(labels[files[0].name], [[1, 0.15, 0.225, 0.1, 0.05], [0, 0.625, 0.5625, 0.25, 0.125]],
                               atol=1e-6)
    np.testing.assert_allclose(labels[files[1].name], [[0, 0.5, 0.5, 1, 1]], atol=1e-6)  # crowd box skipped
    assert labels[files[2].name].shape == (0, 5)  # no boxes -> empty label file
    np.testing.assert_allclose(labels[files[3].name], [[1, 0.95, 0.975, 0.1, 0.05]], atol=1e-6)
    assert (spec.label_roots["train"] / "sub" / f"{files[2].stem}.txt").read_text() == ""
    batch = next(iter(loader))
    assert sorted(batch["cls"].flatten().tolist()) == [0, 0, 1, 1]
    val = build_dataloader(spec, "val", imgsz=320, batch_size=2, workers=0)
    assert (len(val.dataset), count_boxes(val.dataset)) == (2, 1)
    assert coco_image_ids(spec) == {files[4].name: 100, files[5].name: 101}
    # a second resolve reuses the conversion; the user's folder is untouched
    assert load_dataset_spec("coco_json", images=images, train_json=train_json, val_json=val_json).root == spec.root
    assert _listing(tmp_path / "coco") == before


# --------------------------------------------------------------------------- bad input


def test_missing_paths_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match="nope.yaml"):
        load_dataset_spec("yolo", yaml=tmp_path / "nope.yaml")
    yaml_path = tmp_path / "data.yaml"
    yaml_path.write_text("path: missing_root\ntrain: images/train\nval: images/val\nnames: [a]\ndownload: x\n")
    with pytest.raises(DatasetError, match=r"data\.yaml.*missing_root.*never run"):
        load_dataset_spec("yolo", yaml=yaml_path)
    yaml_path.write_text("path: .\ntrain: images/train\nval: images/val\nnames: [a]\n")
    with pytest.raises(DatasetError, match=r"data\.yaml: train path .*images/train does not exist"):
        load_dataset_spec("yolo", yaml=yaml_path)
    images = tmp_path / "imgs"
    images.mkdir()
    with pytest.raises(DatasetError, match="gone.json"):
        load_dataset_spec("coco_json", images=images, val_json=tmp_path / "gone.json")
    with pytest.raises(DatasetError, match="no_images_here"):
        load_dataset_spec("coco_json", images=tmp_path / "no_images_here", val_json=tmp_path / "gone.json")


def test_coco_json_missing_keys(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DatasetError, match=r"bad\.json: COCO json is missing key\(s\) categories"):
        load_dataset_spec("coco_json", images=images, val_json=bad)
    bad.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [],
                               "categories": [{"id": 1, "name": "a"}]}))
    with pytest.raises(DatasetError, match=r"bad\.json: images\[0\] is missing key\(s\) width, height"):
        load_dataset_spec("coco_json", images=images, val_json=bad)
    bad.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    with pytest.raises(DatasetError, match=r"bad\.json: .*no images"):
        load_dataset_spec("coco_json", images=images, val_json=bad)


@pytest.mark.parametrize("line, message", [
    ("1 0.5 0.5 0.1 0.1", "class id 1 out of range"),
    ("0 0.5 0.5 0.1", "expected 5 columns"),
    ("0 0.5 0.5 0.1 0.1 0.2", "expected 5 columns"),
    ("0 0.5 abc 0.1 0.1", "non-numeric"),
    ("0 0.5 0.5 1.8 0.1", "outside"),
])
def test_bad_label_line_names_the_file(tmp_path, line, message):
    yaml_path = _yolo_set(tmp_path / "set")
    label_file = sorted((tmp_path / "set" / "labels" / "train").iterdir())[1]
    label_file.write_text(label_file.read_text() + line + "\n")
    spec = load_dataset_spec("yolo", yaml=yaml_path)
    with pytest.raises(DatasetError, match=message) as err:
        build_dataloader(spec, "train", imgsz=320, batch_size=2, workers=0)
    assert str(label_file) in str(err.value) and "\n" not in str(err.value)


def test_empty_dataset_is_an_error(tmp_path):
    yaml_path = _yolo_set(tmp_path / "set")
    for image in (tmp_path / "set" / "images" / "val").iterdir():
        image.unlink()
    spec = load_dataset_spec("yolo", yaml=yaml_path)
    with pytest.raises(DatasetError, match=r"images/val.*no images found"):
        build_dataloader(spec, "val", imgsz=320, batch_size=2, workers=0)


def test_corrupt_image_skipped_and_counted(tmp_path, caplog):
    yaml_path = _yolo_set(tmp_path / "set", num_train=4)
    images = sorted((tmp_path / "set" / "images" / "train").iterdir())
    images[0].write_bytes(b"\xff\xd8 this is not a jpeg")
    truncated = images[1].read_bytes()[:-200]  # cut off: not decodable -> skipped, never "restored" in place
    images[1].write_bytes(truncated)
    trailing = images[2].read_bytes() + b"junk"  # no end marker at the end but decodable -> used as is
    images[2].write_bytes(trailing)
    spec = load_dataset_spec("yolo", yaml=yaml_path)
    assert spec.root == (tmp_path / "set").resolve()
    with caplog.at_level(logging.WARNING, logger="spikeyolo.data"):
        loader = build_dataloader(spec, "train", imgsz=320, batch_size=2, workers=0, augment=False)
    assert loader.dataset.num_corrupt == 2 and len(loader.dataset) == 2
    assert sorted(loader.dataset.im_files) == [str(images[2]), str(images[3])]
    assert "skipped 2 corrupt" in caplog.text
    assert images[1].read_bytes() == truncated and images[2].read_bytes() == trailing
    assert next(iter(loader))["img"].shape[0] == 2
    # rebuilt from the label cache: same count; nothing written into the user's dataset folder
    assert build_dataloader(spec, "train", imgsz=320, batch_size=2, workers=0).dataset.num_corrupt == 2
    assert not list((tmp_path / "set").rglob("*.cache")) and not list((tmp_path / "set").rglob("*.npy"))


def test_all_images_corrupt_is_an_error(tmp_path):
    yaml_path = _yolo_set(tmp_path / "set")
    for image in (tmp_path / "set" / "images" / "val").iterdir():
        image.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="no readable images"):
        build_dataloader(load_dataset_spec("yolo", yaml=yaml_path), "val", imgsz=320, batch_size=2, workers=0)


# --------------------------------------------------------------------------- configs and prepare_coco


def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(overrides=list(overrides)).data


def test_data_configs(tmp_path, monkeypatch):
    cfg = _compose("+data=trees")
    assert cfg.source == "embedded" and cfg.imgsz == 320 and cfg.num_classes is None
    assert {k: cfg.augment[k] for k in AUGMENT_DEFAULTS} == AUGMENT_DEFAULTS
    assert spec_from_config(cfg).num_classes == 1
    yaml_path = _yolo_set(tmp_path / "set")
    assert spec_from_config(_compose("+data=yolo", f"+data.yaml={yaml_path}")).names == ["tree"]
    with pytest.raises(DatasetError, match="num_classes=3"):
        spec_from_config(_compose("+data=yolo", f"data.yaml={yaml_path}", "data.num_classes=3"))
    images, train_json, val_json, _ = _coco_json_set(tmp_path / "coco")
    spec = spec_from_config(_compose("+data=coco_json", f"data.images={images}", f"data.train_json={train_json}",
                                     f"data.val_json={val_json}"))
    assert spec.category_ids == [7, 3]
    monkeypatch.setenv("COCO_DIR", str(tmp_path / "no_coco"))
    with pytest.raises(DatasetError, match=r"no_coco/coco\.yaml.*prepare_coco\.py --coco-dir .*no_coco"):
        spec_from_config(_compose("+data=coco"))


def _prepare_coco_module():
    module_spec = importlib.util.spec_from_file_location("prepare_coco", REPO / "scripts" / "prepare_coco.py")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def test_prepare_coco(tmp_path, capsys):
    prepare_coco = _prepare_coco_module()
    coco = tmp_path / "coco"
    assert prepare_coco.main(["--coco-dir", str(coco)]) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "http://images.cocodataset.org/zips/train2017.zip" in message
    assert "annotations_trainval2017.zip" in message and str(coco) in message
    cats = [{"id": 1, "name": "person"}, {"id": 90, "name": "toothbrush"}]
    for split, source in (("train2017", "train"), ("val2017", "val")):
        files = _copy_images(source, 2, coco / split)
        data = {"images": [{"id": i, "file_name": f.name, "width": 400, "height": 400} for i, f in enumerate(files)],
                "categories": cats,
                "annotations": [{"id": 1, "image_id": 0, "category_id": 90, "bbox": [0, 0, 200, 100]}]}
        (coco / "annotations").mkdir(exist_ok=True)
        (coco / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    assert prepare_coco.main(["--coco-dir", str(coco)]) == 0
    spec = load_dataset_spec("yolo", yaml=coco / "coco.yaml")
    assert spec.names == ["person", "toothbrush"] and spec.category_ids == [1, 90]
    assert spec.val_json == (coco / "annotations" / "instances_val2017.json").resolve()
    loader = build_dataloader(spec, "val", imgsz=320, batch_size=2, workers=0)
    assert (len(loader.dataset), count_boxes(loader.dataset)) == (2, 1)
    assert loader.dataset.labels[0]["cls"].tolist() == [[1.0]]
    assert os.path.islink(coco / "images" / "train2017")


def test_distributed_sampler_passthrough(trees, tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        loader = build_dataloader(trees, "train", imgsz=320, batch_size=4, workers=0, rank=0)
        assert isinstance(loader.sampler, torch.utils.data.distributed.DistributedSampler)
        assert len(loader.sampler) == 44
    finally:
        dist.destroy_process_group()
