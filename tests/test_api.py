"""The Python API: ``spikeyolo.Detector.load(path).predict(images)``.

The single-image letterbox equals the validation loader's image for image (square and non-square, rect and
square letterbox); the detector's boxes on the embedded trees val images equal the predictions ``spikeyolo-eval``
writes for the same checkpoint (integer and spike-driven paths) and, bit for bit, the eval pass's over the same
batch (one post-process: ``evaluation.predictions.postprocess``); the three input kinds (path, numpy BGR / RGB,
PIL) give the same detections; bad input is one clear error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import spikeyolo
from conftest import IMGSZ
from spikeyolo._ultralytics.data import letterbox_image
from spikeyolo.data import coco_image_ids, dataloader_from_config, embedded_root, spec_from_config
from spikeyolo.engine import checkpoint as ckpt
from spikeyolo.errors import InputError, UserError

pytestmark = pytest.mark.usefixtures("one_thread")


def _val_files() -> list[Path]:
    return sorted((embedded_root() / "images" / "val").glob("*.jpg"))


@pytest.mark.parametrize("rect", [True, False])
@pytest.mark.parametrize("size", [(400, 400), (240, 420), (500, 260)])
def test_letterbox_image_equals_the_validation_loader(tmp_path, rect, size):
    """One image through letterbox_image == the same image through a val loader of those settings."""
    root = tmp_path / "set"
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    rng = np.random.default_rng(sum(size))
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    cv2.imwrite(str(root / "images" / "val" / "a.png"), image)
    (root / "labels" / "val" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "train": "images/val", "val": "images/val",
                                                    "names": ["x"]}))
    cfg = spikeyolo.compose(["data=yolo", f"data.yaml={root / 'data.yaml'}", f"data.imgsz={IMGSZ * 2}",
                             f"data.val_rect={str(rect).lower()}"])
    spec = spec_from_config(cfg.data)
    batch = next(iter(dataloader_from_config(spec, cfg.data, "val", batch_size=1, workers=0, device="cpu")))
    ours, ratio_pad = letterbox_image(image, IMGSZ * 2, 32, rect)
    assert torch.equal(torch.from_numpy(np.ascontiguousarray(ours[:, :, ::-1].transpose(2, 0, 1))), batch["img"][0])
    assert tuple(map(tuple, ratio_pad)) == tuple(map(tuple, batch["ratio_pad"][0]))


def _eval_predictions(checkpoint: Path, run_dir: Path, deploy: str, monkeypatch) -> dict[str, list[dict]]:
    """spikeyolo-eval's predictions.json for the checkpoint, by image file name."""
    from spikeyolo.cli.eval import main

    monkeypatch.setattr(sys, "argv", ["spikeyolo-eval", f"checkpoint={checkpoint}", f"run_dir={run_dir}",
                                      f"deploy={deploy}", "workers=0"])
    main()
    spec = spec_from_config(spikeyolo.compose([]).data)
    names_by_id = {image_id: name for name, image_id in coco_image_ids(spec).items()}
    by_file: dict[str, list[dict]] = {}
    for record in json.loads((run_dir / "predictions.json").read_text()):
        by_file.setdefault(names_by_id[record["image_id"]], []).append(record)
    return by_file


def _as_records(result) -> np.ndarray:
    """[N, 5] (score, x, y, w, h) sorted, as COCO results hold them."""
    rows = [(float(s), float(x1), float(y1), float(x2 - x1), float(y2 - y1))
            for (x1, y1, x2, y2), s in zip(result.boxes, result.scores)]
    return np.array(sorted(rows), dtype=np.float64).reshape(-1, 5)


@pytest.mark.parametrize("deploy", ["integer", "spike_driven"])
def test_detector_boxes_equal_eval_predictions(tmp_path, image_checkpoint, monkeypatch, deploy):
    expected = _eval_predictions(image_checkpoint, tmp_path / "eval", deploy, monkeypatch)
    detector = spikeyolo.Detector.load(image_checkpoint).eval_path(deploy)
    assert detector.imgsz == IMGSZ and detector.names == ["tree"] and detector.path == deploy
    results = detector.predict([str(f) for f in _val_files()], conf=0.001, max_det=300)
    assert len(results) == len(_val_files())
    total = 0
    for file, result in zip(_val_files(), results):
        assert result.source == str(file) and result.shape == (400, 400)
        want = np.array(sorted((r["score"], *r["bbox"]) for r in expected.get(file.name, [])), np.float64).reshape(-1, 5)
        ours = _as_records(result)
        assert ours.shape == want.shape, file.name
        # the same detections; the forward ran in other batches than spikeyolo-eval's: equal to 1e-3 px
        assert np.allclose(ours[:, 0], want[:, 0], rtol=0, atol=1e-6) and np.allclose(ours[:, 1:], want[:, 1:],
                                                                                       rtol=0, atol=1e-3), file.name
        total += len(result)
    assert total > 0   # the comparison is not empty


def test_detector_results_are_the_eval_pass_bit_for_bit(image_checkpoint):
    """The val loader's one batch through the eval pass (engine.predict) and the same pictures through
    Detector.predict: the same network input, so the same rows, unclipped boxes and shapes, to the last bit."""
    from spikeyolo.engine.predict import predict

    detector = spikeyolo.Detector.load(image_checkpoint)
    cfg = spikeyolo.compose([f"data.imgsz={IMGSZ}"])
    loader = dataloader_from_config(spec_from_config(cfg.data), cfg.data, "val", batch_size=len(_val_files()),
                                    workers=0, device="cpu")
    passed = predict(detector.model, loader, torch.device("cpu"), conf=0.001, max_det=300)
    results = detector.predict([str(f) for f in passed.im_files], conf=0.001, max_det=300,
                               batch_size=len(_val_files()))
    assert len(results) == passed.images == len(_val_files()) and sum(map(len, results)) > 0
    for result, rows, unclipped, shape in zip(results, passed.detections, passed.unclipped_boxes, passed.shapes):
        assert result.shape == shape and result.boxes.dtype == np.float64
        assert torch.equal(torch.from_numpy(result.rows()), rows), result.source
        assert torch.equal(torch.from_numpy(result.unclipped_boxes), unclipped), result.source


def test_postprocess_layout_and_checks():
    """NMS, the letterbox undone, clipped: one ImageDetections per image; a ratio_pad per image or a ValueError."""
    from spikeyolo.evaluation.predictions import postprocess

    decoded = torch.zeros(2, 4 + 2, 3)                      # [B, 4 + C, A]: cx cy w h, two class scores
    decoded[0, :, 0] = torch.tensor([20.0, 30.0, 10.0, 20.0, 0.9, 0.1])   # a box inside
    decoded[0, :, 1] = torch.tensor([2.0, 30.0, 10.0, 20.0, 0.2, 0.8])    # crosses the left border
    ratio_pads = [((0.5, 0.5), (4, 0)), ((1.0, 1.0), (0, 0))]
    first, second = postprocess(decoded, ratio_pads, [(100, 80), (64, 64)], conf=0.5, class_names=["a", "b"],
                                sources=["x.jpg", None])
    assert len(first) == 2 and len(second) == 0 and first.source == "x.jpg" and first.shape == (100, 80)
    order = np.argsort(-first.scores)
    assert first.names == ["a", "b"] and np.allclose(first.scores[order], [0.9, 0.8])
    assert np.array_equal(first.unclipped_boxes[order], [[22.0, 40.0, 42.0, 80.0], [-14.0, 40.0, 6.0, 80.0]])
    assert np.array_equal(first.boxes[order], [[22.0, 40.0, 42.0, 80.0], [0.0, 40.0, 6.0, 80.0]])
    assert first.rows().shape == (2, 6) and first.rows().dtype == np.float64
    with pytest.raises(ValueError, match="ratio_pads has 1 entries for a batch of 2 images"):
        postprocess(decoded, ratio_pads[:1], [(100, 80), (64, 64)])


def test_three_input_kinds_give_the_same_detections(tmp_path, image_checkpoint):
    detector = spikeyolo.Detector.load(image_checkpoint)
    file = tmp_path / "tile.png"   # lossless: OpenCV and PIL decode the same pixels (their JPEG decoders differ)
    cv2.imwrite(str(file), cv2.imread(str(_val_files()[0])))
    bgr = cv2.imread(str(file))
    # one image per call: a batch of another size may sum in another order (float32 ulps, tie order)
    (by_path,), (by_bgr,) = detector.predict(file), detector.predict(bgr)
    (by_rgb,), (by_pil,) = detector.predict(bgr[:, :, ::-1].copy(), rgb=True), detector.predict(Image.open(file))
    for other in (by_bgr, by_rgb, by_pil):
        assert np.array_equal(other.boxes, by_path.boxes) and np.array_equal(other.scores, by_path.scores)
    pair = detector.predict([file, bgr])   # a list gives one result per image, in order
    assert [r.source for r in pair] == [str(file), None] and len(pair[0]) == len(by_path)
    assert by_path.source == str(file) and by_bgr.source is None
    assert all(name == "tree" for name in by_path.names) and len(by_path.to_list()) == len(by_path)
    grey = detector.predict(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))[0]
    assert grey.shape == (400, 400)


def test_bad_input_is_one_clear_error(tmp_path, image_checkpoint):
    detector = spikeyolo.Detector.load(image_checkpoint)
    with pytest.raises(InputError, match="image not found: .*missing.jpg"):
        detector.predict(tmp_path / "missing.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(InputError, match="broken.jpg: not a readable image"):
        detector.predict(str(tmp_path / "broken.jpg"))
    with pytest.raises(InputError, match=r"must be \[H, W, 3\]"):
        detector.predict(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(UserError, match="deploy path must be one of"):
        detector.eval_path("binary")
    events = tmp_path / "events.pt"
    payload = ckpt.read_checkpoint(image_checkpoint)
    payload["train_config"] = yaml.safe_dump({"data": {"source": "gen1", "imgsz": 64}})
    ckpt.save_checkpoint({k: v for k, v in payload.items() if k not in ("format", "version")}, events)
    with pytest.raises(UserError, match="trained on event data"):
        spikeyolo.Detector.load(events)
