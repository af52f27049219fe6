"""Streaming inference over an event recording: windows of events, encoded as in training, through a detector.

A recording is any format :func:`spikeyolo.data.events.open_recording` reads (a Prophesee ``.dat``, ``.raw`` EVT
2/3, AEDAT4, HDF5; detected by content). Windows end at ``first_end_us``, ``+ step_us``, ... until the last event is
covered (:func:`window_ends`, :func:`event_windows`); each
window of ``window_us`` is encoded with the checkpoint's representation, T, letterbox and time order
(:class:`EventSettings`) and run through the model with batch size 1 by :func:`spikeyolo.engine.predict.detect`
(the inference path of evaluation and :class:`spikeyolo.Detector`; the boxes come back in sensor pixels). With
``carry_state`` the windows run in the model's streaming mode (``model.streaming()``, :mod:`spikeyolo.nn.protocol`):
each forward continues the neuron recursion of the previous one (Eq. 11: H[0] = decay * (H[-1] - S[-1]) + X[0];
the reference Gen1 LIF likewise). The membrane that carries over is the one after the window's last time step;
with the reference time order (``most_recent_first``, the model's t = 0 is the newest slice) that is the *oldest*
slice, so carrying state is meant for models trained oldest-first. It works with T = 1 too (the membrane then
leaks across windows instead of being dropped). Models are trained with a reset per sample, so a carried membrane
is a shift of the input distribution unless the model was trained so.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from spikeyolo.config import checked_time_steps
from spikeyolo.data import REPRESENTATION_KEYS, representation_from_config
from spikeyolo.data.sources.prophesee import clip_input
from spikeyolo.data.events import (RecordingInfo, open_recording, read_dat, read_dat_header, recording_windows,
                                   spikeyolo_frames)
from spikeyolo.engine.predict import detect
from spikeyolo.errors import UserError
from spikeyolo.evaluation.predictions import ImageDetections
from spikeyolo.plots import draw_detections

__all__ = ["EventSettings", "EventWindow", "window_ends", "last_event_time", "event_windows", "stream_recording",
           "window_image"]



@dataclass
class EventSettings:
    """How windows are encoded, as the run's loader encoded its samples: the representation (with T, the window and
    the downsampling), the input size and shape (``square`` letterbox, or ``stride``: the short side padded to a
    stride multiple), where the padding goes (``center`` or ``corner``) and the time order."""

    representation: Any
    imgsz: int
    most_recent_first: bool
    input_shape: str = "square"
    pad_position: str = "center"
    stride: int = 32

    @classmethod
    def of(cls, model: torch.nn.Module, trained: Mapping[str, Any], imgsz: int, representation: str | None = None,
           window_us: int | None = None, most_recent_first: bool | None = None) -> "EventSettings":
        """The checkpoint's settings (``trained``: its run's data config), each overridable.

        Raises:
            UserError: the representation's channels do not match the model's input.
        """
        rep = representation_from_config({
            **{key: trained.get(key) for key in REPRESENTATION_KEYS},
            "representation": representation or trained["representation"],
            "time_steps": checked_time_steps(None, model, trained),   # T settled where every command settles it
            "window_us": window_us or trained["window_us"]})
        if rep.channels != model.in_chs:
            raise UserError(f"representation {rep.kind!r} has {rep.channels} channels but the checkpoint's model "
                            f"takes {model.in_chs}")
        order = trained["most_recent_first"] if most_recent_first is None else most_recent_first
        return cls(rep, int(imgsz), bool(order), str(trained.get("input_shape") or "square"),
                   str(trained.get("pad_position") or "center"), int(max(model.strides)))


@dataclass
class EventWindow:
    """One window's result: its end time, its events and its detections (in sensor pixels)."""

    t_us: int
    events: np.ndarray
    detections: ImageDetections

    @property
    def boxes(self) -> np.ndarray:
        """[N, 6] float64 (x1, y1, x2, y2, score, class index) in sensor pixels."""
        return self.detections.rows()


def last_event_time(path: str | Path) -> int:
    """Timestamp (µs) of the last event of a recording, read from its last record."""
    header = read_dat_header(path)
    if header.num_events == 0:
        raise UserError(f"{header.path}: the recording has no events")
    offset = header.data_offset + (header.num_events - 1) * header.event_size
    return int(np.fromfile(header.path, dtype="<u4", count=2, offset=offset)[0])


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


def event_windows(recording: str | Path | RecordingInfo, window_us: int, ends: list[int] | None = None,
                  step_us: int | None = None, first_end_us: int | None = None,
                  end_us: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """``(t_end, events of [t_end - window_us, t_end))`` of any recording (.dat, .raw, .aedat4, HDF5: by content).

    ``ends`` given: those windows. Else ends ``first_end_us``, + ``step_us``, ... up to the first past the last event
    (or ``end_us``); ``first_end_us`` None: ``window_us`` for a .dat (its clock starts at 0), the first event's time
    + ``window_us`` for the others (AEDAT4 counts Unix microseconds). A .dat is read window by window at its offsets
    (:func:`read_dat`); the other formats in one decoding pass holding one window and one chunk
    (:func:`spikeyolo.data.events.recording_windows`).
    """
    info = recording if isinstance(recording, RecordingInfo) else open_recording(recording)
    if info.format != "dat":
        if ends is not None:
            return recording_windows(info, window_us, ends=ends)
        return recording_windows(info, window_us, step_us=step_us or window_us, first_end_us=first_end_us,
                                 end_us=end_us)
    if ends is None:
        first = window_us if first_end_us is None else first_end_us
        ends = window_ends(first, step_us or window_us, last_event_time(info.path), end_us)
    return ((int(t_end), read_dat(info.path, t_end - window_us, t_end)) for t_end in ends)


@torch.no_grad()
def stream_recording(model: torch.nn.Module, recording: str | Path | RecordingInfo, settings: EventSettings,
                     ends: list[int] | None, device: torch.device, conf: float = 0.25, iou: float = 0.7,
                     max_det: int = 300, carry_state: bool = False, step_us: int | None = None,
                     first_end_us: int | None = None, end_us: int | None = None) -> Iterator[EventWindow]:
    """Detections of every window of a recording (a generator: one window at a time; windows as
    :func:`event_windows`: ``ends``, or ``step_us`` / ``first_end_us`` / ``end_us``).

    Raises:
        UserError: ``carry_state`` on a model without a streaming mode (a converted Spiking-YOLO).
        EventFileError: a recording that cannot be read (one line naming it).
    """
    info = recording if isinstance(recording, RecordingInfo) else open_recording(recording)
    rep = settings.representation
    window = int(rep.window_us)
    try:
        stream = model.streaming(bool(carry_state))
    except NotImplementedError as err:
        raise UserError(f"carry_state=true: {err}") from None
    with stream:
        for t_end, events in event_windows(info, window, ends, step_us, first_end_us, end_us):
            clip = rep.encode(events, t_end, info.width, info.height)                      # [T, Cs, H, W]
            image, ratio_pad = clip_input(clip, (info.height, info.width), rep, settings.imgsz,
                                          settings.most_recent_first, settings.input_shape, settings.pad_position,
                                          settings.stride)
            # [T, C, S, S] -> [1, T, C, S, S]: a batch of one, time-major inside detect
            (found,) = detect(model, torch.from_numpy(image)[None], [ratio_pad], [(info.height, info.width)],
                              device, conf, iou, max_det)
            yield EventWindow(int(t_end), events, found)


def window_image(events: np.ndarray, t_end: int, window_us: int, width: int, height: int, boxes: np.ndarray,
                 names: list[str]) -> Image.Image:
    """A window as a PIL image: grey, events white (ON) / black (OFF), boxes [N, 6] in sensor pixels drawn as every
    prediction draws them (:func:`spikeyolo.plots.draw_detections`)."""
    frame = spikeyolo_frames(events, t_end, time_steps=1, width=width, height=height, window_us=window_us)[0]
    boxes = np.asarray(boxes, np.float64).reshape(-1, 6)
    drawn = draw_detections(frame, boxes[:, :4], boxes[:, 4], boxes[:, 5], names)     # grey: BGR = RGB
    image = Image.fromarray(np.ascontiguousarray(drawn[:, :, ::-1]), "RGB")            # BGR boxes -> RGB
    ImageDraw.Draw(image).text((2, 2), f"t={t_end / 1e6:.3f}s", fill=(255, 255, 0))
    return image
