"""A Prophesee detection release (Gen1, 1Mpx) as a torch Dataset and loader.

The layout is ``ROOT/{train,val,test}/<name>_td.dat`` + ``<name>_bbox.npy``; one sample per kept label time of
each recording (every unique one for Gen1; RVT's ~10 Hz frames for 1Mpx). A sample is the window of events before
its label time encoded by a :class:`Representation` (cached once per recording by
:mod:`spikeyolo.data.sources.prophesee.cache`), letterboxed as the reference loader does (long side resized to
``imgsz``, centred in ``imgsz x imgsz``) or as RVT pads (the short side up to a multiple of the model's stride,
padding at the bottom / right), with labels cleaned up by
:func:`~spikeyolo.data.sources.prophesee.labels.postprocess_boxes`. No augmentation (the SpikeYOLO reference forces
it off for Gen1).

Batches are ultralytics-style dicts, so the trainer and validator use them unchanged:
``img`` uint8 [B, T, C, H, W], ``batch_idx`` [N], ``cls`` [N, 1], ``bboxes`` [N, 4] (normalised cx cy w h in the
letterboxed image), ``im_file`` ("<recording>@<t_us>"), ``ori_shape`` (the sensor's (H, W), e.g. (240, 304)),
``resized_shape``, ``ratio_pad`` (((gain_h, gain_w), (pad_w, pad_h)) from sensor pixels to input pixels, so
detections are scored in sensor pixels whatever the downsampling).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from spikeyolo.data.cache import cache_key
from spikeyolo.data.events import read_boxes
from spikeyolo.data.events.cameras import GEN1, Camera
from spikeyolo.data.sources.prophesee.cache import (build_cache, cache_file, find_recordings, open_frames,
                                                    open_split_recording, recording_size, split_cache_dir)
from spikeyolo.data.sources.prophesee.encoding import Representation
from spikeyolo.data.sources.prophesee.labels import (SAMPLE_TIMES, drop_classes, group_by_time, postprocess_boxes,
                                                     rvt_frame_times)
from spikeyolo.errors import DatasetError

__all__ = ["EventSample", "PropheseeDataset", "LAYOUTS", "INPUT_SHAPES", "PAD_POSITIONS", "letterbox_clip",
           "clip_input", "collate_events", "build_event_dataloader"]

#: ``square``: imgsz x imgsz (the SpikeYOLO reference); ``stride``: the long side imgsz, the other one padded up to
#: a multiple of the model's largest stride (RVT: 640x360 -> 640x384, config/modifier.py L20-32, L53-61).
INPUT_SHAPES = ("square", "stride")
#: ``center``: ultralytics' centred letterbox (the reference); ``corner``: padding at the bottom and right only
#: (RVT's ``InputPadderFromShape``, utils/padding.py L38-43).
PAD_POSITIONS = ("center", "corner")
OTHER_CLASSES = ("error", "drop")
#: ``data.layout``: ``recordings`` (``<name>_td.<ext>`` + ``<name>_bbox.npy`` per recording, encoded into the cache)
#: or ``rvt`` (RVT's preprocessed sequence folders, read as they are: :mod:`spikeyolo.data.sources.prophesee.rvt`)
LAYOUTS = ("recordings", "rvt")


@dataclass
class EventSample:
    """One sample: a recording's label time, its raw boxes (BOX_DTYPE, before any clean-up) and window size."""

    recording: str
    t_us: int
    boxes: np.ndarray
    num_events: int
    width: int
    height: int
    labels: np.ndarray = field(repr=False, default=None)   # the cleaned-up boxes the model is trained on

    @property
    def im_file(self) -> str:
        return f"{self.recording}@{self.t_us}"


def letterbox_clip(frames: np.ndarray, imgsz: int, pad_value: int, channels: int, most_recent_first: bool, *,
                   shape: tuple[int, int] | None = None,
                   pad_position: str = "center") -> tuple[np.ndarray, tuple[tuple[float, float], tuple[int, int]]]:
    """Resize a clip's long side to ``imgsz`` and pad it to ``shape`` (default ``imgsz x imgsz``).

    As ultralytics' ``load_image`` + ``LetterBox(scaleup=False, center=True)``: size ``ceil(side * r)`` with
    r = imgsz / long side, linear interpolation when enlarging and area when shrinking, padding split
    ``round(pad / 2 -+ 0.1)`` (Gen1 at 320: 253 x 320, 33 rows on top, 34 below); ``pad_position="corner"`` puts
    all of it at the bottom and right instead (RVT).

    Args:
        frames: [T, Cs, H, W] uint8, slice 0 the oldest.
        imgsz: the long side after resizing.
        pad_value: fill value of the padding.
        channels: output C (Cs = 1 is repeated to C).
        most_recent_first: reverse the time axis (the reference: model t = 0 is the most recent slice).
        shape: (S_h, S_w) of the output, at least the resized clip; default (imgsz, imgsz).
        pad_position: ``center`` or ``corner``.

    Returns:
        (img [T, C, S_h, S_w] uint8, ratio_pad ((gain_h, gain_w), (pad_w, pad_h)) relative to ``frames``).
    """
    import cv2

    steps, stored, height, width = frames.shape
    out_h, out_w = shape if shape is not None else (imgsz, imgsz)
    ratio = imgsz / max(height, width)
    new_w, new_h = min(math.ceil(width * ratio), imgsz), min(math.ceil(height * ratio), imgsz)
    planes = frames.reshape(steps * stored, height, width)                    # [T*Cs, H, W]
    if (new_h, new_w) != (height, width):
        interpolation = cv2.INTER_LINEAR if ratio > 1 else cv2.INTER_AREA
        planes = np.ascontiguousarray(planes.transpose(1, 2, 0))              # [H, W, T*Cs], as cv2 takes it
        # cv2's area interpolation takes at most 4 channels: resize them 4 at a time
        planes = np.concatenate([cv2.resize(planes[..., i:i + 4], (new_w, new_h), interpolation=interpolation)
                                 .reshape(new_h, new_w, -1) for i in range(0, planes.shape[-1], 4)], axis=-1)
        planes = planes.transpose(2, 0, 1)                                      # [T*Cs, new_h, new_w]
    if pad_position == "corner":
        top, left = 0, 0
    else:
        top, left = round((out_h - new_h) / 2 - 0.1), round((out_w - new_w) / 2 - 0.1)
    out = np.full((steps * stored, out_h, out_w), pad_value, np.uint8)      # (padded plane by plane: no HWC copy
    out[:, top:top + new_h, left:left + new_w] = planes                       # when nothing is resized)
    clip = out.reshape(steps, stored, out_h, out_w)                           # [T*Cs, S_h, S_w] -> [T, Cs, S_h, S_w]
    if stored != channels:
        clip = np.repeat(clip, channels // stored, axis=1)                    # [T, 1, S_h, S_w] -> [T, C, S_h, S_w]
    if most_recent_first and steps > 1:   # (T = 1: a reversed length-1 axis keeps a negative stride that numpy
        clip = clip[::-1]                 # calls contiguous and torch.from_numpy refuses)
    return np.ascontiguousarray(clip), ((new_h / height, new_w / width), (left, top))


def input_shape(grid_hw: tuple[int, int], imgsz: int, mode: str = "square", stride: int = 32) -> tuple[int, int]:
    """(S_h, S_w) of the network input for a clip of ``grid_hw`` (see :data:`INPUT_SHAPES`)."""
    if mode not in INPUT_SHAPES:
        raise DatasetError(f"data.input_shape must be one of {', '.join(INPUT_SHAPES)}, got {mode!r}")
    if mode == "square":
        return imgsz, imgsz
    ratio = imgsz / max(grid_hw)
    return tuple(math.ceil(min(math.ceil(side * ratio), imgsz) / stride) * stride for side in grid_hw)


def clip_input(clip: np.ndarray, sensor_hw: tuple[int, int], representation: Representation, imgsz: int,
               most_recent_first: bool, input_shape_mode: str = "square", pad_position: str = "center",
               stride: int = 32) -> tuple[np.ndarray, tuple[tuple[float, float], tuple[int, int]]]:
    """A cached or freshly encoded clip [T, Cs, h, w] as the network's input and its ratio_pad from *sensor* pixels.

    What the loader does to every sample, for callers that encode windows themselves (streaming prediction):
    ``img, ratio_pad = clip_input(rep.encode(events, t, W, H), (H, W), rep, imgsz, ...)``.

    Returns:
        (img [T, C, S_h, S_w] uint8, ((gain_h, gain_w), (pad_w, pad_h)) mapping sensor pixels to input pixels).
    """
    shape = input_shape(clip.shape[-2:], imgsz, input_shape_mode, stride)
    img, ratio_pad = letterbox_clip(clip, imgsz, representation.empty_value, representation.channels,
                                    most_recent_first, shape=shape, pad_position=pad_position)
    clip_h, clip_w = clip.shape[-2:]
    if (clip_h, clip_w) == tuple(sensor_hw):
        return img, ratio_pad
    # the clip is the sensor divided by the downsampling: gains from the sensor to the resized clip
    (gain_h, gain_w), pad = ratio_pad
    new_h, new_w = round(gain_h * clip_h), round(gain_w * clip_w)
    return img, ((new_h / sensor_hw[0], new_w / sensor_hw[1]), pad)


class PropheseeDataset(torch.utils.data.Dataset):
    """The samples of one split folder of a Prophesee release (built into the cache on construction).

    Args:
        split_dir: folder of ``*_td.dat`` / ``*_bbox.npy`` pairs.
        names: class names (class_id indexes them).
        representation: the event encoding (and T, window, downsampling).
        imgsz: letterbox size (the long side of the input).
        most_recent_first: model t = 0 is the most recent slice (reference).
        label_clamp: ``reference``, ``corners`` or ``rvt`` (:func:`~spikeyolo.data.sources.prophesee.labels.
            postprocess_boxes`).
        min_box_size: drop boxes with a side below this many pixels (reference: 0; RVT's 1Mpx: 5).
        preprocess_workers: cache-building processes (default: the CPU count).
        progress: show the cache progress bar.
        camera: the release (cache folder; sensor size for headers without one).
        other_classes: a box whose class_id has no name: ``error`` (Gen1) or ``drop`` (1Mpx: RVT keeps 3 of 7).
        max_box_width: drop boxes wider than this fraction of the sensor width (RVT's training split: 0.9).
        sample_times: ``all`` (every unique label time) or ``rvt`` (RVT's frames of the cleaned-up labels).
        input_shape: ``square`` or ``stride`` (:data:`INPUT_SHAPES`).
        pad_position: ``center`` or ``corner`` (:data:`PAD_POSITIONS`).
        stride: the model's largest stride (``input_shape="stride"``).

    Attributes:
        samples: [N] :class:`EventSample`, in (recording, time) order.
        labels: per sample {"im_file", "cls" [M, 1], "bboxes" [M, 4] cx cy w h normalised by the sensor size}.
        im_files: the sample ids.
        cache_stats: {"built", "skipped"} recordings of the cache build.
    """

    augment = False            # the reference forces augmentation off for Gen1
    mosaic_closed = True

    def __init__(self, split_dir: str | os.PathLike, names: Sequence[str], representation: Representation,
                 imgsz: int = 320, most_recent_first: bool = True, label_clamp: str = "reference",
                 min_box_size: float = 0.0, preprocess_workers: int | None = None, progress: bool = True, *,
                 camera: Camera = GEN1, other_classes: str = "error", max_box_width: float | None = None,
                 sample_times: str = "all", input_shape: str = "square", pad_position: str = "center",
                 stride: int = 32) -> None:
        self._settings(split_dir, names, representation, imgsz, most_recent_first, other_classes=other_classes,
                       sample_times=sample_times, input_shape=input_shape, pad_position=pad_position, stride=stride)
        recordings = find_recordings(self.split_dir)
        if not recordings:
            rvt = any((path / "event_representations_v2").is_dir() for path in self.split_dir.iterdir())
            raise DatasetError(f"{self.split_dir}: no *_td.dat / *_bbox.npy recordings" + (
                " (it holds RVT's preprocessed sequences: data=gen1_rvt or data=gen4_rvt, or data.layout=rvt)"
                if rvt else ""))
        label_settings = dict(clamp=label_clamp, min_size=float(min_box_size), other_classes=other_classes,
                              max_box_width=max_box_width)
        plans = [self._plan(rec, camera, sample_times, **label_settings) for rec in recordings]
        sample_key = None if sample_times == "all" else \
            cache_key(sample_times, len(self.names), *sorted(label_settings.items()))
        cache_dir = split_cache_dir(self.split_dir, representation, camera.name, sample_key)
        self.cache_stats = build_cache(recordings, representation, cache_dir, preprocess_workers, progress,
                                       desc=f"{camera.name} {self.split_dir.name} ({representation.kind})",
                                       times=[plan[1] for plan in plans], camera=camera)
        self.files = [cache_file(cache_dir, rec) for rec in recordings]
        self.samples: list[EventSample] = []
        self.index: list[tuple[int, int]] = []
        for file_index, (rec, (size, times, groups, labels)) in enumerate(zip(recordings, plans, strict=True)):
            _, cached_times, num_events = open_frames(self.files[file_index])
            if not np.array_equal(cached_times, times):
                raise DatasetError(f"{self.files[file_index]}: cached label times differ from {rec.box_path}; "
                                   "delete the cache file to rebuild it")
            for row, (t_us, boxes, kept) in enumerate(zip(times.tolist(), groups, labels, strict=True)):
                self.samples.append(EventSample(rec.name, int(t_us), boxes, int(num_events[row]), *size, kept))
                self.index.append((file_index, row))
        self.labels = [self._label_record(sample) for sample in self.samples]
        self.im_files = [sample.im_file for sample in self.samples]
        self._frames: dict[int, np.ndarray] = {}

    def _settings(self, split_dir: str | os.PathLike, names: Sequence[str], representation: Representation,
                  imgsz: int, most_recent_first: bool, **choices: Any) -> None:
        """Check the choices and set the attributes every layout shares."""
        for key, choices_of in (("other_classes", OTHER_CLASSES), ("sample_times", SAMPLE_TIMES),
                                ("input_shape", INPUT_SHAPES), ("pad_position", PAD_POSITIONS)):
            if choices[key] not in choices_of:
                raise DatasetError(f"data.{key} must be one of {', '.join(choices_of)}, got {choices[key]!r}")
        self.split_dir = Path(split_dir)
        self.names = list(names)
        self.representation = representation
        self.imgsz = int(imgsz)
        self.most_recent_first = bool(most_recent_first)
        self.input_shape, self.pad_position = choices["input_shape"], choices["pad_position"]
        self.stride = int(choices["stride"])
        self.hyp = SimpleNamespace(close_mosaic=0)   # read by the trainer's close-mosaic check
        self.num_corrupt = 0

    def _clean(self, boxes: np.ndarray, size: tuple[int, int], t_us: int, source: object, clamp: str,
               min_size: float, other_classes: str, max_box_width: float | None) -> np.ndarray:
        """The labels the model is trained on from one label time's raw boxes (``size``: the sensor's)."""
        if other_classes == "error" and len(boxes) and int(boxes["class_id"].max()) >= len(self.names):
            raise DatasetError(f"{source}: class_id {int(boxes['class_id'].max())} at t={t_us} is "
                               f"out of range for {len(self.names)} classes {self.names}")
        # RVT's (9 * W) // 10 for 0.9 (the product rounded first: 0.9 * 1280 is 1152.0000000000002 in binary)
        max_width = None if max_box_width is None else math.floor(round(max_box_width * size[0], 6))
        return postprocess_boxes(drop_classes(boxes, len(self.names)), width=size[0], height=size[1], clamp=clamp,
                                 min_size=min_size, max_width=max_width)

    def _plan(self, rec, camera: Camera, sample_times: str, **label_settings: Any):
        """((width, height), sample times [S], raw boxes per sample, cleaned-up labels per sample) of a recording."""
        size = recording_size(open_split_recording(rec, camera), camera)
        times, groups = group_by_time(read_boxes(rec.box_path))
        labels = [self._clean(boxes, size, t_us, rec.box_path, **label_settings)
                  for t_us, boxes in zip(times.tolist(), groups)]
        if sample_times == "rvt":
            kept = times[[len(boxes) > 0 for boxes in labels]] if len(times) else times
            frames = set(rvt_frame_times(kept, source=str(rec.box_path)).tolist())
            chosen = [i for i, t_us in enumerate(times.tolist()) if t_us in frames]
            times, groups, labels = times[chosen], [groups[i] for i in chosen], [labels[i] for i in chosen]
        return size, times, groups, labels

    @staticmethod
    def _label_record(sample: EventSample) -> dict[str, Any]:
        boxes = sample.labels
        scale = np.array([sample.width, sample.height, sample.width, sample.height], np.float64)
        xywh = np.stack((boxes["x"] + boxes["w"] / 2.0, boxes["y"] + boxes["h"] / 2.0, boxes["w"], boxes["h"]),
                        axis=1).reshape(-1, 4) / scale
        return {"im_file": sample.im_file, "cls": boxes["class_id"].astype(np.float32).reshape(-1, 1),
                "bboxes": xywh.astype(np.float32), "ori_shape": (sample.height, sample.width)}

    def __len__(self) -> int:
        return len(self.samples)

    def __getstate__(self) -> dict[str, Any]:   # memmaps are reopened in each worker process
        state = dict(self.__dict__)
        state["_frames"] = {}
        return state

    def frames(self, index: int) -> np.ndarray:
        """The cached [T, Cs, H, W] uint8 clip of sample ``index``, slice 0 the oldest."""
        file_index, row = self.index[index]
        if file_index not in self._frames:
            self._frames[file_index] = open_frames(self.files[file_index])[0]
        return np.asarray(self._frames[file_index][row])

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample, record = self.samples[index], self.labels[index]
        img, ratio_pad = clip_input(self.frames(index), (sample.height, sample.width), self.representation,
                                    self.imgsz, self.most_recent_first, self.input_shape, self.pad_position,
                                    self.stride)
        (gain_h, gain_w), (pad_w, pad_h) = ratio_pad
        boxes = record["bboxes"].astype(np.float64)
        size_h, size_w = img.shape[-2:]
        # normalised to the sensor -> normalised to the letterboxed S_h x S_w image
        boxes = np.stack(((boxes[:, 0] * sample.width * gain_w + pad_w) / size_w,
                          (boxes[:, 1] * sample.height * gain_h + pad_h) / size_h,
                          boxes[:, 2] * sample.width * gain_w / size_w,
                          boxes[:, 3] * sample.height * gain_h / size_h), axis=1).reshape(-1, 4)
        return {"img": torch.from_numpy(img), "cls": torch.from_numpy(record["cls"]),
                "bboxes": torch.from_numpy(boxes.astype(np.float32)), "im_file": sample.im_file,
                "ori_shape": (sample.height, sample.width), "resized_shape": (size_h, size_w),
                "ratio_pad": ratio_pad}


def collate_events(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into an ultralytics-style batch (``batch_idx`` says which image each box belongs to)."""
    counts = [len(item["cls"]) for item in items]
    return {
        "img": torch.stack([item["img"] for item in items]),                  # B x [T, C, S, S] -> [B, T, C, S, S]
        "cls": torch.cat([item["cls"] for item in items]).reshape(-1, 1),
        "bboxes": torch.cat([item["bboxes"] for item in items]).reshape(-1, 4),
        "batch_idx": torch.cat([torch.full((n,), float(i)) for i, n in enumerate(counts)]),
        "im_file": tuple(item["im_file"] for item in items),
        "ori_shape": tuple(item["ori_shape"] for item in items),
        "resized_shape": tuple(item["resized_shape"] for item in items),
        "ratio_pad": tuple(item["ratio_pad"] for item in items),
    }


# --------------------------------------------------------------------------- loaders


def build_event_dataloader(dataset: PropheseeDataset, batch_size: int, workers: int = 0, shuffle: bool = False,
                           rank: int = -1, drop_last: bool = False,
                           device: torch.device | str | None = None) -> torch.utils.data.DataLoader:
    """A torch DataLoader over a :class:`PropheseeDataset` (its own seeded shuffle generator; DDP sampler if
    rank >= 0)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    batch_size = max(1, min(int(batch_size), len(dataset)))
    workers = max(0, min(int(workers), os.cpu_count() or 1, math.ceil(len(dataset) / batch_size)))
    sampler = None
    if rank >= 0:
        sampler = torch.utils.data.distributed.DistributedSampler(dataset, shuffle=shuffle)
    generator = torch.Generator().manual_seed(6148914691236517205 + max(rank, 0))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None,
                                       sampler=sampler, num_workers=workers, collate_fn=collate_events,
                                       pin_memory=device.type == "cuda", drop_last=drop_last,
                                       persistent_workers=workers > 0, generator=generator)
