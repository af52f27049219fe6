"""Recordings of any format (spikeyolo.data.events.recordings) against real camera files and independent decoders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from spikeyolo.data.events import decoders
from spikeyolo.data.events.dat import EVENT_DTYPE, read_dat
from spikeyolo.data.events.recordings import (detect_format, iter_recording, open_recording, read_recording,
                                              recording_windows)
from spikeyolo.errors import EventFileError, UserError



def need(*names: str):
    """The decoder libraries a test needs (the ``events`` extra): skip without them."""
    modules = [pytest.importorskip(name) for name in names]
    return modules[0] if len(modules) == 1 else modules

REAL = Path(__file__).parent / "fixtures" / "events_real"
OLD = Path(__file__).parent / "fixtures" / "events"
EVT3_RAW = REAL / "evt3_sample.raw"
EVT2_RAW = REAL / "evt2_sample.raw"
AEDAT4 = OLD / "davis346_truncated.aedat4"
DAT = OLD / "gen4_truncated.dat"


def columns(events: np.ndarray) -> list[np.ndarray]:
    return [events[name].astype(np.int64) for name in "txyp"]


def assert_same(first: np.ndarray, second: np.ndarray, fields: str = "txyp") -> None:
    assert len(first) == len(second)
    for name in fields:
        np.testing.assert_array_equal(first[name].astype(np.int64), second[name].astype(np.int64), err_msg=name)


def test_format_by_content_not_extension(tmp_path):
    assert detect_format(EVT3_RAW)[0] == "evt3"
    assert detect_format(EVT2_RAW)[0] == "evt2"
    assert detect_format(AEDAT4)[0] == "aedat4"
    assert detect_format(DAT)[0] == "dat"
    for source, lie in ((EVT3_RAW, "x.dat"), (AEDAT4, "x.raw"), (DAT, "x.aedat4")):
        shutil.copy(source, tmp_path / lie)
        assert detect_format(tmp_path / lie)[0] == detect_format(source)[0]
    header = dict(detect_format(EVT3_RAW)[1])
    assert header["evt"] == "3.0" and header["plugin_name"] == "hal_plugin_gen41_evk3"


def test_evt3_real_recording_two_decoders():
    """EVT 3.0 from a Gen4.1 camera by evt3 and by faery: same x, y, p; t equal up to a spurious TIME_LOW word."""
    need("evt3", "faery")
    info = open_recording(EVT3_RAW)
    assert (info.format, info.library, info.width, info.height, info.size_from_header) == ("evt3", "evt3", 1280, 720,
                                                                                            False)
    by_evt3 = read_recording(EVT3_RAW, library="evt3")
    by_faery = read_recording(EVT3_RAW, library="faery")
    assert by_evt3.dtype == EVENT_DTYPE and len(by_evt3) == 219_596
    assert_same(by_evt3, by_faery, "xyp")
    assert int(by_evt3["p"].sum()) == 115_532
    assert tuple(by_evt3[0]) == (11_718_656, 874, 200, 0) and tuple(by_faery[0]) == (11_718_656, 874, 200, 0)
    # word 28315..28317 is TIME_HIGH 0xB2D, TIME_LOW 0x32B, TIME_LOW 0x320: evt3 takes the last word (the spec's
    # rule), faery holds the larger time until the stream passes it. From event 20121 on they differ by 1-11 µs.
    diff = by_faery["t"] - by_evt3["t"]
    assert not diff[:20_121].any() and diff[20_121] == 11
    assert diff.min() == 0 and diff.max() == 11 and np.count_nonzero(diff) == 1_455
    assert int(by_evt3["t"][20_121]) == (0xB2D << 12) | 0x320
    assert np.all(np.diff(by_evt3["t"]) >= 0) and np.all(np.diff(by_faery["t"]) >= 0)


def test_evt2_real_recording_sensor_size_and_independent_decoder():
    need("faery")
    info = open_recording(EVT2_RAW)
    assert (info.format, info.library, info.width, info.height) == ("evt2", "faery", 640, 480)   # gen3 plugin
    events = read_recording(EVT2_RAW)
    assert len(events) == 539_481 and int(events["p"].sum()) == 367_855
    assert int(events["x"].max()) == 599 and int(events["y"].max()) == 475
    expelliarmus = pytest.importorskip("expelliarmus")
    wizard = expelliarmus.Wizard(encoding="evt2")
    wizard.set_file(str(EVT2_RAW))
    assert_same(events, wizard.read())


def test_aedat4_real_recording_two_decoders():
    need("aedat", "faery")
    by_faery = read_recording(AEDAT4, library="faery")
    by_aedat = read_recording(AEDAT4, library="aedat")
    assert_same(by_faery, by_aedat)
    assert len(by_faery) == 39_307 and int(by_faery["t"][0]) == 1_589_163_147_368_868
    info = open_recording(AEDAT4)
    assert (info.library, info.width, info.height) == ("aedat", 346, 260)


def test_dat_own_reader_equals_faery():
    need("faery")
    own = read_recording(DAT)
    assert_same(own, read_dat(DAT))
    assert_same(own, read_recording(DAT, library="faery"))


def write_hdf5(path: Path, events: np.ndarray, width: int, height: int, **dataset_options) -> None:
    """The Metavision HDF5 layout: CD/events compound table x, y, p, t (without Metavision's ECF codec)."""
    h5py = need("h5py")
    table = np.empty(len(events), [("x", "<u2"), ("y", "<u2"), ("p", "<i2"), ("t", "<i8")])
    for name in "txyp":
        table[name] = events[name]
    with h5py.File(path, "w") as handle:
        handle.attrs["width"], handle.attrs["height"] = width, height
        handle.create_group("CD").create_dataset("events", data=table, chunks=(4096,), **dataset_options)


def test_converted_between_formats_read_back_by_another_library(tmp_path):
    """A real .dat re-encoded by faery (EVT3, EVT2, AEDAT4) or h5py reads back equal through a second library."""
    faery = need("faery", "evt3", "aedat", "h5py")[0]
    source = read_dat(DAT)
    packet = np.zeros(len(source), faery.EVENTS_DTYPE)
    packet["t"], packet["x"], packet["y"], packet["on"] = source["t"], source["x"], source["y"], source["p"] != 0
    for version in ("evt3", "evt2"):
        path = tmp_path / f"{version}.raw"
        with faery.evt.Encoder(path, version, False, (1280, 720), True) as encoder:
            encoder.write({"events": packet})
        info = open_recording(path)
        assert (info.format, info.width, info.height, info.size_from_header) == (version, 1280, 720, True)
        for library in {"evt3": ("evt3", "faery"), "evt2": ("faery",)}[version]:
            assert_same(read_recording(path, library=library), source)
    path = tmp_path / "x.aedat4"
    faery.events_stream_from_array(packet, (1280, 720)).to_file(path)
    assert_same(read_recording(path, library="aedat"), source)
    for options in ({}, {"compression": "gzip"}):
        path = tmp_path / "x.hdf5"
        write_hdf5(path, source, 1280, 720, **options)
        assert_same(read_recording(path), source)


@pytest.mark.parametrize("path", [EVT3_RAW, EVT2_RAW, AEDAT4, DAT], ids=lambda path: path.name)
def test_windows_and_chunks(path):
    need("evt3", "faery", "aedat")
    everything = read_recording(path)
    t_first, t_last = int(everything["t"][0]), int(everything["t"][-1])
    start, stop = t_first + (t_last - t_first) // 3, t_first + 2 * (t_last - t_first) // 3
    chunks = list(iter_recording(path, start, stop, chunk_events=5_000))
    assert chunks and all(1 <= len(chunk) <= 5_000 for chunk in chunks)
    inside = everything[(everything["t"] >= start) & (everything["t"] < stop)]
    assert_same(np.concatenate(chunks), inside)
    window, step = max(1, (t_last - t_first) // 4), max(1, (t_last - t_first) // 7)
    windows = list(recording_windows(path, window, step_us=step, chunk_events=7_000))
    expected_ends = list(range(t_first + window, t_last + step + 1, step))
    expected_ends = [end for end in expected_ends if end - step <= t_last]
    assert [end for end, _ in windows] == expected_ends and windows[-1][0] > t_last
    for end, events in windows:
        assert events.dtype == EVENT_DTYPE
        assert_same(events, everything[(everything["t"] >= end - window) & (everything["t"] < end)])
    capped = [end for end, _ in recording_windows(path, window, step_us=step, end_us=expected_ends[2])]
    assert capped == expected_ends[:3]
    ends = [t_first + 10, t_first + 10, stop, t_last + 1]
    assert [len(events) for _, events in recording_windows(path, window, ends=ends)] == [
        int(np.count_nonzero((everything["t"] >= end - window) & (everything["t"] < end))) for end in ends]


def _hostile_files(folder: Path) -> dict[str, tuple[Path, str | None]]:
    raw3, raw2, aedat4 = EVT3_RAW.read_bytes(), EVT2_RAW.read_bytes(), AEDAT4.read_bytes()
    data3 = raw3.index(b"% system_ID 48\n") + len(b"% system_ID 48\n")
    data2 = raw2.index(b"% evt 2.0\n") + len(b"% evt 2.0\n")
    noise = np.random.default_rng(0).integers(0, 256, 200_000, np.uint8).tobytes()
    corrupt = bytearray(aedat4)
    corrupt[100_000:100_400] = noise[:400]
    huge = bytearray(aedat4)
    first_packet = 18 + int.from_bytes(aedat4[14:18], "little")     # magic line, header length, header
    huge[first_packet + 4:first_packet + 8] = (0x7FFFFFF0).to_bytes(4, "little")   # its declared byte length
    cases = {
        "evt3_cut_mid_word.raw": (raw3[:data3 + 100_001], "evt3"),
        "evt2_cut_mid_word.raw": (raw2[:data2 + 100_002], "faery"),
        "evt3_noise.raw": (raw3[:data3] + noise, "evt3"),
        "evt3_noise_faery.raw": (raw3[:data3] + noise, "faery"),
        "evt2_noise.raw": (raw2[:data2] + noise, "faery"),
        "evt3_tiny_sensor.raw": (b"% format EVT3;height=10;width=10\n" + raw3[data3:], "evt3"),
        "raw_no_version.raw": (b"% Date 2020-09-25\n% plugin_name x\n" + raw3[data3:], None),
        "raw_bad_version.raw": (b"% evt 4.0\n" + raw3[data3:], None),
        "raw_no_size.raw": (b"% evt 3.0\n" + raw3[data3:], None),
        "header_no_newline.raw": (b"% evt 3.0", None),
        "aedat_cut.aedat4": (aedat4[:len(aedat4) // 2], "faery"),
        "aedat_cut_aedat.aedat4": (aedat4[:len(aedat4) // 2], "aedat"),
        "aedat_header_only.aedat4": (aedat4[:3_000], "faery"),
        "aedat_corrupt_lz4.aedat4": (bytes(corrupt), "aedat"),
        "aedat_2gb_packet.aedat4": (bytes(huge), None),        # aedat (the default) does not allocate 2 GB first
        "hdf5_garbage.hdf5": (b"\x89HDF\r\n\x1a\n" + noise[:5_000], None),
        "empty.raw": (b"", None),
        "unknown.bin": (b"PK\x03\x04" + noise[:100], None),
        "dat_cut.dat": (DAT.read_bytes()[:100_005], None),
    }
    for name, (content, _) in cases.items():
        (folder / name).write_bytes(content)
    return {name: (folder / name, library) for name, (_, library) in cases.items()}


def test_hostile_recordings_give_one_line_and_write_nothing(tmp_path):
    need("evt3", "faery", "aedat", "h5py")
    files = _hostile_files(tmp_path)
    before = sorted(os.listdir(tmp_path))
    for name, (path, library) in files.items():
        with pytest.raises(EventFileError) as caught:
            for _ in iter_recording(path, library=library):
                pass
        message = str(caught.value)
        assert "\n" not in message and message.startswith(str(path)) and len(message) < 400, (name, message)
    assert sorted(os.listdir(tmp_path)) == before
    assert "truncated: 1 trailing bytes" in str(pytest.raises(EventFileError, read_recording,
                                                               files["evt3_cut_mid_word.raw"][0]).value)
    assert "sensor_size" in str(pytest.raises(EventFileError, open_recording, files["raw_no_size.raw"][0]).value)
    assert len(read_recording(files["raw_no_size.raw"][0], sensor_size=(1280, 720))) == 219_596


def test_rvt_event_h5_size_polarity_and_held_times(tmp_path, monkeypatch):
    """RVT's _td.dat.h5 (events/x, y, p, t and scalar events/width, height; Blosc): the size from those datasets,
    p = -1 read as OFF, and a time that steps back held at the latest one before it, across read batches too
    (RVT's H5Reader._correct_time), so windows stay ordered; without width/height the size must be given."""
    h5py, hdf5plugin = need("h5py", "hdf5plugin")
    source = read_dat(DAT)[:5000].copy()
    t = source["t"].astype(np.int64)
    t[[10, 2999, 3000]] = t[9] - 7, t[2998] - 1, t[2998] - 3      # back steps; 3000 starts the second batch
    path = tmp_path / "rec_td.dat.h5"
    with h5py.File(path, "w") as handle:
        group = handle.create_group("events")
        for key, values in (("t", t), ("x", source["x"]), ("y", source["y"]),
                            ("p", np.where(source["p"] > 0, 1, -1).astype(np.int8))):
            group.create_dataset(key, data=values, chunks=(1000,), **hdf5plugin.Blosc())
        group["width"], group["height"] = 1280, 720
    monkeypatch.setattr(decoders, "_H5_BATCH", 3000)
    info = open_recording(path)
    assert (info.format, info.width, info.height, info.size_from_header) == ("hdf5", 1280, 720, True)
    events = read_recording(path)
    assert_same(events, source, "xyp")
    np.testing.assert_array_equal(events["t"], np.maximum.accumulate(t))
    assert events["t"][10] == t[9] and events["t"][2999] == events["t"][3000] == t[2998]
    with h5py.File(path, "a") as handle:
        del handle["events/width"], handle["events/height"]
    assert "sensor_size" in str(pytest.raises(EventFileError, open_recording, path).value)
    assert open_recording(path, sensor_size=(1280, 720)).size_from_header is False


def test_hdf5_ecf_is_refused_in_one_line(tmp_path):
    h5py = need("h5py")
    path = tmp_path / "metavision.hdf5"
    with h5py.File(path, "w") as handle:
        handle.attrs["width"], handle.attrs["height"] = 1280, 720
        table = handle.create_group("CD").create_dataset(
            "events", shape=(10,), dtype=[("x", "<u2"), ("y", "<u2"), ("p", "<i2"), ("t", "<i8")], chunks=(10,),
            compression=decoders.ECF_FILTER_ID, allow_unknown_filter=True)
        table.id.write_direct_chunk((0,), b"\x00" * 16)
    with pytest.raises(EventFileError, match="ECF codec .* no package on PyPI decodes"):
        read_recording(path)


def test_missing_library_names_the_extra(monkeypatch):
    real_import = decoders.importlib.import_module

    def without_faery(name, *args):
        if name.split(".")[0] == "faery":
            raise ImportError(name)
        return real_import(name, *args)

    monkeypatch.setattr(decoders.importlib, "import_module", without_faery)
    with pytest.raises(UserError, match=r"'faery', which is not installed: pip install -e \"\.\[events\]\""):
        read_recording(EVT2_RAW)
    with pytest.raises(UserError, match="does not read evt2"):
        open_recording(EVT2_RAW, library="evt3")
