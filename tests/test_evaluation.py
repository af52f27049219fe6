"""Evaluation: COCO mAP against the official fixture, COCO results, the ultralytics-style AP, plots, and the
evaluators that score one inference pass (the registry the data config names)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from spikeyolo.data import DatasetSpec, Gen1Sample
from spikeyolo.data.events import BOX_DTYPE
from spikeyolo.evaluation import (
    DEFAULT_EVALUATORS,
    STAT_NAMES,
    Evaluator,
    coco_gt_from_labels,
    evaluate_coco,
    evaluate_yolo_ap,
    flat_evaluators,
    letterbox_ratio_pad,
    match_image,
    protocol_ground_truth,
    register_evaluator,
    run_evaluators,
    save_coco_results,
    score_coco,
    to_coco_results,
    unletterbox_boxes,
)
from spikeyolo.plots import plot_pr_curve
from spikeyolo.structures import Predictions

FIXTURE = Path(__file__).parent / "fixtures" / "coco"
GT_FILE = FIXTURE / "instances_val2014_100.json"
DT_FILE = FIXTURE / "instances_val2014_fakebbox100_results.json"


@pytest.fixture(scope="module")
def expected() -> dict:
    return json.loads((FIXTURE / "expected_stats.json").read_text())


@pytest.fixture(scope="module")
def gt_dataset() -> dict:
    return json.loads(GT_FILE.read_text())


@pytest.fixture(scope="module")
def reference_result():
    return evaluate_coco(GT_FILE, DT_FILE)


# --------------------------------------------------------------------------- COCO protocol


def test_pycocotools_reproduces_fixture(reference_result, expected):
    assert reference_result.stats[0] == pytest.approx(0.5045806987249628, abs=1e-12)
    np.testing.assert_allclose(reference_result.stats, expected["stats"], rtol=0, atol=1e-12)
    for name, value in zip(STAT_NAMES, expected["stats"]):
        assert getattr(reference_result, name) == pytest.approx(value, abs=1e-12)
    per_class = {str(row.category_id): row.ap50_95 for row in reference_result.per_class}
    assert per_class.keys() == expected["per_category_AP_all_maxDets100"].keys()
    for category_id, value in expected["per_category_AP_all_maxDets100"].items():
        if value is None:
            assert per_class[category_id] is None
        else:
            assert per_class[category_id] == pytest.approx(value, abs=1e-12)


def test_result_table_and_dict(reference_result):
    person = reference_result.per_class[0]
    assert (person.category_id, person.name, person.num_gt) == (1, "person", 250)
    as_dict = json.loads(json.dumps(reference_result.to_dict()))
    assert as_dict["map50_95"] == reference_result.map50_95
    assert len(as_dict["per_class"]) == 80
    markdown = reference_result.table().splitlines()
    assert markdown[0] == "| id | name | num_gt | AP50:95 | AP50 |"
    assert markdown[2] == "| 1 | person | 250 | 0.5326 | 0.7883 |"
    assert markdown[-1].startswith("|  | all | ") and markdown[-1].endswith("| 0.5046 | 0.6970 |")
    plain = {line.split()[0]: line.split() for line in reference_result.table(markdown=False).splitlines()[1:-1]}
    assert plain["11"] == ["11", "fire", "hydrant", "0", "-", "-"]  # no GT of category 11 in these images


def test_faster_backend_agrees(reference_result, expected):
    pytest.importorskip("faster_coco_eval")
    faster = evaluate_coco(GT_FILE, DT_FILE, backend="faster")
    # faster-coco-eval 1.8.0 is not bit-identical: its precision sums differ in the last bit.
    # Measured on this fixture: stats differ by at most 1 ulp (1.1e-16, on AP50 only) and the
    # per-class AP by at most 2 ulp (2.2e-16). Test that bound.
    reference = np.asarray(expected["stats"])
    assert np.all(np.abs(np.asarray(faster.stats) - reference) <= 2 * np.spacing(reference))
    for ours, theirs in zip(reference_result.per_class, faster.per_class):
        assert ours.category_id == theirs.category_id
        for key in ("ap50_95", "ap50"):
            value, other = getattr(ours, key), getattr(theirs, key)
            assert (value is None) == (other is None)
            if value is not None:
                assert abs(value - other) <= 2 * np.spacing(value)


@pytest.mark.parametrize("backend", ["pycocotools", "faster"])
def test_empty_detections_give_zeros(gt_dataset, backend):
    if backend == "faster":
        pytest.importorskip("faster_coco_eval")
    result = evaluate_coco(gt_dataset, [], backend=backend)
    assert result.stats == [0.0] * 12
    assert result.map50_95 == 0.0


def test_unknown_image_id_raises(gt_dataset):
    detection = {"image_id": 999999999, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.5}
    with pytest.raises(ValueError, match="image_id.*not in the ground truth"):
        evaluate_coco(gt_dataset, [detection])
    detection = {"image_id": 42, "category_id": 0, "bbox": [0, 0, 10, 10], "score": 0.5}
    with pytest.raises(ValueError, match="category_id"):
        evaluate_coco(gt_dataset, [detection])


def test_quiet_by_default(capsys, gt_dataset):
    evaluate_coco(gt_dataset, [])
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("backend", ["pycocotools", "faster"])
def test_gt_boxes_as_detections(gt_dataset, backend):
    """All 839 GT boxes (9 of them crowd) as score-1 detections: AP is exactly 1, AR@1/AR@10 is not."""
    if backend == "faster":
        pytest.importorskip("faster_coco_eval")
    detections = [{"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": ann["bbox"],
                   "score": 1.0} for ann in gt_dataset["annotations"]]
    result = evaluate_coco(gt_dataset, detections, backend=backend)
    # Crowd GT is ignored and so is a detection matched to it; every AP and AR@100 is 1.0.
    # AR@1 and AR@10 are < 1: many images have more than 1 (10) objects. Computed, both backends.
    assert result.stats == [1.0] * 6 + [0.6046959118084726, 0.9841385369802442] + [1.0] * 4
    for row in result.per_class:
        if row.num_gt:  # pycocotools' tp / (tp + fp + eps) leaves 1 GT classes at 1 - 2.2e-16
            assert row.ap50_95 == pytest.approx(1.0, abs=3e-16) and row.ap50 == pytest.approx(1.0, abs=3e-16)
        else:
            assert row.ap50_95 is None
    assert gt_dataset["annotations"][0].keys() >= {"iscrowd"} and "ignore" not in gt_dataset["annotations"][0]


# --------------------------------------------------------------------------- COCO results


def test_to_coco_results_unletterbox_by_hand():
    # 400x300 (w x h) image letterboxed to 320x320: scale = min(320/300, 320/400) = 0.8,
    # resized 320x240, 80 rows of padding split 40 top / 40 bottom.
    ratio_pad = letterbox_ratio_pad((300, 400), (320, 320))
    assert ratio_pad == ((0.8, 0.8), (0, 40))
    detections = torch.tensor([
        [40.0, 60.0, 200.0, 220.0, 0.9, 2.0],  # -> x (40/0.8, 200/0.8), y ((60-40)/0.8, (220-40)/0.8)
        [300.0, 260.0, 330.0, 300.0, 0.25, 0.0],  # -> (375, 275, 412.5, 325) clipped to (400, 300)
    ])
    category_ids = [1, 7, 90]  # non-contiguous COCO ids
    expected = [
        {"image_id": 42, "category_id": 90, "bbox": [50.0, 25.0, 200.0, 200.0], "score": pytest.approx(0.9)},
        {"image_id": 42, "category_id": 1, "bbox": [375.0, 275.0, 25.0, 25.0], "score": 0.25},
    ]
    assert to_coco_results([detections], [42], category_ids, ratio_pads=[ratio_pad], orig_shapes=[(300, 400)]) \
        == expected
    # The same ratio_pad derived from the shapes.
    assert to_coco_results([detections], [torch.tensor(42)], category_ids, orig_shapes=[(300, 400)],
                           input_shape=(320, 320)) == expected
    # No geometry: boxes are taken as original pixels, not clipped, nothing rounded.
    plain = to_coco_results([torch.tensor([[1.5, 2.25, 3.75, 9.0, 0.5, 1.0]])], [7], category_ids)
    assert plain == [{"image_id": 7, "category_id": 7, "bbox": [1.5, 2.25, 2.25, 6.75], "score": 0.5}]
    with pytest.raises(ValueError, match="class index 3"):
        to_coco_results([torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.5, 3.0]])], [7], category_ids)


@pytest.mark.parametrize("orig_shape", [(300, 400), (480, 640), (427, 640), (612, 612), (333, 500), (1, 999)])
def test_unletterbox_matches_ultralytics_scale_boxes(orig_shape):
    from spikeyolo._ultralytics import env  # noqa: F401  (offline environment before ultralytics)
    from ultralytics.utils import ops

    input_shape = (320, 416)
    boxes = torch.tensor([[-5.0, 3.0, 100.5, 200.25], [10.0, 20.0, 415.0, 319.0]], dtype=torch.float64)
    ratio_pad = letterbox_ratio_pad(orig_shape, input_shape)
    ours = unletterbox_boxes(boxes, ratio_pad, orig_shape)
    derived = ops.scale_boxes(input_shape, boxes.clone(), orig_shape)  # ratio_pad=None branch
    given = ops.scale_boxes(input_shape, boxes.clone(), orig_shape, ratio_pad=ratio_pad)
    torch.testing.assert_close(ours, derived, rtol=0, atol=0)
    torch.testing.assert_close(ours, given, rtol=0, atol=0)


def test_letterboxed_gt_round_trip(gt_dataset, tmp_path):
    """Fixture GT -> letterboxed 640 input -> to_coco_results -> file -> evaluate_coco: AP 1."""
    category_ids = sorted(category["id"] for category in gt_dataset["categories"])
    class_index = {category_id: index for index, category_id in enumerate(category_ids)}
    images = gt_dataset["images"][:20]
    input_shape = (640, 640)
    detections, orig_shapes = [], []
    for image in images:
        orig_shape = (image["height"], image["width"])
        (gain_h, gain_w), (pad_w, pad_h) = letterbox_ratio_pad(orig_shape, input_shape)
        rows = []
        for ann in gt_dataset["annotations"]:
            if ann["image_id"] == image["id"]:
                x, y, w, h = ann["bbox"]
                rows.append([x * gain_w + pad_w, y * gain_h + pad_h, (x + w) * gain_w + pad_w,
                             (y + h) * gain_h + pad_h, 1.0, class_index[ann["category_id"]]])
        detections.append(torch.tensor(rows, dtype=torch.float64).reshape(-1, 6))
        orig_shapes.append(orig_shape)
    results = to_coco_results(detections, [image["id"] for image in images], category_ids,
                              orig_shapes=orig_shapes, input_shape=input_shape)
    assert len(results) == sum(len(d) for d in detections)
    path = save_coco_results(results, tmp_path / "out" / "results.json")
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temp file left
    subset = dict(gt_dataset, images=images)
    subset["annotations"] = [a for a in gt_dataset["annotations"] if a["image_id"] in {i["id"] for i in images}]
    assert evaluate_coco(subset, path).map50_95 == 1.0


# --------------------------------------------------------------------------- ultralytics-style AP


def test_yolo_ap_perfect_detector():
    boxes = torch.tensor([[10.0, 10.0, 50.0, 50.0], [60.0, 60.0, 100.0, 120.0]])
    classes = torch.tensor([0.0, 1.0])
    predictions = torch.cat([boxes, torch.tensor([[0.9], [0.8]]), classes[:, None]], dim=1)  # [2, 6]
    result = evaluate_yolo_ap([predictions], [boxes], [classes])
    # Not 1.0: ultralytics' envelope drops to 0 at recall 1 itself (mrec ends 1, 1, 1 with mpre 0),
    # so the 101-point trapezoid loses half a step: 1 - 0.01 / 2 = 0.995.
    np.testing.assert_allclose(result["ap"], np.full((2, 10), 0.995), rtol=0, atol=1e-15)
    assert result["map50_95"] == pytest.approx(0.995, abs=1e-15)
    # the reference's 8.0.197 arithmetic has the same cap; closed at recall 1 it is exactly 1
    np.testing.assert_allclose(result["reference_ap"], np.full((2, 10), 0.995), rtol=0, atol=1e-15)
    assert (result["closed_ap"] == 1.0).all() and result["closed_map50_95"] == 1.0
    assert (result["precision"], result["recall"]) == (1.0, 1.0)
    assert result["class_index"].tolist() == [0, 1]


def test_yolo_ap_by_hand(tmp_path):
    # One class, two labels; predictions by score: exact hit (TP), a miss (FP), IoU 0.68 hit.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    classes = torch.tensor([0, 0])
    predictions = torch.tensor([
        [50.0, 50.0, 60.0, 60.0, 0.8, 0.0],
        [20.0, 20.0, 30.0, 26.8, 0.7, 0.0],  # IoU 68/100
        [0.0, 0.0, 10.0, 10.0, 0.9, 0.0],
        [0.0, 0.0, 10.0, 10.0, 0.6, 3.0],  # a class without labels: not in the mean
    ])
    tp, scores, _ = match_image(predictions, boxes, classes)
    assert scores.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6])
    assert tp.astype(int).tolist() == [[1] * 10, [0] * 10, [1] * 4 + [0] * 6, [0] * 10]
    result = evaluate_yolo_ap([predictions], [boxes], [classes])
    # IoU 0.50-0.65: recall 0.5, 0.5, 1 / precision 1, 1/2, 2/3 -> envelope 1 on [0, 0.5), 2/3 on
    # [0.5, 1), 0 at 1; trapezoid: 49 * 0.01 + (1 + 2/3) / 2 * 0.01 + 49 * 2/3 * 0.01 + (2/3) / 2 * 0.01.
    ap_low = 0.49 + 1 / 120 + 0.98 / 3 + 1 / 300
    # IoU 0.70-0.95: only the first hit: envelope 1 on [0, 0.5), 0 from 0.5: 0.49 + 0.5 * 0.01.
    ap_high = 0.495
    np.testing.assert_allclose(result["ap"][0], [ap_low] * 4 + [ap_high] * 6, rtol=0, atol=1e-12)
    assert result["class_index"].tolist() == [0]
    assert result["map50"] == pytest.approx(ap_low, abs=1e-12)
    assert result["map50_95"] == pytest.approx((4 * ap_low + 6 * ap_high) / 10, abs=1e-12)
    assert result["precision"] == pytest.approx(2 / 3) and result["recall"] == pytest.approx(1.0)
    # The reference's 8.0.197 arithmetic closes the curve with one sentinel at (1, 0): at IoU 0.70-0.95 the
    # envelope falls linearly from 1/3 (recall 0.5, precision after the third prediction) to 0 at recall 1:
    # 0.49 + (1 + 1/3) / 2 * 0.01 + 0.5 * (1/3) / 2. At IoU 0.50-0.65 recall reaches 1, so both versions agree;
    # closed at recall 1 the last step keeps the envelope's 2/3 instead of the sentinel's 0.
    ref_high = 0.49 + 0.02 / 3 + 1 / 12
    np.testing.assert_allclose(result["reference_ap"][0], [ap_low] * 4 + [ref_high] * 6, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result["closed_ap"][0], [ap_low + 1 / 300] * 4 + [ref_high] * 6, rtol=0, atol=1e-12)

    path = plot_pr_curve(result["recall_grid"], result["precision_curve"], ["thing"], tmp_path / "pr.png",
                         ap50=result["ap50"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_yolo_ap_without_predictions():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    result = evaluate_yolo_ap([torch.zeros(0, 6)], [boxes], [torch.tensor([2])])
    assert (result["map50_95"], result["map50"], result["precision"], result["recall"]) == (0.0, 0.0, 0.0, 0.0)
    empty = evaluate_yolo_ap([torch.zeros(0, 6)], [torch.zeros(0, 4)], [torch.zeros(0)])
    assert empty["map50_95"] == 0.0 and empty["class_index"].shape == (0,)


def test_reference_ap_loop_matches_ultralytics_with_its_own_sentinels(monkeypatch):
    """The per-class loop of reference_ap_per_class (sort, cumulative sums, recall with eps) is ultralytics':
    with the installed compute_ap in place of the 8.0.197 one it gives the installed ap_per_class bit for bit;
    and closed_end changes only the classes and thresholds whose curve reaches recall 1."""
    from ultralytics.utils.metrics import compute_ap

    from spikeyolo._ultralytics import ops
    from spikeyolo.evaluation import ap as ap_module

    rng = np.random.default_rng(3)
    pred_classes = rng.integers(0, 4, 160).astype(np.float64)
    conf = rng.random(160)
    tp = rng.random((160, 10)) < np.linspace(0.5, 0.1, 10)    # about 20 -> 4 true positives per class
    tp[pred_classes == 1, 1] = tp[pred_classes == 1, 0]
    labels = {0: 30, 1: int(tp[pred_classes == 1, 0].sum()), 2: 30, 3: 30, 4: 5}   # class 1: full recall at IoU
    targets = np.repeat(np.array(list(labels), np.float64), list(labels.values()))   # 0.50 and 0.55; 4: no preds
    installed = ops.ap_per_class(tp, conf, pred_classes, targets)["ap"]
    reference_classes, reference, closed = ap_module.reference_ap_per_class(tp, conf, pred_classes, targets)
    with monkeypatch.context() as patch:
        patch.setattr(ap_module, "interpolated_ap", lambda r, p, closed_end=False: compute_ap(r, p)[0])
        _, emulated, _ = ap_module.reference_ap_per_class(tp, conf, pred_classes, targets)
    np.testing.assert_array_equal(emulated, installed)
    assert reference_classes.tolist() == [0, 1, 2, 3, 4] and (reference[4] == 0).all()
    full = np.array([[tp[pred_classes == cls, j].sum() >= count for j in range(10)] for cls, count in labels.items()])
    assert full[1, :2].all() and full.sum() == 2
    assert (reference > installed + 1e-3)[~full & (reference > 0)].all()   # the linear tail below full recall
    np.testing.assert_array_equal(closed[~full], reference[~full])
    assert (closed[full] > reference[full]).all() and (closed[full] - reference[full] <= 0.005 + 1e-12).all()


def _letterbox_case(seed: int = 5):
    """Two images letterboxed to 160x160, labels on and off the image border and detections around them, some
    reaching past the image into the padding and beyond: (network-frame detections per image [N, 6] float32,
    labels per image (class [M], xyxy [M, 4] original pixels), original shapes, ratio_pads)."""
    rng = np.random.default_rng(seed)
    shapes = [(100, 160), (150, 90)]
    labels = [(np.array([0, 1, 0, 2]), np.array([[0, 20, 30, 60], [120, 0, 160, 40], [50, 50, 90, 80],
                                                 [10, 70, 70, 100]], np.float64)),
              (np.array([1, 1, 2]), np.array([[0, 0, 40, 50], [60, 90, 90, 150], [20, 60, 50, 100]], np.float64))]
    detections, ratio_pads = [], []
    for (classes, boxes), shape in zip(labels, shapes):
        ratio_pad = letterbox_ratio_pad(shape, (160, 160))
        (gain_h, gain_w), (pad_w, pad_h) = ratio_pad
        rows = []
        for cls, box in zip(classes, boxes):
            size = np.tile(box[2:] - box[:2], 2)
            for _ in range(4):                              # jittered copies, some reaching outside the image
                jitter = rng.normal(0, 0.25, 4) * size
                rows.append([*(box + jitter), rng.random(), cls if rng.random() < 0.8 else rng.integers(0, 3)])
        rows.append([-40, 20, 30, 60, 0.95, 0] if shape == (100, 160) else [-20, -30, 40, 50, 0.9, 1])   # IoU < 0.5
        rows = np.array(rows, np.float64)                    # unclipped; 1.0 clipped
        rows = rows[np.argsort(-rows[:, 4], kind="stable")]  # by descending score, as NMS gives them
        gain, pad = np.array([gain_w, gain_h] * 2), np.array([pad_w, pad_h] * 2)
        rows[:, :4] = rows[:, :4] * gain + pad              # original -> network-input pixels
        detections.append(torch.tensor(rows, dtype=torch.float32))
        ratio_pads.append(ratio_pad)
    return detections, labels, shapes, ratio_pads


def test_yolo_ap_equals_ultralytics_detection_validator(tmp_path):
    """Same detections, same labels: spikeyolo's ultralytics protocol (score_yolo_ap on a pass as engine.predict
    builds it) gives what ultralytics 8.4's DetectionValidator gives through update_metrics and get_stats, which
    match the boxes unclipped in the padded frame; matching the clipped boxes reads higher (issue 25)."""
    from spikeyolo._ultralytics import env  # noqa: F401  (offline environment before ultralytics)
    from ultralytics.models.yolo.detect.val import DetectionValidator

    from spikeyolo.evaluation import clip_boxes, score_yolo_ap

    detections, labels, shapes, ratio_pads = _letterbox_case()
    names = {0: "a", 1: "b", 2: "c"}
    validator = DetectionValidator(save_dir=tmp_path, args={"plots": False, "save_json": False})
    validator.device, validator.names, validator.nc, validator.seen = torch.device("cpu"), names, 3, 0
    validator.is_custom_json = validator.build_gdict = False
    validator.metrics.names = names
    validator.metrics.clear_stats()
    batch_idx, classes, boxes = [], [], []
    for index, ((cls, xyxy), ratio_pad) in enumerate(zip(labels, ratio_pads)):
        (gain_h, gain_w), (pad_w, pad_h) = ratio_pad
        net = xyxy * np.array([gain_w, gain_h] * 2) + np.array([pad_w, pad_h] * 2)   # [M, 4] network pixels
        # [M, 4] xyxy -> normalised cx cy w h of the 160x160 input, as the letterboxed dataset gives them
        boxes.append(np.concatenate(((net[:, :2] + net[:, 2:]) / 2, net[:, 2:] - net[:, :2]), 1) / 160)
        batch_idx.append(np.full(len(cls), index))
        classes.append(cls)
    batch = {"img": torch.zeros(2, 3, 160, 160), "batch_idx": torch.tensor(np.concatenate(batch_idx)),
             "cls": torch.tensor(np.concatenate(classes), dtype=torch.float32)[:, None],
             "bboxes": torch.tensor(np.concatenate(boxes), dtype=torch.float32), "ori_shape": shapes,
             "ratio_pad": ratio_pads, "im_file": ["a.jpg", "b.jpg"]}
    validator.update_metrics([{"bboxes": d[:, :4], "conf": d[:, 4], "cls": d[:, 5], "extra": d[:, 6:]}
                              for d in detections], batch)
    theirs = validator.get_stats()

    unclipped = [unletterbox_boxes(d[:, :4], ratio_pad) for d, ratio_pad in zip(detections, ratio_pads)]
    clipped = [torch.cat((clip_boxes(b, shape), d[:, 4:6].double()), 1)
               for b, d, shape in zip(unclipped, detections, shapes)]
    gt_boxes = [torch.tensor(np.concatenate(((xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]), 1)
                             / np.array([shape[1], shape[0]] * 2)) for (_, xyxy), shape in zip(labels, shapes)]
    predictions = Predictions(detections=clipped, im_files=["a.jpg", "b.jpg"], shapes=shapes, gt_boxes=gt_boxes,
                              gt_classes=[torch.tensor(cls) for cls, _ in labels], unclipped_boxes=unclipped)
    ours = score_yolo_ap(predictions).metrics
    for mine, key in (("yolo_map50", "mAP50"), ("yolo_map50_95", "mAP50-95"), ("precision", "precision"),
                      ("recall", "recall")):
        assert ours[mine] == pytest.approx(theirs[f"metrics/{key}(B)"], abs=1e-12), mine
    assert 0.2 < ours["yolo_map50"] < 0.9
    old = evaluate_yolo_ap(clipped, predictions.gt_xyxy(), predictions.gt_classes)     # matching clipped boxes
    assert old["map50"] > ours["yolo_map50"] + 0.01 and old["map50_95"] > ours["yolo_map50_95"]
    # the reference's (8.0.197) matching clips, as its validator's scale_boxes does: unchanged by the unclipped boxes
    assert ours["reference_map50"] == old["reference_map50"]


def test_nms_keeps_every_image_when_slow(monkeypatch):
    """ultralytics' NMS gives up after 2 s + 0.05 s per image and returns nothing for the rest of the batch; the
    adapter's has no limit: with a clock that jumps 100 s per reading every image keeps its boxes."""
    from ultralytics.utils import nms as ul_nms

    from spikeyolo._ultralytics.ops import non_max_suppression

    prediction = torch.zeros(4, 4 + 2, 3)                   # [B, 4 + C, A]: one box per image, class 1
    prediction[:, :4, 0] = torch.tensor([20.0, 20.0, 10.0, 10.0])
    prediction[:, 5, 0] = torch.tensor([0.9, 0.8, 0.7, 0.6])
    clock = iter(range(0, 10_000, 100))
    monkeypatch.setattr(ul_nms, "time", type("SlowClock", (), {"time": staticmethod(lambda: float(next(clock)))}))
    raw = ul_nms.non_max_suppression(prediction, 0.001, 0.7, multi_label=True)
    assert [len(image) for image in raw] == [1, 0, 0, 0]     # the limit bites on this clock
    kept = non_max_suppression(prediction)
    assert [len(image) for image in kept] == [1, 1, 1, 1]
    assert [round(float(image[0, 4]), 6) for image in kept] == [0.9, 0.8, 0.7, 0.6]


# --------------------------------------------------------------------------- evaluators of one pass


def _perfect_pass(boxes_by_image: list[list[list[float]]], shapes: list[tuple[int, int]], files: list[str],
                  **extra) -> Predictions:
    """A pass whose detections are its ground truth: boxes per image as (x, y, w, h, class index) in pixels."""
    gt_boxes, gt_classes = [], []
    for rows, (height, width) in zip(boxes_by_image, shapes):
        rows = torch.tensor(rows, dtype=torch.float64).reshape(-1, 5)
        scale = torch.tensor([width, height, width, height], dtype=torch.float64)
        gt_boxes.append(torch.cat((rows[:, :2] + rows[:, 2:4] / 2, rows[:, 2:4]), 1) / scale)   # cx cy w h
        gt_classes.append(rows[:, 4].long())
    predictions = Predictions(detections=[], im_files=files, shapes=shapes, gt_boxes=gt_boxes,
                              gt_classes=gt_classes, **extra)
    predictions.detections = [torch.cat((xyxy, torch.ones(len(xyxy), 1, dtype=torch.float64),
                                         classes[:, None].double()), 1)
                              for xyxy, classes in zip(predictions.gt_xyxy(), gt_classes)]
    return predictions


def test_coco_evaluator_scores_a_pass_against_the_dataset_json_or_its_labels(gt_dataset, tmp_path):
    category_ids = sorted(category["id"] for category in gt_dataset["categories"])
    names = [category["name"] for category in sorted(gt_dataset["categories"], key=lambda c: c["id"])]
    class_index = {category_id: index for index, category_id in enumerate(category_ids)}
    images = gt_dataset["images"][:20]
    subset = dict(gt_dataset, images=images, annotations=[a for a in gt_dataset["annotations"]
                                                          if a["image_id"] in {i["id"] for i in images}])
    (tmp_path / "val.json").write_text(json.dumps(subset))
    predictions = _perfect_pass([[[*a["bbox"], class_index[a["category_id"]]] for a in subset["annotations"]
                                  if a["image_id"] == image["id"]] for image in images],
                                [(image["height"], image["width"]) for image in images],
                                [f"/images/val/{image['file_name']}" for image in images])
    spec = DatasetSpec(name="fixture", source="yolo", root=tmp_path, train=[], val=[], names=names,
                       category_ids=category_ids, val_json=tmp_path / "val.json")
    score = score_coco(predictions, spec)
    assert score.metrics["map50_95"] == score.result.map50_95 == 1.0 and set(score.metrics) == set(STAT_NAMES)
    assert len(score.records) == len(subset["annotations"])
    assert {r["image_id"] for r in score.records} <= {image["id"] for image in images}   # ids from the json
    # no json: a COCO ground truth from the labels the pass read (image ids 0..S-1, annotation ids from 1)
    built = coco_gt_from_labels(predictions, category_ids, names)
    first = next(a for a in subset["annotations"] if a["image_id"] == images[0]["id"])
    assert built["images"][0] == {"id": 0, "file_name": images[0]["file_name"], "height": images[0]["height"],
                                  "width": images[0]["width"]}
    np.testing.assert_allclose(built["annotations"][0]["bbox"], first["bbox"], rtol=0, atol=1e-9)
    assert built["annotations"][0]["id"] == 1 and built["annotations"][0]["category_id"] == first["category_id"]
    assert score_coco(predictions, replace(spec, val_json=None)).metrics["map50_95"] == 1.0


def test_registry_scores_one_pass_every_way_named():
    predictions = _perfect_pass([[[10, 10, 40, 40, 0], [60, 20, 30, 50, 1]], [[5, 5, 20, 20, 1]]],
                                [(120, 160), (100, 100)], ["a.jpg", "b.jpg"],
                                firing={"layers.3.neuron": 0.5, "group/neck": 0.25, "group/all": 0.3})
    spec = DatasetSpec(name="two", source="yolo", root=Path("."), train=[], val=[], names=["p", "q"])
    metrics, scores = run_evaluators(["coco", "yolo_ap", "firing"], predictions, spec)
    assert list(scores) == ["coco", "yolo_ap", "firing"] and list(DEFAULT_EVALUATORS) == list(scores)
    assert metrics["map50_95"] == 1.0 and metrics["ar100"] == 1.0
    # a perfect detector: 0.995 with either version's closing sentinel (test_yolo_ap_perfect_detector)
    assert metrics["yolo_map50"] == pytest.approx(0.995) and metrics["reference_map50_95"] == pytest.approx(0.995)
    assert (metrics["precision"], metrics["recall"]) == (pytest.approx(1.0), pytest.approx(1.0))
    assert {k: v for k, v in metrics.items() if k.startswith("firing/")} == {"firing/neck": 0.25, "firing/all": 0.3}
    assert run_evaluators(None, predictions, spec)[0] == metrics
    assert flat_evaluators(["coco", "spikeyolo", "firing", "cordone"]) == ["coco", "firing"]
    assert flat_evaluators(None) == list(DEFAULT_EVALUATORS)
    with pytest.raises(ValueError, match="unknown evaluator 'nope'; expected one of coco, yolo_ap, firing, "
                                         "spikeyolo, prophesee, cordone"):
        run_evaluators(["coco", "nope"], predictions, spec)
    with pytest.raises(ValueError, match="registered already"):
        register_evaluator(Evaluator("coco", score_coco))
    with pytest.raises(ValueError, match="scores Gen1 samples"):
        run_evaluators(["cordone"], predictions, spec)


def test_gen1_protocols_go_under_protocols():
    box = (600_000, 40.0, 50.0, 60.0, 40.0, 0, 1.0, 7)
    sample = Gen1Sample("rec", 600_000, np.array([box], dtype=BOX_DTYPE), 1000, 304, 240)
    gt = protocol_ground_truth("spikeyolo", sample)
    predictions = Predictions(detections=[torch.tensor([[40.0, 50.0, 100.0, 90.0, 0.9, 0.0]], dtype=torch.float64)],
                              im_files=[sample.im_file], shapes=[(240, 304)], gt_boxes=[torch.zeros(0, 4)],
                              gt_classes=[torch.zeros(0, dtype=torch.int64)], samples=[sample])
    spec = DatasetSpec(name="gen1", source="gen1", root=Path("."), train=[], val=[], names=["car", "pedestrian"])
    metrics, _ = run_evaluators(["spikeyolo", "prophesee", "cordone"], predictions, spec)
    assert list(metrics) == ["protocols"] and list(metrics["protocols"]) == ["spikeyolo", "prophesee", "cordone"]
    assert len(gt) == 1 and all(m["map50"] == pytest.approx(1.0) and m["images"] == 1
                                for m in metrics["protocols"].values())
