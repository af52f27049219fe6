"""Event files (.dat), Gen1 box labels, event representations and the synthetic Gen1 generator.

The real file is tests/fixtures/events/gen4_truncated.dat (see PROVENANCE.md there); expected.json holds the answers
of an independent parser (make_events.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from spikeyolo.errors import DatasetError
from spikeyolo.data.events import (BOX_DTYPE, BOX_FILE_DTYPE, BOX_FILE_DTYPE_LEGACY, EVENT_DTYPE, EVENT_TYPE_CD,
                                   EventFileError, event_histogram, read_boxes, read_dat, read_dat_header,
                                   spikeyolo_frames, voxel_grid, write_boxes, write_dat)
from spikeyolo.data.events import dat as dat_module
from spikeyolo.data.events import make_synthetic, synthetic

FIXTURES = Path(__file__).parent / "fixtures" / "events"
GEN4 = FIXTURES / "gen4_truncated.dat"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())["gen4_truncated.dat"]


@pytest.fixture(scope="module")
def gen4_events() -> np.ndarray:
    return read_dat(GEN4)


def make_events(rows) -> np.ndarray:
    """[N] EVENT_DTYPE from (t, x, y, p) rows."""
    return np.array([tuple(row) for row in rows], dtype=EVENT_DTYPE)


def random_events(num: int, seed: int = 0, width: int = 304, height: int = 240, t_max: int = 10_000_000):
    rng = np.random.default_rng(seed)
    events = np.empty(num, EVENT_DTYPE)
    events["t"] = np.sort(rng.integers(0, t_max, num))
    events["x"], events["y"] = rng.integers(0, width, num), rng.integers(0, height, num)
    events["p"] = rng.integers(0, 2, num)
    return events


# ------------------------------------------------------------------------------------------------ the real file
def test_gen4_header_matches_expected():
    header = read_dat_header(GEN4)
    assert (header.width, header.height, header.size_from_header) == (EXPECTED["width"], EXPECTED["height"], True)
    assert header.version == 2
    assert header.event_type == EXPECTED["event_type_byte"] == EVENT_TYPE_CD
    assert header.event_size == EXPECTED["event_size_byte"] == 8
    assert header.data_offset == EXPECTED["records_offset"] == EXPECTED["header_bytes"] + 2
    assert header.num_events == EXPECTED["num_events"]
    assert dict(header.fields) == EXPECTED["header_fields"]
    assert os.path.getsize(GEN4) == EXPECTED["file_bytes"]


def test_gen4_events_match_expected(gen4_events):
    events = gen4_events
    assert events.dtype == EVENT_DTYPE
    assert len(events) == EXPECTED["num_events"] == 360_000
    t, x, y, p = (events[name].astype(np.int64) for name in "txyp")
    assert (t[0], t[-1]) == (EXPECTED["t_first_us"], EXPECTED["t_last_us"]) == (5856, 1287607)
    assert bool(np.all(np.diff(t) >= 0)) is EXPECTED["t_monotonic_non_decreasing"]
    assert (x.min(), x.max(), y.min(), y.max()) == (EXPECTED["x_min"], EXPECTED["x_max"],
                                                    EXPECTED["y_min"], EXPECTED["y_max"])
    assert {str(k): int(v) for k, v in enumerate(np.bincount(p))} == EXPECTED["polarity_counts"]
    assert [list(map(int, e)) for e in events[:3]] == EXPECTED["first_3_events_t_x_y_p"]
    assert list(map(int, events[-1])) == EXPECTED["last_event_t_x_y_p"]
    assert int((t - t[0]).sum()) == EXPECTED["sum_t_minus_t_first"]
    assert (int(x.sum()), int(y.sum())) == (EXPECTED["sum_x"], EXPECTED["sum_y"])


@pytest.mark.parametrize("window", [(100_000, 200_000), (None, 50_000), (1_000_000, None), (5856, 5857),
                                    (5857, 5857), (0, 5856), (-10, 10_000), (1_287_607, 1_287_608),
                                    (1_287_608, 2**40), (400_000, 400_001)])
def test_window_read_equals_slicing_the_full_read(gen4_events, window):
    t_start, t_end = window
    keep = np.ones(len(gen4_events), bool)
    if t_start is not None:
        keep &= gen4_events["t"] >= t_start
    if t_end is not None:
        keep &= gen4_events["t"] < t_end
    got = read_dat(GEN4, t_start, t_end)
    assert got.dtype == EVENT_DTYPE
    np.testing.assert_array_equal(got, gen4_events[keep])


def test_window_read_decodes_only_the_window(monkeypatch, gen4_events):
    decoded = []
    real_decode = dat_module._decode
    monkeypatch.setattr(dat_module, "_decode", lambda records: decoded.append(len(records)) or real_decode(records))
    got = read_dat(GEN4, 600_000, 610_000)
    expected = int(np.count_nonzero((gen4_events["t"] >= 600_000) & (gen4_events["t"] < 610_000)))
    assert decoded == [len(got)] == [expected]
    assert 0 < expected < len(gen4_events) // 10


def test_window_bounds_are_checked():
    with pytest.raises(ValueError, match="t_start_us 10 > t_end_us 5"):
        read_dat(GEN4, 10, 5)


def test_write_reproduces_the_records_of_the_real_file(tmp_path, gen4_events):
    out = write_dat(tmp_path / "copy.dat", gen4_events, 1280, 720, event_type=EVENT_TYPE_CD)
    original, copy = GEN4.read_bytes(), out.read_bytes()
    header = read_dat_header(out)
    assert (header.width, header.height, header.event_type, header.num_events) == (1280, 720, 0x0C, 360_000)
    assert copy[header.data_offset:] == original[EXPECTED["records_offset"]:]


# ------------------------------------------------------------------------------------------------ writer
def test_write_read_round_trip(tmp_path):
    events = random_events(5000, seed=1)
    path = write_dat(tmp_path / "sub" / "rec_td.dat", events, 304, 240, date="2024-01-02 03:04:05")
    header = read_dat_header(path)
    assert (header.width, header.height, header.event_type, header.num_events) == (304, 240, 0x00, 5000)
    assert header.fields["Date"] == "2024-01-02 03:04:05"
    np.testing.assert_array_equal(read_dat(path), events)
    assert sorted(p.name for p in path.parent.iterdir()) == ["rec_td.dat"]       # no temp file left behind
    again = write_dat(tmp_path / "again.dat", events, 304, 240, date="2024-01-02 03:04:05")
    assert again.read_bytes() == path.read_bytes()
    empty = write_dat(tmp_path / "empty.dat", events[:0], 304, 240)
    assert read_dat_header(empty).num_events == 0 and len(read_dat(empty)) == 0 and len(read_dat(empty, 0, 9)) == 0


@pytest.mark.parametrize("change, message", [
    (lambda e: e.__setitem__("t", e["t"][::-1].copy()), "non-decreasing"),
    (lambda e: e["x"].__setitem__(3, 304), r"field x .* outside \[0, 303\]"),
    (lambda e: e["p"].__setitem__(0, 2), r"field p .* outside \[0, 1\]"),
])
def test_write_refuses_events_the_format_cannot_hold(tmp_path, change, message):
    events = random_events(10)
    change(events)
    with pytest.raises(ValueError, match=message):
        write_dat(tmp_path / "bad.dat", events, 304, 240)
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match=r"missing \['y', 'p'\]"):
        write_dat(tmp_path / "bad.dat", np.zeros(3, [("t", "<i8"), ("x", "<u2")]), 304, 240)


def test_write_refuses_timestamps_beyond_uint32(tmp_path):
    events = make_events([(0, 1, 1, 1), (2**32, 1, 1, 0)])
    with pytest.raises(ValueError, match="field t"):
        write_dat(tmp_path / "bad.dat", events, 304, 240)


# ------------------------------------------------------------------------------------------------ bad files
def raw_dat(path: Path, header: bytes, records: np.ndarray, type_size: bytes = b"\x00\x08") -> Path:
    path.write_bytes(header + type_size + records.tobytes())
    return path


def records_of(t, x=1, y=2, p=1) -> np.ndarray:
    records = np.empty(len(t), dat_module.RECORD_DTYPE)
    records["t"], records["w"] = t, x | (y << 14) | (p << 28)
    return records


@pytest.mark.parametrize("content, message", [
    (b"", "no header"),
    (b"\x00\x08" + bytes(16), "no header"),
    (b"% Width 304\n% Height 240", "has no newline"),
    (b"% Width 304\n% Height 240\n", "event type and size bytes are missing"),
    (b"% Width 304\n% Height 240\n\x00", "event type and size bytes are missing"),
    (b"% Version 2\n\x05\x08" + bytes(8), "unknown event type 0x05"),
    (b"% Version 2\n\x0c\x10" + bytes(16), "unknown event size 16"),
    (b"% Version 2\n\x00\x08" + bytes(8 * 3 + 5), "truncated: 5 trailing bytes"),
    (b"% Version 1\n\x00\x08" + bytes(8), "Version 1 is not supported"),
    (b"% Width wide\n% Height 240\n\x00\x08", "'% Width wide' is not an integer"),
    (b"% Width 304\n\x00\x08", "one of Width/Height"),
    (b"% Width 99999\n% Height 240\n\x00\x08", "Width 99999 is outside"),
])
def test_bad_files_raise_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad_td.dat"
    path.write_bytes(content)
    for read in (read_dat_header, read_dat, lambda p: read_dat(p, 0, 100)):
        with pytest.raises(EventFileError, match=message) as info:
            read(path)
        assert str(path) in str(info.value)
        assert isinstance(info.value, (ValueError, DatasetError))


def test_truncated_real_file_raises(tmp_path):
    path = tmp_path / "cut.dat"
    path.write_bytes(GEN4.read_bytes()[:-3])
    with pytest.raises(EventFileError, match=r"cut.dat: truncated: 5 trailing bytes .* records from byte 67"):
        read_dat(path)


def test_missing_file_raises(tmp_path):
    with pytest.raises(EventFileError, match="missing.dat: cannot open"):
        read_dat(tmp_path / "missing.dat")


def test_gen1_header_without_size_defaults_to_304x240(tmp_path):
    header_bytes = b"% Data file containing Event2D events.\n% Date 2019-02-01 10:00:00\n"
    path = raw_dat(tmp_path / "gen1_td.dat", header_bytes, records=records_of([5, 6, 7], x=303, y=239, p=0))
    header = read_dat_header(path)
    assert (header.width, header.height, header.size_from_header, header.version) == (304, 240, False, 2)
    assert header.fields["Date"] == "2019-02-01 10:00:00"
    assert [list(map(int, e)) for e in read_dat(path)] == [[5, 303, 239, 0], [6, 303, 239, 0], [7, 303, 239, 0]]


def test_high_bits_are_ignored_and_wraparound_is_unwrapped(tmp_path):
    records = records_of([2**32 - 20, 2**32 - 10, 5, 30], x=16383, y=16383, p=1)
    records["w"] |= np.uint32(0xE0000000)       # bits 29-31 set: not part of x, y or p
    path = raw_dat(tmp_path / "wrap.dat", b"% Version 2\n", records=records)
    events = read_dat(path)
    assert events["t"].tolist() == [2**32 - 20, 2**32 - 10, 2**32 + 5, 2**32 + 30]
    assert set(events["x"].tolist()) == {16383} and set(events["y"].tolist()) == {16383}
    assert set(events["p"].tolist()) == {1}
    with pytest.raises(EventFileError, match="clock wraps or the events are unsorted"):
        read_dat(path, 0, 100)


def test_window_read_refuses_unsorted_timestamps(tmp_path):
    path = raw_dat(tmp_path / "unsorted.dat", b"% Version 2\n", records=records_of([10, 20, 15, 30, 40]))
    assert read_dat(path)["t"].tolist() == [10, 20, 15, 30, 40]          # a full read returns the file as it is
    with pytest.raises(EventFileError, match="step backwards inside the window"):
        read_dat(path, 0, 35)


# ------------------------------------------------------------------------------------------------ boxes
BOX_ROWS = [(500_000, 10.5, 20.0, 30.0, 40.0, 0, 0.9, 7), (500_000, 100.0, 50.0, 12.0, 30.0, 1, 1.0, 8),
            (550_000, 11.5, 21.0, 30.0, 40.0, 0, 0.8, 7)]


@pytest.mark.parametrize("dtype", [BOX_FILE_DTYPE_LEGACY, BOX_FILE_DTYPE])
def test_both_release_box_dtypes_load_the_same(tmp_path, dtype):
    path = tmp_path / "rec_bbox.npy"
    np.save(path, np.array(BOX_ROWS, dtype=dtype))
    boxes = read_boxes(path)
    assert boxes.dtype == BOX_DTYPE
    np.testing.assert_array_equal(boxes, np.array(BOX_ROWS, dtype=BOX_DTYPE))
    assert boxes["t"].dtype == np.int64 and boxes["track_id"].tolist() == [7, 8, 7]


@pytest.mark.parametrize("legacy, names", [(True, ("ts", "confidence")), (False, ("t", "class_confidence"))])
def test_box_write_read_round_trip(tmp_path, legacy, names):
    boxes = np.array(BOX_ROWS, dtype=BOX_DTYPE)
    path = write_boxes(tmp_path / "rec_bbox.npy", boxes, legacy=legacy)
    raw = np.load(path)
    assert raw.dtype == (BOX_FILE_DTYPE_LEGACY if legacy else BOX_FILE_DTYPE)
    assert names[0] in raw.dtype.names and names[1] in raw.dtype.names
    np.testing.assert_array_equal(read_boxes(path), boxes)


def test_bad_box_files_raise(tmp_path):
    no_track = np.zeros(2, [("t", "<u8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"),
                            ("class_id", "u1"), ("class_confidence", "<f4")])
    np.save(tmp_path / "a.npy", no_track)
    with pytest.raises(EventFileError, match="a.npy: box array has no field track_id"):
        read_boxes(tmp_path / "a.npy")
    np.save(tmp_path / "b.npy", np.zeros((2, 8), np.float32))
    with pytest.raises(EventFileError, match="b.npy: expected a 1-D structured box array"):
        read_boxes(tmp_path / "b.npy")
    np.save(tmp_path / "c.npy", np.array([{"t": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(EventFileError, match="c.npy: cannot read"):
        read_boxes(tmp_path / "c.npy")
    float_t = np.array(BOX_ROWS, dtype=[("t", "<f8")] + BOX_FILE_DTYPE.descr[1:])
    np.save(tmp_path / "d.npy", float_t)
    with pytest.raises(EventFileError, match="field t must be an integer"):
        read_boxes(tmp_path / "d.npy")
    # a header that claims 30 TB of boxes in a file of 200 bytes: refused from the header, nothing allocated
    with open(tmp_path / "e.npy", "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": BOX_FILE_DTYPE.descr, "fortran_order": False,
                                                      "shape": (10 ** 12,)})
    with pytest.raises(EventFileError, match="e.npy: cannot read .* more than the file holds"):
        read_boxes(tmp_path / "e.npy")
    np.save(tmp_path / "f.npy", np.array(BOX_ROWS, dtype=BOX_FILE_DTYPE))
    (tmp_path / "f.npy").write_bytes((tmp_path / "f.npy").read_bytes()[:-3])   # cut inside the last box
    with pytest.raises(EventFileError, match="f.npy: cannot read .* truncated"):
        read_boxes(tmp_path / "f.npy")


# ------------------------------------------------------------------------------------------------ representations
def test_spikeyolo_frames_grey_init_overwrite_order_and_slice_boundaries():
    # window [1000, 2000) with T = 2: slices [1000, 1500) and [1500, 2000)
    events = make_events([
        (999, 0, 0, 1),        # before the window: ignored
        (1000, 1, 0, 1),       # slice 0, first instant
        (1100, 2, 0, 1), (1200, 2, 0, 0),   # slice 0: white then black -> black (0)
        (1300, 3, 0, 0), (1300, 3, 0, 1),   # same time: array order decides -> white (255)
        (1499, 4, 1, 0),       # slice 0, last instant
        (1500, 4, 1, 1),       # slice 1, first instant
        (1999, 5, 2, 1),       # slice 1, last instant
        (2000, 6, 2, 1),       # at t_end: excluded
    ])
    frames = spikeyolo_frames(events, 2000, time_steps=2, width=8, height=3, window_us=1000)
    assert frames.shape == (2, 3, 8, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames[..., 0], frames[..., 1]) and np.array_equal(frames[..., 0], frames[..., 2])
    expected = np.full((2, 3, 8), 127, np.uint8)
    expected[0, 0, 1], expected[0, 0, 2], expected[0, 0, 3], expected[0, 1, 4] = 255, 0, 255, 0
    expected[1, 1, 4], expected[1, 2, 5] = 255, 255
    np.testing.assert_array_equal(frames[..., 0], expected)
    reversed_frames = spikeyolo_frames(events, 2000, time_steps=2, width=8, height=3, window_us=1000,
                                       most_recent_first=True)
    np.testing.assert_array_equal(reversed_frames, frames[::-1])
    assert np.count_nonzero(frames != 127) == 6 * 3


def test_spikeyolo_frames_match_the_reference_defaults_and_drop_the_remainder():
    # T = 3 does not divide 250000: slices of 83333 µs; events in the last 250000 % 3 = 1 µs fall in no slice
    label_time = 1_000_000
    start = label_time - 250_000
    events = make_events([(start, 0, 0, 1), (start + 83_333, 1, 0, 1), (start + 2 * 83_333, 2, 0, 1),
                          (label_time - 1, 3, 0, 1)])
    frames = spikeyolo_frames(events, label_time, time_steps=3)
    assert frames.shape == (3, 240, 304, 3)
    assert [np.flatnonzero(frames[i, 0, :, 0] == 255).tolist() for i in range(3)] == [[0], [1], [2]]
    assert np.count_nonzero(frames != 127) == 3 * 3


def test_spikeyolo_frames_early_label_window():
    # label at 100 µs with a 1000 µs window: literal window [-900, 100), or [0, 1000) as the reference (numpy 1.x)
    events = make_events([(0, 0, 0, 1), (99, 1, 0, 0), (100, 2, 0, 1), (600, 3, 0, 1), (999, 4, 0, 0)])
    literal = spikeyolo_frames(events, 100, time_steps=2, width=5, height=1, window_us=1000)[..., 0]
    clamped = spikeyolo_frames(events, 100, time_steps=2, width=5, height=1, window_us=1000, clamp_start=True)[..., 0]
    assert literal.tolist() == [[[127, 127, 127, 127, 127]], [[255, 0, 127, 127, 127]]]
    assert clamped.tolist() == [[[255, 0, 255, 127, 127]], [[127, 127, 127, 255, 0]]]


def test_event_histogram_counts():
    events = make_events([(0, 1, 1, 1), (10, 1, 1, 1), (20, 1, 1, 0), (60, 2, 0, 1), (99, 2, 0, 1), (100, 0, 0, 1)])
    hist = event_histogram(events, 100, time_steps=2, width=3, height=2, window_us=100)
    assert hist.shape == (2, 2, 2, 3) and hist.dtype == np.int32
    assert (hist[0, 1, 1, 1], hist[0, 0, 1, 1], hist[1, 1, 0, 2]) == (2, 1, 2)
    assert hist.sum() == 5
    big = random_events(20_000, seed=3, t_max=250_000)
    hist = event_histogram(big, 250_000, time_steps=4, width=304, height=240)
    assert hist.sum() == 20_000
    assert hist[:, 1].sum() == int(big["p"].sum())
    np.testing.assert_array_equal(hist.sum(axis=(1, 2, 3)), np.bincount(big["t"] // 62_500, minlength=4))


def test_voxel_grid_bilinear_weights_and_sums():
    # window [0, 100), 5 bins: tn = 4 * t / 100
    events = make_events([(0, 0, 0, 1), (25, 1, 0, 1), (30, 2, 0, 0), (99, 0, 1, 1)])
    grid = voxel_grid(events, 100, num_bins=5, width=3, height=2, window_us=100)
    assert grid.shape == (5, 2, 3) and grid.dtype == np.float32
    assert grid[0, 0, 0] == 1.0                                              # t=0 -> bin 0 exactly
    assert grid[1, 0, 1] == 1.0 and grid[0, 0, 1] == 0.0                     # tn = 1.0
    np.testing.assert_allclose([grid[1, 0, 2], grid[2, 0, 2]], [-0.8, -0.2], atol=1e-6)   # tn = 1.2, p = 0
    np.testing.assert_allclose([grid[3, 1, 0], grid[4, 1, 0]], [0.04, 0.96], atol=1e-6)   # tn = 3.96
    big = random_events(20_000, seed=4, t_max=250_000)
    grid = voxel_grid(big, 250_000, num_bins=6, width=304, height=240)
    assert grid.sum() == pytest.approx(2 * int(big["p"].sum()) - len(big), abs=1e-2)
    one_bin = voxel_grid(big, 250_000, num_bins=1, width=304, height=240)
    assert one_bin.shape == (1, 240, 304) and one_bin.sum() == pytest.approx(grid.sum(), abs=1e-2)


def test_representations_refuse_events_outside_the_sensor():
    events = make_events([(5, 304, 0, 1)])
    for build in (lambda: spikeyolo_frames(events, 10, time_steps=1, window_us=10),
                  lambda: event_histogram(events, 10, time_steps=1, width=304, height=240, window_us=10),
                  lambda: voxel_grid(events, 10, num_bins=2, width=304, height=240, window_us=10)):
        with pytest.raises(ValueError, match="outside the 304x240 sensor"):
            build()
    assert spikeyolo_frames(events, 100, time_steps=1, window_us=10).min() == 127   # outside the window: ignored


# ------------------------------------------------------------------------------------------------ synthetic
@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gen1")
    make_synthetic.main([str(root), "--recordings", "1", "--duration-s", "1.0", "--seed", "3"])
    return root


def test_synthetic_dataset_layout_and_files(synthetic_root):
    names = sorted(str(p.relative_to(synthetic_root)) for p in synthetic_root.rglob("*"))
    assert names == ["test", "test/synthetic_test_0000_bbox.npy", "test/synthetic_test_0000_td.dat",
                     "train", "train/synthetic_train_0000_bbox.npy", "train/synthetic_train_0000_td.dat",
                     "val", "val/synthetic_val_0000_bbox.npy", "val/synthetic_val_0000_td.dat"]
    for split in ("train", "val", "test"):
        header = read_dat_header(synthetic_root / split / f"synthetic_{split}_0000_td.dat")
        assert (header.width, header.height, header.event_type) == (304, 240, 0x00)
        events = read_dat(header.path)
        assert len(events) > 10_000 and np.all(np.diff(events["t"]) >= 0)
        assert events["t"][0] > 0 and events["t"][-1] <= 1_000_000
        raw = np.load(synthetic_root / split / f"synthetic_{split}_0000_bbox.npy")
        assert raw.dtype == BOX_FILE_DTYPE_LEGACY
        boxes = read_boxes(synthetic_root / split / f"synthetic_{split}_0000_bbox.npy")
        assert np.unique(boxes["t"]).tolist() == list(range(500_000, 1_000_000, 50_000))
        assert set(boxes["class_id"].tolist()) <= {0, 1} and len(np.unique(boxes["track_id"])) >= 2
        assert np.all(boxes["x"] >= 0) and np.all(boxes["x"] + boxes["w"] <= 304 + 1e-3)
        assert np.all(boxes["y"] >= 0) and np.all(boxes["y"] + boxes["h"] <= 240 + 1e-3)


def test_synthetic_events_fall_inside_the_boxes(synthetic_root):
    events = read_dat(synthetic_root / "train" / "synthetic_train_0000_td.dat")
    boxes = read_boxes(synthetic_root / "train" / "synthetic_train_0000_bbox.npy")
    fractions = []
    for label_time in np.unique(boxes["t"]):
        recent = events[(events["t"] >= label_time - 10_000) & (events["t"] < label_time)]
        inside = np.zeros(len(recent), bool)
        for box in boxes[boxes["t"] == label_time]:      # 2-pixel margin: the objects moved during the 10 ms
            inside |= ((recent["x"] >= box["x"] - 2) & (recent["x"] < box["x"] + box["w"] + 2)
                       & (recent["y"] >= box["y"] - 2) & (recent["y"] < box["y"] + box["h"] + 2))
        fractions.append(inside.mean())
    assert min(fractions) > 0.85, fractions


def test_synthetic_generator_is_deterministic(tmp_path, synthetic_root):
    synthetic.generate_dataset(tmp_path, 1, 1.0, seed=3, splits=("val",))
    for suffix in ("_td.dat", "_bbox.npy"):
        name = f"val/synthetic_val_0000{suffix}"
        assert (tmp_path / name).read_bytes() == (synthetic_root / name).read_bytes()
    other, _ = synthetic.simulate_recording(1.0, seed=4)
    assert not np.array_equal(other, read_dat(synthetic_root / "val" / "synthetic_val_0000_td.dat"))
