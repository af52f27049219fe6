"""Prophesee Gen1 as a torch Dataset and loader (reference §6).

The layout is ``ROOT/{train,val,test}/<name>_td.dat`` + ``<name>_bbox.npy``; one sample per unique label time of
each recording. A sample is the window of events before its label time encoded by a :class:`Representation`
(cached once per recording by :mod:`spikeyolo.data.sources.gen1.cache`), letterboxed to ``imgsz`` as the reference
loader does (long side resized to ``imgsz``, centred, padded), with labels cleaned up as ``pre_gen1.py`` does
(:func:`~spikeyolo.data.sources.gen1.labels.postprocess_boxes`). No augmentation: the reference forces it off
for Gen1.

Batches are ultralytics-style dicts, so the trainer and validator use them unchanged:
``img`` uint8 [B, T, C, S, S], ``batch_idx`` [N], ``cls`` [N, 1], ``bboxes`` [N, 4] (normalised cx cy w h in the
letterboxed image), ``im_file`` ("<recording>@<t_us>"), ``ori_shape`` ((240, 304)), ``resized_shape``,
``ratio_pad`` (((gain_h, gain_w), (pad_w, pad_h))).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from spikeyolo.data.events import read_boxes, read_dat_header
from spikeyolo.data.sources.gen1.cache import (Representation, build_cache, cache_file, find_recordings, open_frames,
                                               split_cache_dir)
from spikeyolo.data.sources.gen1.labels import group_by_time, postprocess_boxes
from spikeyolo.data.sources.gen1.spec import representation_from_config
from spikeyolo.data.spec import DatasetSpec
from spikeyolo.errors import DatasetError
from spikeyolo.io import plain

__all__ = ["Gen1Sample", "Gen1Dataset", "letterbox_clip", "collate_gen1", "build_gen1_dataloader",
           "gen1_dataloader_from_config"]


@dataclass
class Gen1Sample:
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


def letterbox_clip(frames: np.ndarray, imgsz: int, pad_value: int, channels: int,
                   most_recent_first: bool) -> tuple[np.ndarray, tuple[tuple[float, float], tuple[int, int]]]:
    """Resize a clip's long side to ``imgsz`` and pad it centred to ``imgsz x imgsz`` (the reference loader).

    As ultralytics' ``load_image`` + ``LetterBox(scaleup=False, center=True)``: size ``ceil(side * r)`` with
    r = imgsz / long side, linear interpolation when enlarging and area when shrinking, padding split
    ``round(pad / 2 -+ 0.1)`` (Gen1 at 320: 253 x 320, 33 rows on top, 34 below).

    Args:
        frames: [T, Cs, H, W] uint8, slice 0 the oldest.
        imgsz: output side S.
        pad_value: fill value of the padding.
        channels: output C (Cs = 1 is repeated to C).
        most_recent_first: reverse the time axis (the reference: model t = 0 is the most recent slice).

    Returns:
        (img [T, C, S, S] uint8, ratio_pad ((gain_h, gain_w), (pad_w, pad_h))).
    """
    import cv2

    steps, stored, height, width = frames.shape
    ratio = imgsz / max(height, width)
    new_w, new_h = min(math.ceil(width * ratio), imgsz), min(math.ceil(height * ratio), imgsz)
    planes = np.ascontiguousarray(frames.reshape(steps * stored, height, width).transpose(1, 2, 0))  # [H, W, T*Cs]
    if (new_h, new_w) != (height, width):
        interpolation = cv2.INTER_LINEAR if ratio > 1 else cv2.INTER_AREA
        # cv2's area interpolation takes at most 4 channels: resize them 4 at a time
        planes = np.concatenate([cv2.resize(planes[..., i:i + 4], (new_w, new_h), interpolation=interpolation)
                                 .reshape(new_h, new_w, -1) for i in range(0, planes.shape[-1], 4)], axis=-1)
    pad_h, pad_w = (imgsz - new_h) / 2, (imgsz - new_w) / 2
    top, left = round(pad_h - 0.1), round(pad_w - 0.1)
    out = np.full((imgsz, imgsz, steps * stored), pad_value, np.uint8)
    out[top:top + new_h, left:left + new_w] = planes
    clip = out.transpose(2, 0, 1).reshape(steps, stored, imgsz, imgsz)        # [S, S, T*Cs] -> [T, Cs, S, S]
    if stored != channels:
        clip = np.repeat(clip, channels // stored, axis=1)                    # [T, 1, S, S] -> [T, C, S, S]
    if most_recent_first and steps > 1:   # (T = 1: a reversed length-1 axis keeps a negative stride that numpy
        clip = clip[::-1]                 # calls contiguous and torch.from_numpy refuses)
    return np.ascontiguousarray(clip), ((new_h / height, new_w / width), (left, top))


class Gen1Dataset(torch.utils.data.Dataset):
    """The samples of one Gen1 split folder (built into the cache on construction).

    Args:
        split_dir: folder of ``*_td.dat`` / ``*_bbox.npy`` pairs.
        names: class names (class_id indexes them).
        representation: the event encoding (and T, window).
        imgsz: letterbox size.
        most_recent_first: model t = 0 is the most recent slice (reference).
        label_clamp: ``reference`` or ``corners`` (:func:`~spikeyolo.data.sources.gen1.labels.postprocess_boxes`).
        min_box_size: drop boxes with a side below this many pixels (reference: 0).
        preprocess_workers: cache-building processes (default: the CPU count).
        progress: show the cache progress bar.

    Attributes:
        samples: [N] :class:`Gen1Sample`, in (recording, time) order.
        labels: per sample {"im_file", "cls" [M, 1], "bboxes" [M, 4] cx cy w h normalised by the sensor size}.
        im_files: the sample ids.
        cache_stats: {"built", "skipped"} recordings of the cache build.
    """

    augment = False            # the reference forces augmentation off for Gen1
    mosaic_closed = True

    def __init__(self, split_dir: str | os.PathLike, names: Sequence[str], representation: Representation,
                 imgsz: int = 320, most_recent_first: bool = True, label_clamp: str = "reference",
                 min_box_size: float = 0.0, preprocess_workers: int | None = None, progress: bool = True) -> None:
        self.split_dir = Path(split_dir)
        self.names = list(names)
        self.representation = representation
        self.imgsz = int(imgsz)
        self.most_recent_first = bool(most_recent_first)
        self.hyp = SimpleNamespace(close_mosaic=0)   # read by the trainer's close-mosaic check
        recordings = find_recordings(self.split_dir)
        if not recordings:
            raise DatasetError(f"{self.split_dir}: no *_td.dat / *_bbox.npy recordings")
        cache_dir = split_cache_dir(self.split_dir, representation)
        self.cache_stats = build_cache(recordings, representation, cache_dir, preprocess_workers, progress,
                                       desc=f"gen1 {self.split_dir.name} ({representation.kind})")
        self.files = [cache_file(cache_dir, rec) for rec in recordings]
        self.samples: list[Gen1Sample] = []
        self.index: list[tuple[int, int]] = []
        for file_index, rec in enumerate(recordings):
            header = read_dat_header(rec.dat_path)
            times, groups = group_by_time(read_boxes(rec.box_path))
            _, cached_times, num_events = open_frames(self.files[file_index])
            if not np.array_equal(cached_times, times):
                raise DatasetError(f"{self.files[file_index]}: cached label times differ from {rec.box_path}; "
                                   "delete the cache file to rebuild it")
            for row, (t_us, boxes) in enumerate(zip(times.tolist(), groups)):
                if len(boxes) and int(boxes["class_id"].max()) >= len(self.names):
                    raise DatasetError(f"{rec.box_path}: class_id {int(boxes['class_id'].max())} at t={t_us} is "
                                       f"out of range for {len(self.names)} classes {self.names}")
                labels = postprocess_boxes(boxes, width=header.width, height=header.height, clamp=label_clamp,
                                           min_size=min_box_size)
                self.samples.append(Gen1Sample(rec.name, int(t_us), boxes, int(num_events[row]), header.width,
                                               header.height, labels))
                self.index.append((file_index, row))
        self.labels = [self._label_record(sample) for sample in self.samples]
        self.im_files = [sample.im_file for sample in self.samples]
        self.num_corrupt = 0
        self._frames: dict[int, np.ndarray] = {}

    @staticmethod
    def _label_record(sample: Gen1Sample) -> dict[str, Any]:
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
        rep = self.representation
        img, ratio_pad = letterbox_clip(self.frames(index), self.imgsz, rep.empty_value, rep.channels,
                                        self.most_recent_first)
        (gain_h, gain_w), (pad_w, pad_h) = ratio_pad
        boxes = record["bboxes"].astype(np.float64)
        size = float(self.imgsz)
        # normalised to the sensor -> normalised to the letterboxed S x S image
        boxes = np.stack(((boxes[:, 0] * sample.width * gain_w + pad_w) / size,
                          (boxes[:, 1] * sample.height * gain_h + pad_h) / size,
                          boxes[:, 2] * sample.width * gain_w / size,
                          boxes[:, 3] * sample.height * gain_h / size), axis=1).reshape(-1, 4)
        return {"img": torch.from_numpy(img), "cls": torch.from_numpy(record["cls"]),
                "bboxes": torch.from_numpy(boxes.astype(np.float32)), "im_file": sample.im_file,
                "ori_shape": (sample.height, sample.width), "resized_shape": (self.imgsz, self.imgsz),
                "ratio_pad": ratio_pad}


def collate_gen1(items: list[dict[str, Any]]) -> dict[str, Any]:
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


def build_gen1_dataloader(dataset: Gen1Dataset, batch_size: int, workers: int = 0, shuffle: bool = False,
                          rank: int = -1, drop_last: bool = False,
                          device: torch.device | str | None = None) -> torch.utils.data.DataLoader:
    """A torch DataLoader over a :class:`Gen1Dataset` (its own seeded shuffle generator; DDP sampler if rank >= 0)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    batch_size = max(1, min(int(batch_size), len(dataset)))
    workers = max(0, min(int(workers), os.cpu_count() or 1, math.ceil(len(dataset) / batch_size)))
    sampler = None
    if rank >= 0:
        sampler = torch.utils.data.distributed.DistributedSampler(dataset, shuffle=shuffle)
    generator = torch.Generator().manual_seed(6148914691236517205 + max(rank, 0))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None,
                                       sampler=sampler, num_workers=workers, collate_fn=collate_gen1,
                                       pin_memory=device.type == "cuda", drop_last=drop_last,
                                       persistent_workers=workers > 0, generator=generator)


def gen1_dataloader_from_config(spec: DatasetSpec, data_cfg: Mapping[str, Any], split: str, batch_size: int,
                                workers: int, rank: int = -1, device: torch.device | str | None = None,
                                window_us: int | None = None, progress: bool = True) -> torch.utils.data.DataLoader:
    """The loader of one split of a Gen1 spec with the data config's values; ``window_us`` overrides the window.

    Training splits are shuffled, validation splits are not; neither is augmented.
    """
    paths = spec.split_paths(split)
    if not paths:
        raise DatasetError(f"{spec.root}: dataset {spec.name!r} has no {split} split folder")
    cfg = plain(data_cfg)
    dataset = Gen1Dataset(paths[0], spec.names, representation_from_config(cfg, window_us),
                          imgsz=int(cfg.get("imgsz") or 320),
                          most_recent_first=bool(cfg.get("most_recent_first", True)),
                          label_clamp=str(cfg.get("label_clamp") or "reference"),
                          min_box_size=float(cfg.get("min_box_size") or 0.0),
                          preprocess_workers=cfg.get("preprocess_workers"), progress=progress)
    return build_gen1_dataloader(dataset, batch_size, workers, shuffle=split == "train", rank=rank, device=device)
