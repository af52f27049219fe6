"""spikeyolo-predict on pictures and video: a folder, a glob, a video made here (OpenCV writer), save_txt, the
spike-driven path, unreadable pictures and frames, bad sources, ``run_dir=`` and its deprecated old name ``out=``.
The boxes are checked against the predictions spikeyolo-eval writes for the same checkpoint (the event-recording
path is tested in tests/test_gen1.py)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

import spikeyolo
from spikeyolo.data import embedded_root
from test_api import _eval_predictions
from test_reference_cli import call_main, one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")


def _val_dir() -> Path:
    return embedded_root() / "images" / "val"


def _by_file(out: Path) -> dict[str, np.ndarray]:
    """predictions.json as {file name: [N, 5] (score, x, y, w, h) sorted}."""
    rows: dict[str, list] = {}
    for record in json.loads((out / "predictions.json").read_text()):
        rows.setdefault(record["file_name"], []).append((record["score"], *record["bbox"]))
    return {name: np.array(sorted(values), np.float64).reshape(-1, 5) for name, values in rows.items()}


def _same(ours: dict[str, np.ndarray], expected: dict[str, np.ndarray], names) -> int:
    total = 0
    for name in names:
        a, b = ours.get(name, np.zeros((0, 5))), expected.get(name, np.zeros((0, 5)))
        assert a.shape == b.shape, name
        assert np.allclose(a[:, 0], b[:, 0], atol=1e-6, rtol=0) and np.allclose(a[:, 1:], b[:, 1:], atol=1e-3, rtol=0)
        total += len(a)
    return total


@pytest.mark.parametrize("deploy", ["integer", "spike_driven"])
def test_folder_matches_eval_predictions(tmp_path, image_checkpoint, monkeypatch, capsys, deploy):
    eval_records = _eval_predictions(image_checkpoint, tmp_path / "eval", deploy, monkeypatch)
    expected = {name: np.array(sorted((r["score"], *r["bbox"]) for r in records), np.float64).reshape(-1, 5)
                for name, records in eval_records.items()}
    out = tmp_path / "pred"
    code, stdout, err = call_main("predict", [f"checkpoint={image_checkpoint}", f"source={_val_dir()}",
                                              f"run_dir={out}", "conf=0.001", f"deploy={deploy}", "save_txt=true",
                                              "progress=false"], monkeypatch, capsys)
    assert code == 0, err[-2000:]
    names = sorted(p.name for p in _val_dir().glob("*.jpg"))
    assert _same(_by_file(out), expected, names) > 0
    images = json.loads((out / "images.json").read_text())
    assert [i["file_name"] for i in images["images"]] == names and images["deploy"] == deploy
    assert sorted(p.name for p in (out / "images").iterdir()) == names
    assert all(cv2.imread(str(out / "images" / n)).shape == (400, 400, 3) for n in names[:2])
    labels = (out / "labels" / f"{Path(names[0]).stem}.txt").read_text().splitlines()
    assert len(labels) == len(_by_file(out).get(names[0], [])) and len(labels[0].split()) == 6
    assert f"12 image(s), {sum(len(v) for v in _by_file(out).values())} detection(s)" in stdout


def test_glob_and_an_unreadable_picture(tmp_path, image_checkpoint, monkeypatch, capsys):
    folder = tmp_path / "pics"
    folder.mkdir()
    for file in sorted(_val_dir().glob("*.jpg"))[:3]:
        shutil.copy(file, folder / file.name)
    (folder / "zz_broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "pred"
    code, stdout, err = call_main("predict", [f"checkpoint={image_checkpoint}", f"source={folder}/*.jpg",
                                              f"run_dir={out}", "progress=false"], monkeypatch, capsys)
    assert code == 0, err[-2000:]
    images = json.loads((out / "images.json").read_text())["images"]
    assert len(images) == 4 and images[-1]["error"].endswith("zz_broken.jpg: not a readable image (OpenCV cannot "
                                                             "decode it)")
    assert "zz_broken.jpg: not a readable image" in stdout + err and "3 image(s)" in stdout and "1 unreadable" in stdout


def test_video(tmp_path, image_checkpoint, monkeypatch, capsys):
    """A 5-frame video made with OpenCV: an annotated video of 5 frames, one COCO image per frame, and boxes equal
    to the Python API's on the frames as OpenCV decodes them."""
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (400, 400))
    for file in sorted(_val_dir().glob("*.jpg"))[:5]:
        writer.write(cv2.imread(str(file)))
    writer.release()
    out = tmp_path / "pred"
    code, _, err = call_main("predict", [f"checkpoint={image_checkpoint}", f"source={video}", f"run_dir={out}",
                                         "progress=false"], monkeypatch, capsys)
    assert code == 0, err[-2000:]
    names = [f"clip_{i:06d}" for i in range(5)]
    assert [i["file_name"] for i in json.loads((out / "images.json").read_text())["images"]] == names
    capture = cv2.VideoCapture(str(out / "clip.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    capture.release()
    decoded = cv2.VideoCapture(str(video))
    frames = [decoded.read()[1] for _ in range(5)]
    decoded.release()
    detector = spikeyolo.Detector.load(image_checkpoint)
    api = {name: np.array(sorted((float(s), x1, y1, x2 - x1, y2 - y1)
                                 for (x1, y1, x2, y2), s in zip(r.boxes.tolist(), r.scores.tolist())),
                          np.float64).reshape(-1, 5)
           for name, r in zip(names, detector.predict(frames))}
    assert _same(_by_file(out), api, names) > 0


@pytest.mark.parametrize("args, message", [
    (["source=/no/such/place"], "source=/no/such/place: no image or video there"),
    (["source=/no/such/rec.dat"], "events file not found: /no/such/rec.dat"),
    (["source=x.jpg", "events=y.dat"], "give source= or events=, not both"),
    ([], "give source=PATH"),
])
def test_bad_sources_are_one_line(tmp_path, image_checkpoint, monkeypatch, capsys, args, message):
    code, _, err = call_main("predict", [f"checkpoint={image_checkpoint}", f"run_dir={tmp_path / 'out'}", *args],
                             monkeypatch, capsys)
    assert message in one_line_error(code, err)
    assert not (tmp_path / "out").exists()


def test_out_is_the_deprecated_name_of_run_dir(tmp_path, image_checkpoint, monkeypatch, capsys):
    """out= still writes there, with one note (once per process); out= with run_dir= is refused in one line."""
    from spikeyolo.cli import predict as predict_cli

    picture = sorted(_val_dir().glob("*.jpg"))[0]
    common = [f"checkpoint={image_checkpoint}", f"source={picture}", "progress=false", "save_images=false"]
    predict_cli._out_is_deprecated.cache_clear()
    notes = []
    for folder in ("old", "again"):
        code, stdout, err = call_main("predict", [*common, f"out={tmp_path / folder}"], monkeypatch, capsys)
        assert code == 0 and (tmp_path / folder / "predictions.json").is_file(), err[-2000:]
        assert f"-> {tmp_path / folder}" in stdout
        notes.append([line for line in err.splitlines() if "out= is deprecated" in line])
    assert len(notes[0]) == 1 and "use run_dir=" in notes[0][0] and notes[1] == []
    code, _, err = call_main("predict", [*common, f"out={tmp_path / 'a'}", f"run_dir={tmp_path / 'b'}"],
                             monkeypatch, capsys)
    assert "give run_dir= (out= is its deprecated old name), not both" in one_line_error(code, err)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_default_run_dir_is_under_runs_predict(tmp_path, image_checkpoint, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    picture = sorted(_val_dir().glob("*.jpg"))[0]
    code, _, err = call_main("predict", [f"checkpoint={image_checkpoint}", f"source={picture}", "progress=false"],
                             monkeypatch, capsys)
    assert code == 0, err[-2000:]
    folders = list((tmp_path / "runs" / "predict").iterdir())
    assert len(folders) == 1 and re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", folders[0].name)
    assert (folders[0] / "predictions.json").is_file() and "deprecated" not in err
