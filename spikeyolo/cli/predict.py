"""spikeyolo-predict: detect objects in pictures, video or an event recording with a trained checkpoint.

    spikeyolo-predict checkpoint=best.pt source=image.jpg            (or a folder, a glob "dir/*.png", a video)
    spikeyolo-predict checkpoint=best.pt source=clip.mp4 deploy=spike_driven save_txt=true run_dir=pred/
    spikeyolo-predict checkpoint=gen1/best.pt source=rec_td.dat window_us=50000 carry_state=true

Pictures and video (a checkpoint trained on images; boxes exactly as spikeyolo-eval makes them: both come from
spikeyolo.evaluation.predictions.postprocess, see spikeyolo.Detector). Outputs, in ``run_dir`` (default
runs/predict/<date_time>; ``out=`` is its deprecated old name):

    predictions.json  COCO results ({image_id, file_name, category_id = class + 1, bbox xywh, score}) in pixels of
                      the original pictures
    images.json       every picture or frame with its id, file name, size, source and detection count (and the
                      error, for one that could not be read)
    images/           the pictures with their boxes drawn (``save_images``); a video becomes RUN_DIR/<stem>.mp4
    labels/           YOLO txt labels ``class cx cy w h score`` per picture (``save_txt=true``)

An event recording (``source=REC.dat``, ``.raw`` EVT 2/3, ``.aedat4``, ``.hdf5``/``.h5``, or ``events=REC``; the
format is read from the content; a checkpoint trained on event data) runs window by window
(:mod:`spikeyolo.engine.event_stream`): RUN_DIR/detections.npy (Gen1 box dtype, t = window end),
RUN_DIR/detections.json (per window) and, with ``video=true``, RUN_DIR/detections.gif.

A picture or a video frame that cannot be read is reported in one line and the rest goes on; the last line sums up
(pictures, detections, pictures/s).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from spikeyolo.api import Detector
from spikeyolo.cli.common import UserError, friendly_errors, hydra_app, setup_logging, write_json
from spikeyolo.config import compose, resolve_imgsz
from spikeyolo.data import get_source
from spikeyolo.data.events import BOX_DTYPE, RECORDING_SUFFIXES, open_recording, write_boxes
from spikeyolo.engine.checkpoint import model_from_payload, read_model_checkpoint, trained_data_config
from spikeyolo.engine.distributed import select_device
from spikeyolo.engine.event_stream import EventSettings, last_event_time, stream_recording, window_ends, window_image
from spikeyolo.engine.media import VideoOut, describe_source, iter_media, yolo_label_lines
from spikeyolo.io import write_text
from spikeyolo.plots import draw_detections

log = logging.getLogger("spikeyolo.predict")

MINIMUM_US = {"window_us": 1, "step_us": 1, "start_us": 0, "end_us": 0}



def _output_dir(cfg: DictConfig) -> Path:
    """``run_dir`` (or the deprecated ``out``; not both), default runs/predict/<date_time>; not created here."""
    if cfg.out is not None and cfg.run_dir is not None:
        raise UserError(f"give run_dir= (out= is its deprecated old name), not both (run_dir={cfg.run_dir}, "
                        f"out={cfg.out})")
    if cfg.out is not None:
        return Path(cfg.out)
    if cfg.run_dir is not None:
        return Path(cfg.run_dir)
    return Path("runs/predict") / time.strftime("%Y-%m-%d_%H-%M-%S")


@functools.lru_cache(maxsize=None)
def _out_is_deprecated() -> None:
    """The deprecation note of ``out=``, printed once per process."""
    print("spikeyolo-predict: out= is deprecated and will be removed in the next release; use run_dir= (the same "
          "folder)", file=sys.stderr)


def _make_out(cfg: DictConfig) -> Path:
    """The output folder, created (``run_dir`` as :func:`predict` resolved it); the note on ``out=`` when given."""
    if cfg.out is not None:
        _out_is_deprecated()
    out = Path(cfg.run_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"run_dir={out} cannot be created: {err.strerror or err}") from None
    return out


# --------------------------------------------------------------------------- pictures and video


def predict_media(cfg: DictConfig, files: list[Path], description: str) -> dict[str, Any]:
    """Pictures and video frames through :class:`~spikeyolo.Detector`; writes the outputs of the module docstring."""
    detector = Detector.load(cfg.checkpoint, imgsz=cfg.data.imgsz, use_ema=cfg.use_ema)
    detector.eval_path(cfg.deploy).to(cfg.device)
    out = _make_out(cfg)
    log.info("%s: %s, %s path, imgsz %d, %s", cfg.source, description, cfg.deploy, detector.imgsz, detector.device)
    results, images, videos = [], [], {}
    bad = detections = 0
    started = time.perf_counter()
    frames = iter_media(files)
    for frame, found in tqdm(detector.predict_frames(frames, cfg.conf, cfg.iou, cfg.max_det, cfg.batch_size),
                             desc="predict", unit="img", disable=not cfg.progress):
        image_id = len(images) + 1
        record = {"id": image_id, "file_name": frame.name, "source": frame.path}
        if found is None:
            bad += 1
            log.warning("%s", frame.error)
            images.append({**record, "error": frame.error})
            continue
        detections += len(found)
        images.append({**record, "height": found.shape[0], "width": found.shape[1], "detections": len(found)})
        for (x1, y1, x2, y2), score, cls in zip(found.boxes.tolist(), found.scores.tolist(), found.classes.tolist()):
            results.append({"image_id": image_id, "file_name": frame.name, "category_id": int(cls) + 1,
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
        stem = Path(frame.name).stem
        if cfg.save_txt:
            write_text(out / "labels" / f"{stem}.txt",
                       "".join(f"{line}\n" for line in yolo_label_lines(found.boxes, found.scores, found.classes,
                                                                        found.shape)))
        if cfg.save_images:
            drawn = draw_detections(frame.image, found.boxes, found.scores, found.classes, detector.names)
            if frame.index is None:
                target = out / "images" / frame.name
                target.parent.mkdir(parents=True, exist_ok=True)
                if not cv2.imwrite(str(target), drawn):   # a suffix OpenCV cannot write: PNG
                    cv2.imwrite(str(target.with_suffix(".png")), drawn)
            else:
                if frame.path not in videos:
                    fps = cv2.VideoCapture(frame.path).get(cv2.CAP_PROP_FPS) or 25.0
                    videos[frame.path] = VideoOut(out / f"{Path(frame.path).stem}.mp4", fps,
                                                  (drawn.shape[1], drawn.shape[0]))
                videos[frame.path].write(drawn)
    for video in videos.values():
        video.close()
    seconds = time.perf_counter() - started
    write_json(out / "predictions.json", results, indent=None)
    write_json(out / "images.json", {"checkpoint": str(cfg.checkpoint), "source": str(cfg.source),
                                     "deploy": cfg.deploy, "imgsz": detector.imgsz, "names": detector.names,
                                     "images": images})
    done = len(images) - bad
    summary = {"images": done, "unreadable": bad, "detections": detections,
               "images_per_s": round(done / seconds, 2) if seconds > 0 else None, "run_dir": str(out)}
    print(f"{done} image(s), {detections} detection(s), {summary['images_per_s']} img/s"
          + (f", {bad} unreadable" if bad else "") + f" -> {out}")
    return summary


# --------------------------------------------------------------------------- event recordings


def _event_model(cfg: DictConfig, recording: str):
    """(model in eval mode, the event settings it was trained with).

    The settings are the data config stored in the checkpoint; one that stores none of them (a reference Gen1
    checkpoint records only its image size) reads as the Gen1 data config it was trained with
    (configs/data/gen1.yaml). A model trained on images is refused.
    """
    payload = read_model_checkpoint(cfg.checkpoint)  # a spikeyolo or a reference checkpoint
    trained = trained_data_config(payload)
    source = trained.get("source")
    if source is not None and not get_source(str(source)).is_event_data:
        raise UserError(f"checkpoint={cfg.checkpoint} was trained on images (data.source={source}, "
                        f"{trained.get('name') or 'no name'}) but {recording} is an event recording: give a "
                        "checkpoint trained on event data (data=gen1, data=gen4)")
    if source is None:
        gen1 = OmegaConf.to_container(compose(["data=gen1"]).data, resolve=True)
        trained = {**gen1, **trained}
    return model_from_payload(payload, cfg.use_ema, str(cfg.checkpoint)), trained


def predict_events(cfg: DictConfig, recording: str, key: str = "source") -> dict[str, Any]:
    """An event recording window by window; writes detections.npy, detections.json (and detections.gif)."""
    for name, minimum in MINIMUM_US.items():
        if cfg[name] is not None and cfg[name] < minimum:
            raise UserError(f"{name} must be an integer >= {minimum} (µs), got {cfg[name]}")
    info = open_recording(recording)   # .dat, .raw EVT 2/3, .aedat4, HDF5: by content (one line if unreadable)
    model, trained = _event_model(cfg, f"{key}={recording}")
    imgsz = resolve_imgsz(cfg, model, trained)
    settings = EventSettings.of(model, trained, imgsz, cfg.representation, cfg.window_us, cfg.most_recent_first)
    window = int(settings.representation.window_us)
    step = cfg.step_us or window
    # a .dat's windows are known up front (its last event is read from its end); the other formats are decoded once
    ends = window_ends(window if cfg.start_us is None else cfg.start_us, step, last_event_time(recording),
                       cfg.end_us) if info.format == "dat" else None
    out = _make_out(cfg)
    device = select_device(cfg.device)
    model = model.to(device).eval()
    names = model.names
    windows, rows, frames = [], [], []
    results = stream_recording(model, info, settings, ends, device, cfg.conf, cfg.iou, cfg.max_det, cfg.carry_state,
                               step_us=step, first_end_us=cfg.start_us, end_us=cfg.end_us)
    for result in tqdm(results, total=len(ends) if ends is not None else None, desc="windows",
                       disable=not cfg.progress):
        boxes = result.boxes.tolist()
        windows.append({"t_us": result.t_us, "num_events": int(len(result.events)), "detections": [
            {"class_id": int(c), "class_name": names[int(c)] if int(c) < len(names) else str(int(c)),
             "score": float(s), "x": float(x1), "y": float(y1), "w": float(x2 - x1), "h": float(y2 - y1)}
            for x1, y1, x2, y2, s, c in boxes]})
        rows += [(result.t_us, x1, y1, x2 - x1, y2 - y1, int(c), s, 0) for x1, y1, x2, y2, s, c in boxes]
        if cfg.video and len(frames) < cfg.video_max_frames:
            frames.append(window_image(result.events, result.t_us, window, info.width, info.height,
                                       result.boxes, names))
    write_boxes(out / "detections.npy", np.array(rows, dtype=BOX_DTYPE))
    rep = settings.representation
    write_json(out / "detections.json", {
        "events": recording, "format": info.format, "decoder": info.library, "sensor": [info.width, info.height],
        "checkpoint": str(cfg.checkpoint), "representation": rep.kind,
        "time_steps": rep.time_steps, "window_us": window, "step_us": step, "carry_state": bool(cfg.carry_state),
        "most_recent_first": settings.most_recent_first, "imgsz": imgsz, "names": names, "windows": windows})
    if frames:
        frames[0].save(out / "detections.gif", save_all=True, append_images=frames[1:], loop=0,
                       duration=max(int(1000 / cfg.video_fps), 20))
    summary = {"windows": len(windows), "detections": len(rows), "run_dir": str(out)}
    print(json.dumps(summary))
    return summary


@friendly_errors
def predict(cfg: DictConfig) -> dict[str, Any]:
    """Run spikeyolo-predict (configs/predict.yaml); returns a short summary."""
    setup_logging()
    cfg.run_dir = str(_output_dir(cfg))   # one folder from here on (created when the outputs are written)
    source = cfg.source if cfg.source is not None else cfg.events
    if source is None or cfg.checkpoint is None:
        raise UserError("give source=PATH (an image, a folder, a glob, a video or an event recording) and "
                        "checkpoint=PATH (a checkpoint file)")
    if cfg.source is not None and cfg.events is not None:
        raise UserError(f"give source= or events=, not both (source={cfg.source}, events={cfg.events})")
    if not Path(cfg.checkpoint).is_file():
        raise UserError(f"checkpoint not found: {cfg.checkpoint}")
    if cfg.events is not None or Path(str(source)).suffix.lower() in RECORDING_SUFFIXES:
        if not Path(source).is_file():
            raise UserError(f"events file not found: {source}")
        return predict_events(cfg, str(source), "events" if cfg.events is not None else "source")
    files, description = describe_source(str(source))
    if not files:
        raise UserError(f"source={source}: no image or video there (an image, a folder of images, a glob such as "
                        "'dir/*.jpg', a video or an event recording: .dat, .raw, .aedat4, .hdf5)")
    return predict_media(cfg, files, description)


main = hydra_app("predict", predict, __doc__)


if __name__ == "__main__":
    main()
