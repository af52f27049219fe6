"""The 1 Megapixel dataset ("Gen4", GitHub issue #17): the real 1280x720 fixture through the dataset code, RVT's label
clean-up and frames, the prophesee_gen4 protocol at its filter boundaries, and tiny synthetic 1Mpx recordings
through spikeyolo-train, spikeyolo-eval, spikeyolo-predict and spikeyolo-energy.

The settings checked here are cited in docs/events.md ("The 1 Megapixel dataset"): the toolbox's
``filter_boxes`` defaults (skip 0.5 s, diagonal 60, side 20 at 1280x720), RVT's evaluation at 640x360 (boxes and
thresholds halved), RVT's ground truth (classes 0-2, crop to [0, W - 1], sides >= 5, training widths <= 1152) and
its ~10 Hz frames.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import zlib

import numpy as np
import pytest
import torch

import spikeyolo
from spikeyolo.data import dataloader_from_config, spec_from_config
from spikeyolo.data.events import BOX_DTYPE, read_boxes, read_dat, read_dat_header, write_boxes
from spikeyolo.data.events.synthetic import GEN4_SCENE, write_recording
from spikeyolo.data.sources.prophesee import (GEN4, EventSample, PropheseeDataset, Representation, postprocess_boxes,
                                              rvt_frame_times)
from spikeyolo.errors import DatasetError
from spikeyolo.evaluation.coco import STAT_NAMES
from spikeyolo.evaluation.gen1 import GEN4_PROTOCOLS, evaluate_gen1, protocol_ground_truth, score_gen1
from spikeyolo.structures import Predictions
from tests.conftest import FIXTURES

EXPECTED = json.loads((FIXTURES / "events" / "expected.json").read_text())["gen4_truncated.dat"]
NAMES = ("pedestrian", "two-wheeler", "car")


def _boxes(rows) -> np.ndarray:
    """BOX_DTYPE from (t, x, y, w, h, class_id, track_id) rows."""
    return np.array([(t, x, y, w, h, c, 1.0, k) for t, x, y, w, h, c, k in rows], dtype=BOX_DTYPE)


# --------------------------------------------------------------------------- the real 1Mpx fixture


@pytest.fixture
def real_split(tmp_path, monkeypatch):
    """tests/fixtures/events/gen4_truncated.dat as a one-recording split with labels at 60 Hz from 0.1 s."""
    monkeypatch.setenv("SPIKEYOLO_CACHE", str(tmp_path / "cache"))
    split = tmp_path / "gen4" / "test"
    split.mkdir(parents=True)
    shutil.copy(FIXTURES / "events" / "gen4_truncated.dat", split / "rec_td.dat")
    times = 100_000 + 16_667 * np.arange(67)                       # 60 Hz, 0.1 s to 1.2 s
    rows = [(t, 400.0, 200.0, 120.0, 90.0, 2, 1) for t in times] + \
        [(t, 900.0, 300.0, 300.0, 200.0, 3, 2) for t in times]      # a truck: dropped with the other classes 3-6
    write_boxes(split / "rec_bbox.npy", _boxes(sorted(rows)))
    return split


def test_the_real_fixture_reads_through_the_dataset_code(real_split):
    header = read_dat_header(real_split / "rec_td.dat")
    assert (header.width, header.height, header.event_type, header.num_events) == \
        (EXPECTED["width"], EXPECTED["height"], EXPECTED["event_type_byte"], EXPECTED["num_events"])
    # one window over the whole recording, full size, one slice: the histogram holds every fact of expected.json
    window = Representation("histogram", time_steps=1, window_us=EXPECTED["t_last_us"] + 1)
    counts, num = window.encode_file(real_split / "rec_td.dat", EXPECTED["t_last_us"] + 1, 1280, 720,
                                     chunk_events=50_000)                       # 8 chunks
    counts = counts[0].astype(np.int64)                                          # [2, 720, 1280]
    assert num == EXPECTED["num_events"] and counts.max() < 255                  # (no pixel saturates)
    assert [int(counts[p].sum()) for p in (0, 1)] == [EXPECTED["polarity_counts"][p] for p in ("0", "1")]
    per_pixel = counts.sum(0)
    assert int((per_pixel * np.arange(1280)[None, :]).sum()) == EXPECTED["sum_x"]
    assert int((per_pixel * np.arange(720)[:, None]).sum()) == EXPECTED["sum_y"]

    # the configured gen4 pipeline: RVT's frames every ~100 ms from 0.1 s, classes 3-6 dropped, 640x360 tensors
    data = spikeyolo.compose(["data=gen4", f"data.root={real_split.parent}", "data.val_split=test",
                              "data.preprocess_workers=1"], config_name="eval").data
    spec = spec_from_config(data)
    assert (spec.source, spec.names) == ("gen4", list(NAMES))
    loader = dataloader_from_config(spec, data, "val", 4, 0, stride=32, device="cpu", time_steps=2, imgsz=640,
                                    progress=False)
    samples = loader.dataset.samples
    assert [s.t_us for s in samples] == [100_000 + 100_002 * k for k in range(12)]
    assert all(len(s.boxes) == 2 and s.labels["class_id"].tolist() == [2] for s in samples)
    events = read_dat(real_split / "rec_td.dat")
    assert [s.num_events for s in samples] == [int(((events["t"] >= s.t_us - 250_000) & (events["t"] < s.t_us)).sum())
                                               for s in samples]
    assert sum(s.num_events for s in samples[-3:]) > 0 and loader.dataset.frames(0).shape == (2, 1, 360, 640)
    batch = next(iter(loader))
    assert batch["img"].shape == (4, 2, 3, 384, 640)           # 640x360 padded at the bottom to 384 (stride 32)
    assert batch["ori_shape"][0] == (720, 1280) and batch["ratio_pad"][0] == ((0.5, 0.5), (0, 0))
    assert (batch["img"][:, :, :, 360:] == 114).all()
    # the car at (400, 200, 120, 90) in the 640x384 input: centre (460, 245) / 2, normalised
    np.testing.assert_allclose(batch["bboxes"][0].numpy(), [230 / 640, 122.5 / 384, 60 / 640, 45 / 384], rtol=1e-6)


def test_downsampling_is_rvts_nearest_exact_resize_and_chunks_do_not_change_the_tensor():
    events = read_dat(FIXTURES / "events" / "gen4_truncated.dat", 600_000, 900_000)
    for kind in ("histogram", "spikeyolo"):
        full = Representation(kind, time_steps=2, window_us=300_000).encode(events, 900_000, 1280, 720)
        # RVT: torch interpolate(scale_factor=0.5, mode="nearest-exact") of the full-size tensor
        rvt = torch.nn.functional.interpolate(torch.from_numpy(full), scale_factor=0.5, mode="nearest-exact").numpy()
        half = Representation(kind, time_steps=2, window_us=300_000, downsample=2)
        np.testing.assert_array_equal(half.encode(events, 900_000, 1280, 720), rvt)
        chunks = [events[i:i + 7_000] for i in range(0, len(events), 7_000)]
        np.testing.assert_array_equal(half.encode_chunks(chunks, 900_000, 1280, 720)[0], rvt)
    pooled = Representation("histogram", time_steps=1, window_us=300_000, downsample=2, downsample_mode="sum")
    assert int(pooled.encode(events, 900_000, 1280, 720).astype(np.int64).sum()) == len(events)
    voxel = Representation("voxel", time_steps=2, window_us=300_000, voxel_bins=3)
    one = voxel.encode(events, 900_000, 1280, 720).astype(int)
    many = voxel.encode_chunks([events[i:i + 5_000] for i in range(0, len(events), 5_000)], 900_000, 1280, 720)[0]
    assert np.abs(one - many.astype(int)).max() <= 1        # float32 partial sums (docs/events.md)
    assert Representation(downsample=2).key() != Representation().key() and "_ds2nearest_" in \
        Representation(downsample=2).key()


# --------------------------------------------------------------------------- RVT's labels and frames


def test_rvt_label_clean_up_at_its_boundaries():
    rows = [(1, 1270, 10, 40, 40, 2, 1),       # cropped at x = 1279 (W - 1): w = 9
            (1, -10, 700, 30, 40, 0, 2),       # cropped at x = 0 and y = 719: w = 20, h = 19
            (1, 10, 10, 5, 5, 1, 3),           # sides 5: kept (>= 5)
            (1, 10, 10, 4.99, 50, 1, 4),       # side 4.99: dropped
            (1, 10, 10, 1152, 50, 2, 5),       # width 1152 = (9 * 1280) // 10: kept in training
            (1, 10, 10, 1152.5, 50, 2, 6),     # wider: dropped in training only
            (1, 10, 10, 50, 50, 2, 5)]         # same track again: RVT keeps both
    boxes = _boxes(rows)
    kept = postprocess_boxes(boxes, width=1280, height=720, clamp="rvt", min_size=5)
    assert kept["track_id"].tolist() == [1, 2, 3, 5, 6, 5]
    np.testing.assert_array_equal(kept[["x", "y", "w", "h"]][:2].tolist(), [(1270, 10, 9, 40), (0, 700, 20, 19)])
    train = postprocess_boxes(boxes, width=1280, height=720, clamp="rvt", min_size=5, max_width=1152)
    assert train["track_id"].tolist() == [1, 2, 3, 5, 5]


def test_rvt_frame_times():
    times = 50_000 + 16_667 * np.arange(40)                               # 60 Hz from 50 ms to 700,013
    # the first time >= 100 ms (100,001), then every 6 medians (100,002 µs)
    assert rvt_frame_times(times).tolist() == [100_001 + 100_002 * k for k in range(7)]
    thirty = 100_000 + 33_333 * np.arange(10)                             # 30 Hz: 3 medians (99,999 µs)
    assert rvt_frame_times(thirty).tolist() == [100_000, 199_999, 299_998, 399_997]
    # 2 ms of jitter accepted, not more (L382)
    shifted = np.array([100_000, 116_667, 133_334, 150_001, 166_668, 183_335, 202_002, 218_669])
    assert rvt_frame_times(shifted).tolist() == [100_000, 202_002]        # 2,000 past: a frame
    late = np.array([100_000, 116_667, 133_334, 150_001, 166_668, 183_335, 202_003, 218_670])
    assert rvt_frame_times(late).tolist() == [100_000]                    # 2,001 past: not a frame
    assert rvt_frame_times(np.array([20_000, 60_000])).tolist() == []      # nothing at or after 100 ms
    with pytest.raises(DatasetError, match="labels at 20 Hz"):
        rvt_frame_times(np.arange(10) * 50_000)


def test_rvt_frame_times_refuses_what_rvt_asserts():
    """RVT asserts frames more than 98 ms apart (L401-402) and a frame at least one base step on (L383): one-line
    DatasetErrors naming the label file. At 60 Hz with a median of 16,666 µs the base step is 99,996 µs, so a
    time 97,996-98,000 µs after a frame is within the 2 ms of jitter and yet 98 ms or closer."""
    times = 100_000 + 16_666 * np.arange(12)
    for gap, frames in ((98_001, [100_000, 198_001]), (99_996, [100_000, 199_996])):
        moved = np.sort(np.concatenate((times[times != 199_996], [100_000 + gap])))
        assert rvt_frame_times(moved, source="rec_bbox.npy").tolist() == frames
    short = np.sort(np.concatenate((times[times != 199_996], [198_000])))
    with pytest.raises(DatasetError, match=r"^rec_bbox.npy: label frames at 100000 and 198000 µs are 98000 µs apart"
                                           r" .*more than 98 ms: set data.sample_times=all$"):
        rvt_frame_times(short, source="rec_bbox.npy")
    close = np.sort(np.concatenate((times, [101_000])))      # within 2 ms of the first frame: 0 base steps on
    with pytest.raises(DatasetError, match="^rec_bbox.npy: label frames at 100000 and 101000 µs are 1000 µs apart"):
        rvt_frame_times(close, source="rec_bbox.npy")


# --------------------------------------------------------------------------- the prophesee_gen4 protocol


def _perfect(protocol: str, samples: list[EventSample]) -> list[torch.Tensor]:
    """Detections equal to the spikeyolo_gen4 ground truth (sensor pixels), score 1."""
    out = []
    for sample in samples:
        gt = protocol_ground_truth("spikeyolo_gen4", sample)
        xyxy = np.stack((gt["x"], gt["y"], gt["x"] + gt["w"], gt["y"] + gt["h"]), axis=1).reshape(-1, 4)
        out.append(torch.from_numpy(np.concatenate((xyxy, np.ones((len(gt), 1)), gt["class_id"][:, None]), 1)))
    return out


def _kept(t_us: int, w: float, h: float) -> int:
    """How many ground-truth boxes prophesee_gen4 scores for one (t, w x h) box (and its perfect detection)."""
    sample = EventSample("rec", t_us, _boxes([(t_us, 100.0, 100.0, w, h, 0, 1)]), 1000, 1280, 720)
    result = evaluate_gen1("prophesee_gen4", [sample], _perfect("prophesee_gen4", [sample]), NAMES)
    assert result["detections"] == result["gt_boxes"]
    return result["gt_boxes"]


def test_prophesee_gen4_filter_boundaries():
    protocol = GEN4_PROTOCOLS["prophesee_gen4"]
    # the toolbox's filter_boxes defaults (box_filtering.py L23) at 1280x720, evaluated at RVT's 640x360
    assert (protocol.skip_us, protocol.min_diag, protocol.min_side, protocol.scale) == (500_000, 60.0, 20.0, 0.5)
    assert _kept(500_000, 100, 100) == 0 and _kept(500_001, 100, 100) == 1     # skip: t > 0.5 s
    assert _kept(600_000, 36, 48) == 1 and _kept(600_000, 36, 47.99) == 0      # diagonal 60 (halved: 18, 24 -> 30)
    assert _kept(600_000, 20, 80) == 1 and _kept(600_000, 19.99, 80) == 0      # side 20 (halved: 10)
    assert _kept(600_000, 80, 20) == 1 and _kept(600_000, 80, 19.99) == 0
    # halving then filtering at 30 / 10 equals the toolbox's filter at 1280x720 (float32 fields), box by box
    rng = np.random.default_rng(0)
    sizes = np.concatenate([rng.uniform(15, 55, (60, 2)), [[36, 48], [20, 60], [42.426407, 42.426407]]])
    for w, h in sizes.astype(np.float32):
        full = (w ** 2 + h ** 2 >= np.float32(3600)) and w >= 20 and h >= 20
        assert _kept(600_000, float(w), float(h)) == int(full), (w, h)


def test_prophesee_gen4_ground_truth_is_rvts_at_640x360():
    sample = EventSample("rec", 600_000, _boxes([(600_000, 1200, 600, 100, 200, 2, 1), (600_000, 10, 10, 80, 80, 4, 2),
                                                 (600_000, 10, 10, 4, 80, 0, 3)]), 10, 1280, 720)
    gt = protocol_ground_truth("prophesee_gen4", sample)
    # cropped to (1200, 600, 79, 119) at 1279 x 719, halved with the far corner clamped to 639 x 359; the bus
    # (class 4) and the 4 px wide box are not RVT's ground truth
    assert gt[["x", "y", "w", "h", "class_id"]].tolist() == [(600, 300, 39, 59, 2)]
    assert protocol_ground_truth("spikeyolo_gen4", sample)[["x", "y", "w", "h"]].tolist() == [(1200, 600, 79, 119)]
    detections = [torch.tensor([[1200.0, 600.0, 1279.0, 719.0, 0.9, 2.0]])]
    result = evaluate_gen1("prophesee_gen4", [sample], detections, NAMES)
    assert result["images"] == 1 and result["map50"] == pytest.approx(1.0)
    # each frame is scored with its own detections (RVT passes one array per frame): a detection 10 ms later
    # belongs to another frame
    later = EventSample("rec", 610_000, _boxes([]), 10, 1280, 720)
    result = evaluate_gen1("prophesee_gen4", [sample, later], [torch.zeros(0, 6), detections[0]], NAMES)
    assert result["detections"] == 0 and result["map50"] == 0.0


def test_prophesee_gen4_without_a_frame_is_zero_as_rvt():
    """No frame keeps a ground-truth box (all at t <= 0.5 s): RVT's evaluation returns 0.0 (its _coco_eval with
    no detection, coco_eval.py L104-115), not pycocotools' -1; likewise a frame without detections."""
    early = [EventSample("rec", t_us, _boxes([(t_us, 100, 100, 80, 80, 2, 1)]), 10, 1280, 720)
             for t_us in (300_000, 400_000, 500_000)]
    result = evaluate_gen1("prophesee_gen4", early, _perfect("prophesee_gen4", early))
    assert result["images"] == 0 and all(result[name] == 0.0 for name in STAT_NAMES)
    late = [EventSample("rec", 600_000, _boxes([(600_000, 100, 100, 80, 80, 2, 1)]), 10, 1280, 720)]
    result = evaluate_gen1("prophesee_gen4", late, [torch.zeros(0, 6)])
    assert result["images"] == 1 and all(result[name] == 0.0 for name in STAT_NAMES)   # map_small: not -1


def test_gen4_protocols_take_the_cameras_names():
    """Called without names, a Gen4 protocol scores Gen4's three classes (its camera's), not Gen1's two: a car
    (class 2) left undetected halves the mAP, and a detected one scores."""
    sample = EventSample("rec", 600_000, _boxes([(600_000, 100, 100, 80, 80, 0, 1), (600_000, 400, 100, 80, 80, 2, 2)]),
                         10, 1280, 720)
    pedestrian = torch.tensor([[100.0, 100.0, 180.0, 180.0, 0.9, 0.0]])
    car = torch.tensor([[400.0, 100.0, 480.0, 180.0, 0.8, 2.0]])
    assert GEN4_PROTOCOLS["prophesee_gen4"].camera.names == NAMES
    assert evaluate_gen1("prophesee_gen4", [sample], [pedestrian])["map50"] == pytest.approx(0.5)
    assert evaluate_gen1("prophesee_gen4", [sample], [torch.cat((pedestrian, car))])["map50"] == pytest.approx(1.0)
    predictions = Predictions(detections=[pedestrian.double()], im_files=[sample.im_file], shapes=[(720, 1280)],
                              gt_boxes=[torch.zeros(0, 4)], gt_classes=[torch.zeros(0, dtype=torch.int64)],
                              samples=[sample])
    assert score_gen1("prophesee_gen4", predictions).metrics["map50"] == pytest.approx(0.5)
    assert score_gen1("spikeyolo_gen4", predictions).metrics["map50"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- synthetic 1Mpx end to end


@pytest.fixture(scope="module")
def gen4(tmp_path_factory):
    """(dataset root): tiny synthetic 1Mpx recordings (train 2 x 0.9 s, test 1 x 0.9 s) and a private cache.

    Cheaper than GEN4_SCENE: frames every 4 ms, two objects, no trucks (every object is labelled)."""
    root = tmp_path_factory.mktemp("gen4")
    cache = tmp_path_factory.mktemp("cache")
    scene = dataclasses.replace(GEN4_SCENE, frame_period_us=4000, objects_per_second=0.0,
                                classes=GEN4_SCENE.classes[:3])
    for split, count in (("train", 2), ("test", 1)):
        for index in range(count):
            write_recording(root / split, f"synthetic_{split}_{index:04d}", 0.9,
                            (0, zlib.crc32(split.encode()), index), scene)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPIKEYOLO_CACHE", str(cache))
        yield root


@pytest.fixture(scope="module")
def trained(gen4, tmp_path_factory):
    """spikeyolo-train experiment=gen4_synthetic for one epoch (2 steps) on the tiny recordings."""
    from spikeyolo.cli.train import train

    run_dir = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    metrics = train(spikeyolo.compose(["experiment=gen4_synthetic", f"run_dir={run_dir}", "data.synthetic=null",
                                       f"data.root={gen4}", "data.imgsz=64", "data.preprocess_workers=1",
                                       "trainer.epochs=1", "trainer.batch_size=4", "trainer.max_minutes=null",
                                       "trainer.progress=false", "logger=none",
                                       "optim.warmup_min_iters=1"]))
    return run_dir / "weights" / "last.pt", metrics


def test_synthetic_recordings_are_in_the_1mpx_format(gen4):
    dat = gen4 / "test" / "synthetic_test_0000_td.dat"
    header = read_dat_header(dat)
    assert (header.width, header.height, header.event_type) == (1280, 720, 0x0C)
    raw = np.load(gen4 / "test" / "synthetic_test_0000_bbox.npy")
    assert raw.dtype.names == ("t", "x", "y", "w", "h", "class_id", "class_confidence", "track_id")
    assert raw.dtype["t"] == np.dtype("<u8") and raw.dtype["class_id"] == np.dtype("u1")
    times = np.unique(read_boxes(gen4 / "test" / "synthetic_test_0000_bbox.npy")["t"])
    assert np.diff(times).tolist() == [16_667] * (len(times) - 1)          # 60 Hz


def test_train_eval_predict_energy_end_to_end(gen4, trained, tmp_path):
    from spikeyolo.cli.energy import energy
    from spikeyolo.cli.eval import evaluate
    from spikeyolo.cli.predict import predict

    checkpoint, train_metrics = trained
    assert checkpoint.is_file() and np.isfinite(train_metrics["map50_95"])
    cfg = spikeyolo.compose(["data=gen4", f"data.root={gen4}", "data.val_split=test", f"checkpoint={checkpoint}",
                             f"run_dir={tmp_path / 'eval'}", "batch_size=4", "save_json=false"], config_name="eval")
    metrics = evaluate(cfg)
    protocols = metrics["protocols"]
    assert set(protocols) == {"spikeyolo_gen4", "prophesee_gen4"} and cfg.data.imgsz == 64
    assert 1 <= protocols["spikeyolo_gen4"]["images"] <= 4                   # RVT's frames 0.5 .. 0.8 s with a box
    assert protocols["prophesee_gen4"]["images"] <= 3                        # t > 0.5 s, a box kept by the filter
    assert all(np.isfinite(p["map50_95"]) for p in protocols.values())

    events = gen4 / "test" / "synthetic_test_0000_td.dat"
    out = tmp_path / "pred"
    summary = predict(spikeyolo.compose([f"events={events}", f"checkpoint={checkpoint}", "step_us=200000",
                                         "conf=0.0001", "max_det=3", f"out={out}"], config_name="predict"))
    assert summary["windows"] == 5
    boxes = read_boxes(out / "detections.npy")
    assert len(boxes) == summary["detections"] > 0
    assert boxes["x"].min() >= 0 and (boxes["x"] + boxes["w"]).max() <= 1280.5   # sensor pixels of the 1Mpx camera

    total = energy(spikeyolo.compose(["data=gen4", f"data.root={gen4}", "data.val_split=test", "data.imgsz=64",
                                      f"checkpoint={checkpoint}", "num_images=2", f"run_dir={tmp_path / 'energy'}",
                                      "plots=false"], config_name="energy"))
    report = json.loads((tmp_path / "energy" / "energy.json").read_text())
    assert report["num_images"] == 2 and report["time_steps"] == 2
    assert report["info"]["input_shapes"] == [[64, 64]]                      # 64x36 padded to the stride: 64
    assert total["sops"] > 0 and np.isfinite(total["snn_energy_mj"])


def test_a_dataset_of_the_wrong_label_rate_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEYOLO_CACHE", str(tmp_path / "cache"))
    write_recording(tmp_path / "test", "rec", 0.8, 0, dataclasses.replace(GEN4_SCENE, label_period_us=50_000))
    with pytest.raises(DatasetError, match="labels at 20 Hz"):
        PropheseeDataset(tmp_path / "test", NAMES, Representation(), camera=GEN4, other_classes="drop",
                         sample_times="rvt", progress=False)


def test_streaming_prediction_feeds_the_model_what_the_loader_feeds_it(gen4, trained):
    """spikeyolo-predict's window ending at a sample's time is encoded exactly as the val loader encodes that
    sample (RVT's downsampling by 2, the stride-padded input with the padding at the corner, the time order)."""
    from spikeyolo.engine.checkpoint import model_from_payload, read_model_checkpoint, trained_data_config
    from spikeyolo.engine.event_stream import EventSettings, stream_recording
    from spikeyolo.structures import model_input

    checkpoint, _ = trained
    payload = read_model_checkpoint(checkpoint)
    model, data = model_from_payload(payload), trained_data_config(payload)
    data.update(root=str(gen4), val_split="test", synthetic=None, preprocess_workers=1)
    loader = dataloader_from_config(spec_from_config(data), data, "val", batch_size=1, workers=0, device="cpu",
                                    time_steps=model.time_steps)
    item, sample = loader.dataset[0], loader.dataset.samples[0]
    captured = []
    model.layers[0].register_forward_pre_hook(lambda _module, args: captured.append(args[0]))
    settings = EventSettings.of(model, data, int(data["imgsz"]))
    recording = gen4 / "test" / f"{sample.recording}_td.dat"
    window = next(stream_recording(model, recording, settings, [sample.t_us], torch.device("cpu"), conf=0.5))
    assert window.t_us == sample.t_us and len(captured) == 1
    assert torch.equal(captured[0], model_input(item["img"][None]))          # [T, 1, C, 64, 64], bit for bit
