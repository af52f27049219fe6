"""spikeyolo-predict: run a detector over an event recording window by window (streaming inference).

Windows end at ``start_us``, ``start_us + step_us``, ... until the last event is covered; each window of
``window_us`` is encoded as in training (the checkpoint's representation, T, letterbox and time order) and run
through the model. Outputs, in ``out``:

    detections.npy   all detections in the Gen1 box dtype (t = window end, x y w h in sensor pixels, class_id,
                     class_confidence = score, track_id 0), the format the Prophesee evaluator reads
    detections.json  the same per window: {"t_us", "num_events", "detections": [{class_id, class_name, score,
                     x, y, w, h}]} plus the settings
    detections.gif   with video=true: each window as a grey event frame with the boxes (PIL)

``carry_state=true`` keeps the neurons' membrane from one window to the next: the windows run in the model's
streaming mode (``model.streaming()``, :mod:`spikeyolo.nn.protocol`), where each forward continues the neuron
recursion of the previous one (Eq. 11: H[0] = decay * (H[-1] - S[-1]) + X[0]; the reference Gen1 LIF likewise).
The membrane that carries over is the one after the window's last time step; with the reference time order
(``most_recent_first``, the model's t = 0 is the newest slice) that is the *oldest* slice, so carrying state is
meant for models trained oldest-first. It works with T = 1 too (the membrane then leaks across windows instead
of being dropped). Models are trained with a reset per sample, so a carried membrane is a shift of the input
distribution unless the model was trained so. Every window has batch size 1, so the carried state always fits.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageDraw

from spikeyolo._ultralytics.ops import non_max_suppression
from spikeyolo.cli.common import UserError, friendly_errors, hydra_app, setup_logging, write_json
from spikeyolo.config import compose, resolve_imgsz
from spikeyolo.data import get_source, letterbox_clip, representation_from_config
from spikeyolo.data.events import BOX_DTYPE, read_dat, read_dat_header, spikeyolo_frames, write_boxes
from spikeyolo.engine.checkpoint import model_from_payload, read_model_checkpoint, trained_data_config
from spikeyolo.engine.distributed import select_device
from spikeyolo.evaluation import unletterbox_boxes
from spikeyolo.structures import model_input

log = logging.getLogger("spikeyolo.predict")

_COLOURS = [(0, 200, 255), (255, 90, 90), (120, 255, 120), (255, 220, 0)]


def _last_event_time(header) -> int:
    """Timestamp (µs) of the last event, read from the file's last record."""
    if header.num_events == 0:
        raise UserError(f"{header.path}: the recording has no events")
    offset = header.data_offset + (header.num_events - 1) * header.event_size
    record = np.fromfile(header.path, dtype="<u4", count=2, offset=offset)
    return int(record[0])


MINIMUM_US = {"window_us": 1, "step_us": 1, "start_us": 0, "end_us": 0}


def _load(cfg: DictConfig):
    """(model in eval mode, the event settings it was trained with).

    The settings are the data config stored in the checkpoint; one that stores none of them (a reference Gen1
    checkpoint records only its image size) reads as the Gen1 data config it was trained with
    (configs/data/gen1.yaml). A model trained on images is refused.
    """
    payload = read_model_checkpoint(cfg.checkpoint)  # a spikeyolo or a reference checkpoint
    model = model_from_payload(payload, cfg.use_ema, str(cfg.checkpoint))
    trained = trained_data_config(payload)
    source = trained.get("source")
    if source is not None and not get_source(str(source)).is_event_data:
        raise UserError(f"checkpoint={cfg.checkpoint} was trained on images (data.source={source}, "
                        f"{trained.get('name') or 'no name'}) but events={cfg.events} is an event recording: give a "
                        "checkpoint trained on event data (data=gen1)")
    if source is None:
        gen1 = OmegaConf.to_container(compose(["data=gen1"]).data, resolve=True)
        trained = {**gen1, **trained}
    return model, trained


def window_ends(first_end_us: int, step_us: int, last_event_us: int, end_us: int | None = None) -> list[int]:
    """Window ends first, first + step, ... up to the first end past the last event (or ``end_us``)."""
    ends, t_end = [], int(first_end_us)
    limit = int(end_us) if end_us is not None else None
    while limit is None or t_end <= limit:
        ends.append(t_end)
        if t_end > last_event_us:
            break
        t_end += int(step_us)
    return ends


def _frame_image(events: np.ndarray, t_end: int, window_us: int, width: int, height: int, boxes: np.ndarray,
                 names: list[str]):
    """A PIL image of a window: grey, events white (ON) / black (OFF), boxes [N, 6] in sensor pixels."""
    frame = spikeyolo_frames(events, t_end, time_steps=1, width=width, height=height, window_us=window_us)[0]
    image = Image.fromarray(frame, "RGB")
    draw = ImageDraw.Draw(image)
    for x1, y1, x2, y2, score, cls in boxes.tolist():
        colour = _COLOURS[int(cls) % len(_COLOURS)]
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=1)
        label = names[int(cls)] if int(cls) < len(names) else str(int(cls))
        draw.text((x1 + 1, max(y1 - 10, 0)), f"{label} {score:.2f}", fill=colour)
    draw.text((2, 2), f"t={t_end / 1e6:.3f}s", fill=(255, 255, 0))
    return image


@friendly_errors
def predict(cfg: DictConfig) -> dict[str, Any]:
    """Run the streaming prediction of ``cfg`` (configs/predict.yaml); returns a short summary."""
    setup_logging()
    if cfg.events is None or cfg.checkpoint is None:
        raise UserError("give events=FILE.dat (a Prophesee event recording) and checkpoint=PATH (a checkpoint file)")
    if not Path(cfg.events).is_file():
        raise UserError(f"events file not found: {cfg.events}")
    if not Path(cfg.checkpoint).is_file():
        raise UserError(f"checkpoint not found: {cfg.checkpoint}")
    for key, minimum in MINIMUM_US.items():
        if cfg[key] is not None and cfg[key] < minimum:
            raise UserError(f"{key} must be an integer >= {minimum} (µs), got {cfg[key]}")
    model, data = _load(cfg)
    header = read_dat_header(cfg.events)
    settings = {"representation": cfg.representation or data["representation"], "time_steps": model.time_steps,
                "window_us": cfg.window_us or data["window_us"], "voxel_bins": data.get("voxel_bins"),
                "voxel_clip": data.get("voxel_clip")}
    rep = representation_from_config(settings)
    if rep.channels != model.in_chs:
        raise UserError(f"representation {rep.kind!r} has {rep.channels} channels but the checkpoint's model takes "
                        f"{model.in_chs}")
    window = int(rep.window_us)
    step = cfg.step_us or window
    imgsz = resolve_imgsz(cfg, model, data)
    most_recent_first = bool(data["most_recent_first"] if cfg.most_recent_first is None else cfg.most_recent_first)
    ends = window_ends(window if cfg.start_us is None else cfg.start_us, step, _last_event_time(header), cfg.end_us)
    names = model.names
    out = Path(cfg.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"out={out} cannot be created: {err.strerror or err}") from None
    device = select_device(cfg.device)
    model = model.to(device).eval()

    windows, rows, frames = [], [], []
    try:
        stream = model.streaming(bool(cfg.carry_state))
    except NotImplementedError as err:
        raise UserError(f"carry_state=true: {err}") from None
    with torch.no_grad(), stream:
        for t_end in ends:
            events = read_dat(cfg.events, t_end - window, t_end)
            clip = rep.encode(events, t_end, header.width, header.height)          # [T, Cs, H, W]
            img, ratio_pad = letterbox_clip(clip, imgsz, rep.empty_value, rep.channels, most_recent_first)
            images = model_input(torch.from_numpy(img)[None], device)             # [T, 1, C, S, S]
            decoded, _ = model(images)
            dets = non_max_suppression(decoded.float(), cfg.conf, cfg.iou, cfg.max_det)[0].cpu()
            boxes = torch.cat((unletterbox_boxes(dets[:, :4], ratio_pad, (header.height, header.width)),
                               dets[:, 4:6].double()), 1).numpy()                 # [N, 6] sensor pixels
            windows.append({"t_us": int(t_end), "num_events": int(len(events)), "detections": [
                {"class_id": int(c), "class_name": names[int(c)] if int(c) < len(names) else str(int(c)),
                 "score": float(s), "x": float(x1), "y": float(y1), "w": float(x2 - x1), "h": float(y2 - y1)}
                for x1, y1, x2, y2, s, c in boxes.tolist()]})
            rows += [(t_end, x1, y1, x2 - x1, y2 - y1, int(c), s, 0) for x1, y1, x2, y2, s, c in boxes.tolist()]
            if cfg.video and len(frames) < cfg.video_max_frames:
                frames.append(_frame_image(events, t_end, window, header.width, header.height, boxes, names))
    write_boxes(out / "detections.npy", np.array(rows, dtype=BOX_DTYPE))
    write_json(out / "detections.json", {
        "events": str(cfg.events), "checkpoint": str(cfg.checkpoint), "representation": rep.kind,
        "time_steps": rep.time_steps, "window_us": window, "step_us": step, "carry_state": bool(cfg.carry_state),
        "most_recent_first": most_recent_first, "imgsz": imgsz, "names": names, "windows": windows})
    if frames:
        frames[0].save(out / "detections.gif", save_all=True, append_images=frames[1:], loop=0,
                       duration=max(int(1000 / cfg.video_fps), 20))
    summary = {"windows": len(windows), "detections": len(rows), "out": str(out)}
    print(json.dumps(summary))
    return summary


main = hydra_app("predict", predict, __doc__)


if __name__ == "__main__":
    main()
