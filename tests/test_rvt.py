"""RVT's preprocessed Gen1 / 1Mpx folders (data.layout=rvt) and RVT's stacked histogram (issue #27), against the
answers of RVT's own code: tests/fixtures/rvt was written by RVT's preprocess_dataset.py from a real Gen4
recording (and a Gen1-size crop of it) and read back by RVT's SequenceForRandomAccess (expected.json;
scripts/make_rvt_fixture.py, tests/fixtures/rvt/PROVENANCE.md)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import spikeyolo
from spikeyolo.data.events import GEN1, GEN4, read_dat, stacked_histogram
from spikeyolo.data.sources.prophesee.encoding import Representation
from spikeyolo.data.sources.prophesee.dataset import PropheseeDataset
from spikeyolo.data.sources.prophesee.rvt import RvtDataset, open_rvt_sequence
from spikeyolo.errors import DatasetError

pytest.importorskip("h5py")
pytest.importorskip("hdf5plugin")

FIXTURE = Path(__file__).parent / "fixtures" / "rvt"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
DAT = Path(__file__).parent / "fixtures" / "events" / "gen4_truncated.dat"
SEQUENCES = sorted(EXPECTED["sequences"])          # gen1/test/fixture_gen1_000, ..., gen4/train/...
CAMERAS = {"gen1": GEN1, "gen4": GEN4}


def sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def rep(camera: str, steps: int) -> Representation:
    """RVT's setting: 50 ms frames, 50 ms apart for 1Mpx (downsampled by 2), 125 ms apart for Gen1."""
    if camera == "gen4":
        return Representation(kind="stacked_histogram", time_steps=steps, window_us=steps * 50_000, downsample=2)
    return Representation(kind="stacked_histogram", time_steps=steps, window_us=steps * 125_000,
                          stack_slice_us=50_000)


def rvt_scaled(boxes: np.ndarray, camera: str) -> np.ndarray:
    """[N, 5] x, y, w, h, class as RVT's ObjectLabels hold them: clamped to the frame, and for 1Mpx scaled by 0.5
    with the far corner clamped to 639 x 359 (labels.py clamp_to_frame_, scale_)."""
    x, y = boxes["x"].astype(np.float32), boxes["y"].astype(np.float32)
    x1, y1 = x + boxes["w"].astype(np.float32), y + boxes["h"].astype(np.float32)
    if camera == "gen4":
        half = np.float32(0.5)
        x1, y1 = np.minimum(x1 * half, np.float32(639)), np.minimum(y1 * half, np.float32(359))
        x, y = x * half, y * half
    return np.stack([x, y, x1 - x, y1 - y, boxes["class_id"].astype(np.float32)], axis=1).astype(np.float64)


def real_events(camera: str) -> np.ndarray:
    """The events RVT's preprocessing read: the real Gen4 recording, or its Gen1-size crop."""
    events = read_dat(DAT)
    if camera == "gen4":
        return events
    x0, y0 = EXPECTED["inputs"]["gen1"]["crop_x0_y0"]
    keep = (events["x"] >= x0) & (events["x"] < x0 + 304) & (events["y"] >= y0) & (events["y"] < y0 + 240)
    events = events[keep].copy()
    events["x"] -= x0
    events["y"] -= y0
    return events


@pytest.mark.parametrize("key", SEQUENCES)
def test_reader_equals_rvts_own_loader(key):
    """Every sample of RVT's SequenceForRandomAccess (sequence_length 1 and 3): the same frames bit for bit, the
    same samples dropped at the start, the same labels (RVT scales 1Mpx labels by 0.5 with its ds2 input)."""
    camera, split, name = key.split("/")
    answers = EXPECTED["sequences"][key]
    for steps, rnd in answers["SequenceForRandomAccess"].items():
        dataset = RvtDataset(FIXTURE / camera / split, list(CAMERAS[camera].names), rep(camera, int(steps)),
                             camera=CAMERAS[camera], other_classes="drop")
        assert len(dataset) == rnd["len"] and len(rnd["samples"]) == rnd["len"]
        for index, answer in enumerate(rnd["samples"]):
            frames = dataset.frames(index)
            assert list(frames.shape) == answer["ev_repr"]["shape"] and sha(frames) == answer["ev_repr"]["sha256"]
            sample = dataset.samples[index]
            last = answer["labels"][-1]
            assert sample.t_us == int(last["rows"][0][0]) == answers["labels_timestamps_us"][answer["objframe_idx"]]
            theirs = np.array(last["rows"], np.float64).reshape(-1, 7)
            np.testing.assert_allclose(rvt_scaled(sample.labels, camera), theirs[:, 1:6], rtol=0, atol=1e-4)
            assert sample.im_file == f"{name}@{sample.t_us}" and (sample.width, sample.height) == (
                CAMERAS[camera].width, CAMERAS[camera].height)


@pytest.mark.parametrize("camera", ["gen1", "gen4"])
def test_stacked_histogram_equals_rvts_preprocessing(camera):
    """RVT's representation computed here from the real events equals the frames RVT's preprocessing wrote: each
    50 ms frame (both ends included, float32 bins, counts cut at 10, the 1Mpx frame at half size by nearest-exact),
    and three stacked frames through Representation (the input spikeyolo-predict streams)."""
    events = real_events(camera)
    answers = EXPECTED["sequences"][f"{camera}/train/fixture_{camera}_000"]
    times = answers["repr_timestamps_us"]
    d = 2 if camera == "gen4" else 1
    cam = CAMERAS[camera]
    for index, t_end in enumerate(times):
        frame = stacked_histogram(events, t_end, time_steps=1, width=cam.width, height=cam.height,
                                  window_us=50_000, downsample=d)[0]
        assert sha(frame) == answers["h5_per_index"][index]["sha256"], (camera, index, t_end)
    three = answers["SequenceForRandomAccess"]["3"]["samples"]
    step = rep(camera, 3).window_us // 3
    checked = 0
    for answer in three:
        end = answer["end_repr_idx"] - 1
        if times[end] - times[end - 2] != 2 * step:     # RVT's grid between jittered labels is not even there
            continue
        clip, count = rep(camera, 3).encode_chunks(np.array_split(events, 5), times[end], cam.width, cam.height)
        assert sha(clip) == answer["ev_repr"]["sha256"] and count > 0
        checked += 1
    assert checked >= 1


def test_training_and_protocols_on_rvt_data(tmp_path, monkeypatch):
    """data.layout=rvt trains the Gen1 setting on RVT's folder and is scored by the Gen1 protocols; a checkpoint so
    trained streams a real .raw through spikeyolo-predict with the same stacked histograms."""
    from spikeyolo.cli.eval import evaluate
    from spikeyolo.cli.predict import predict
    from spikeyolo.engine.trainer import Trainer

    monkeypatch.setenv("SPIKEYOLO_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    overrides = ["experiment=gen1_synthetic", "data=gen1_rvt", f"run_dir={run_dir}", f"data.root={FIXTURE / 'gen1'}",
                 "neuron.time_steps=2", "data.imgsz=64", "trainer.epochs=1",
                 "trainer.batch_size=2", "trainer.max_minutes=null", "trainer.progress=false", "logger=none",
                 "optim.warmup_min_iters=1"]
    cfg = spikeyolo.compose(overrides)
    assert cfg.data.window_us == 250_000 and cfg.data.layout == "rvt"      # 2 frames 125 ms apart
    assert cfg.model.in_chs == 20                                            # the experiment follows data.in_chs
    trainer = Trainer(cfg)
    metrics = trainer.fit()
    assert len(trainer.train_loader.dataset) == 2 and len(trainer.val_loader.dataset) == 3   # RVT's L=2 samples
    assert trainer.train_loader.dataset.cache_stats == {"built": 0, "skipped": 0}
    assert np.isfinite(metrics["map50_95"])
    assert not any((tmp_path / "cache").rglob("*.npz"))                                    # nothing re-encoded
    scores = evaluate(spikeyolo.compose(["data=gen1_rvt", f"data.root={FIXTURE / 'gen1'}", f"run_dir={tmp_path / 'ev'}",
                                         f"checkpoint={run_dir / 'weights' / 'last.pt'}", "save_json=false"],
                                        config_name="eval"))
    assert set(scores["protocols"]) == {"spikeyolo", "prophesee", "cordone"}
    assert all(np.isfinite(score["map50"]) for score in scores["protocols"].values())
    # a damaged RVT folder through the command: one line, exit 2, no run folder
    broken = tmp_path / "broken"
    shutil.copytree(FIXTURE / "gen1", broken)
    stamps = next(broken.glob("test/*/event_representations_v2/*/timestamps_us.npy"))
    stamps.write_bytes(stamps.read_bytes()[:-8])
    with pytest.raises(SystemExit) as exit_info:
        evaluate(spikeyolo.compose(["data=gen1_rvt", f"data.root={broken}", f"run_dir={tmp_path / 'ev2'}",
                                    f"checkpoint={run_dir / 'weights' / 'last.pt'}"], config_name="eval"))
    assert exit_info.value.code == 2 and not (tmp_path / "ev2").exists()
    # the real events RVT preprocessed, as RVT's event download stores them (<name>_td.dat.h5), streamed: the
    # windows are the same stacked histograms as RVT's frames
    import h5py
    import hdf5plugin
    from PIL import Image

    events = real_events("gen1")
    recording = tmp_path / "fixture_gen1_000_td.dat.h5"
    with h5py.File(recording, "w") as handle:
        group = handle.create_group("events")
        for key in "txyp":
            group.create_dataset(key, data=events[key], chunks=True, **hdf5plugin.Blosc(cname="zstd", clevel=1))
        group["width"], group["height"] = 304, 240
    out = tmp_path / "pred"
    summary = predict(spikeyolo.compose([
        f"source={recording}", f"checkpoint={run_dir / 'weights' / 'last.pt'}", "conf=0.0001", "step_us=250000",
        "video=true", "video_max_frames=2", "progress=false", f"run_dir={out}"], config_name="predict"))
    payload = json.loads((out / "detections.json").read_text())
    assert summary["windows"] == len(payload["windows"]) > 1 and payload["sensor"] == [304, 240]
    assert payload["format"] == "hdf5" and sum(window["num_events"] for window in payload["windows"]) > 0
    with Image.open(out / "detections.gif") as gif:
        assert gif.size == (304, 240) and gif.n_frames == 2


def test_bad_rvt_folders_give_one_line(tmp_path):
    """A folder of another representation, a wrong T x dt, a hostile .npy header, a label file out of order and a
    dataset of the wrong shape each give one DatasetError line; nothing is written."""
    source = FIXTURE / "gen1" / "test" / "fixture_gen1_000"
    seq = tmp_path / "split" / "seq"
    shutil.copytree(source, seq)
    repr_dir = seq / "event_representations_v2" / "stacked_histogram_dt=50_nbins=10"
    shutil.copy(repr_dir / "event_representations.h5", repr_dir / "event_representations_ds2_nearest.h5")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    cases = []
    good = rep("gen1", 2)
    cases.append(("representation", Representation(kind="histogram", time_steps=2), "stacked_histogram"))
    cases.append(("other dt", Representation(kind="stacked_histogram", time_steps=2, window_us=40_000),
                  "stacked_histogram_dt=20_nbins=10: missing"))
    for case, representation, words in cases:
        with pytest.raises(DatasetError, match=words) as caught:
            open_rvt_sequence(seq, representation, GEN1)
        assert "\n" not in str(caught.value), case
    stamps = repr_dir / "timestamps_us.npy"
    original = stamps.read_bytes()
    header = {"descr": "<i8", "fortran_order": False, "shape": (10 ** 12,)}
    with open(stamps, "wb") as handle:                      # claims 8 TB, holds nothing
        np.lib.format.write_array_header_1_0(handle, header)
    with pytest.raises(DatasetError, match="more than the file holds"):
        open_rvt_sequence(seq, good, GEN1)
    stamps.write_bytes(original)
    with pytest.raises(DatasetError, match=r"expected 'data' uint8 \(\d+, 20, 120, 152\)"):
        open_rvt_sequence(seq, Representation(kind="stacked_histogram", time_steps=2, window_us=250_000,
                                              stack_slice_us=50_000, downsample=2), GEN1)   # a full-size ds2 file
    with pytest.raises(DatasetError, match="125100 µs apart .* set data.window_us = 2 x 125000"):
        open_rvt_sequence(seq, Representation(kind="stacked_histogram", time_steps=2, window_us=100_000), GEN1)
    labels = seq / "labels_v2" / "labels.npz"
    original = labels.read_bytes()
    np.savez(labels, labels=np.array([{"a": 1}], dtype=object), objframe_idx_2_label_idx=np.zeros(4, np.int64))
    with pytest.raises(DatasetError, match="object arrays are refused"):
        open_rvt_sequence(seq, good, GEN1)
    np.savez_compressed(labels, labels=np.zeros(10 ** 6, np.load(source / "labels_v2" / "labels.npz")["labels"].dtype),
                        objframe_idx_2_label_idx=np.zeros(4, np.int64))    # 25 MB of zeros in a few kB
    with pytest.raises(DatasetError, match="is compressed"):
        open_rvt_sequence(seq, good, GEN1)
    labels.write_bytes(original)
    frame_repr = np.load(repr_dir / "objframe_idx_2_repr_idx.npy")
    np.save(repr_dir / "objframe_idx_2_repr_idx.npy", frame_repr[::-1].copy())
    with pytest.raises(DatasetError, match="out of order|differ"):
        open_rvt_sequence(seq, good, GEN1)
    assert len(open_rvt_sequence(source, good, GEN1).frame_times) == 4
    with pytest.raises(DatasetError, match="RVT's preprocessed sequences: data=gen1_rvt"):   # the wrong layout
        PropheseeDataset(FIXTURE / "gen1" / "test", list(GEN1.names), good)
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before


def test_stacked_histogram_rules_on_a_tiny_window():
    """The rules RVT's code has and the fixture may not reach: counts wrap at 256 before the cutoff (its uint8
    fast mode), an event on a slice boundary counts in both slices, and empty slices stay zero."""
    from spikeyolo.data.events import EVENT_DTYPE

    events = np.zeros(300, EVENT_DTYPE)
    events["t"], events["x"], events["y"], events["p"] = np.arange(300), 1, 1, 1
    one = stacked_histogram(events, 299, time_steps=1, width=4, height=4, window_us=300, bins=1, count_cutoff=255)
    assert one.shape == (1, 2, 4, 4) and one[0, 1, 1, 1] == 300 % 256 and one.sum() == 44
    assert stacked_histogram(events, 299, time_steps=1, width=4, height=4, window_us=300, bins=1,
                             count_cutoff=10)[0, 1, 1, 1] == 10
    edge = np.zeros(1, EVENT_DTYPE)
    edge["t"] = 100                                             # the end of slice 0 and the start of slice 1
    two = stacked_histogram(edge, 200, time_steps=2, width=4, height=4, window_us=200, bins=2)
    assert two[0, 0, 0, 0] == 1 and two[1, 0, 0, 0] == 1 and two.sum() == 2
    assert not stacked_histogram(edge, 500, time_steps=2, width=4, height=4, window_us=200).any()


def test_gen4_rvt_config_reads_rvts_1mpx_folder():
    """data=gen4_rvt composes RVT's 1Mpx setting (T x 50 ms, 20 channels, 640x360 padded to 640x384 at the corner)
    and its loader yields RVT's samples of the fixture."""
    from spikeyolo.data import dataloader_from_config, spec_from_config

    cfg = spikeyolo.compose(["experiment=gen4", "data=gen4_rvt", f"data.root={FIXTURE / 'gen4'}", "data.val_split=test",
                             "neuron.time_steps=3"])
    assert (cfg.data.window_us, cfg.data.in_chs, cfg.model.in_chs) == (150_000, 20, 20)
    spec = spec_from_config(cfg.data)
    loader = dataloader_from_config(spec, cfg.data, "val", batch_size=4, workers=0, stride=32)
    batch = next(iter(loader))
    answers = EXPECTED["sequences"]["gen4/test/fixture_gen4_000"]["SequenceForRandomAccess"]["3"]
    assert len(loader.dataset) == answers["len"]
    assert tuple(batch["img"].shape) == (4, 3, 20, 384, 640) and batch["ori_shape"][0] == (720, 1280)
