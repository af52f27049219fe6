"""YOLO-layout detection datasets with ultralytics' stock v8 pipeline (mosaic, random perspective, HSV, flips,
letterbox, close_mosaic) and its data loader. Two changes keep ultralytics from writing beside the data: the
labels *.cache goes to a file the caller names (ultralytics writes labels/<split>.cache), and a JPEG without its
end marker is never rewritten in place (ultralytics "restores" it): it is used as it is when OpenCV decodes it
(e.g. trailing bytes after the end marker) and skipped as corrupt otherwise (a truncated file). spikeyolo.data is
the caller; it supplies the strict label check, so ultralytics' "corrupt" count is left with bad images only.

Also the state an exact resume needs of a training loader (:func:`loader_state`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from copy import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spikeyolo._ultralytics import env  # noqa: F401  (offline environment before ultralytics)
from spikeyolo._ultralytics.env import IterableSimpleNamespace
from spikeyolo.errors import DatasetError
import ultralytics.data.utils as _ul_data_utils
from ultralytics.data.build import build_dataloader as _ul_build_dataloader
from ultralytics.data.dataset import YOLODataset as _UlYOLODataset
from ultralytics.utils.patches import imread as _ul_imread
from ultralytics.utils.torch_utils import torch_distributed_zero_first as _ul_zero_first

__all__ = ["YoloDetectionDataset", "build_yolo_dataset", "build_yolo_dataloader", "close_dataset_mosaic",
           "loader_state", "restore_loader_state"]

_TRUNCATED_JPEG_MSG = "corrupt JPEG restored and saved"  # ultralytics' message for a JPEG without end marker


class YoloDetectionDataset(_UlYOLODataset):
    """ultralytics' ``YOLODataset`` (detect task) that writes nothing beside the data.

    Args (beyond YOLODataset's):
        label_cache: file for the scanned-labels cache.
        label_check: called as ``label_check(label_file)`` for every image during a scan; raises to reject the set.
        label_files_for: maps the list of image paths to label paths (default: ultralytics' images/ -> labels/).

    Attributes:
        num_corrupt: images the scan skipped (unreadable, too small, unknown format, missing).
        scan_messages: ultralytics' scan messages (one per skipped image, plus duplicate-label notes).
        hyp: the augmentation namespace, kept for :func:`close_dataset_mosaic`.
        mosaic_closed: True after :func:`close_dataset_mosaic`.
    """

    def __init__(self, *args: Any, label_cache: str | Path, label_check: Callable[[str], Any] | None = None,
                 label_files_for: Callable[[list[str]], list[str]] | None = None, **kwargs: Any) -> None:
        self.label_cache = Path(label_cache)
        self.label_check = label_check
        self.label_files_for = label_files_for
        self.num_corrupt = 0
        self.scan_messages: list[str] = []
        self.hyp = copy(kwargs["hyp"])
        self.mosaic_closed = False
        super().__init__(*args, **kwargs)

    def load_image(self, i: int, rect_mode: bool = True):
        """ultralytics' image loading; an image that passed the scan but cannot be decoded names its file."""
        try:
            return super().load_image(i, rect_mode)
        except FileNotFoundError:
            raise DatasetError(f"{self.im_files[i]}: image cannot be decoded (corrupt after the label scan)") from None

    def get_label_files(self) -> list[str]:
        if self.label_files_for is None:
            return super().get_label_files()
        self.label_files = list(self.label_files_for(self.im_files))
        return self.label_files

    def get_cache_hash(self) -> str:
        return super().get_cache_hash() + "-spikeyolo1"  # never reuse a cache scanned without label_check

    def _load_or_scan_cache(self, cache_path: Path, cache_hash: str) -> tuple[dict, bool]:
        cache, exists = super()._load_or_scan_cache(self.label_cache, cache_hash)
        self.num_corrupt = int(cache["results"][3])  # (found, missing, empty, corrupt, total)
        self.scan_messages = list(cache["msgs"])
        return cache, exists

    def verify_args(self) -> tuple:
        verify, iterable = super().verify_args()
        return functools.partial(_verify_image_label, verify, self.label_check), iterable

    def cache_labels(self, *args: Any, **kwargs: Any) -> dict:
        self.label_cache.parent.mkdir(parents=True, exist_ok=True)
        with _jpeg_restore_disabled():
            return super().cache_labels(*args, **kwargs)


def _verify_image_label(verify: Callable, label_check: Callable[[str], Any] | None, args: tuple) -> Any:
    """ultralytics' per-image verification after the caller's label check (exceptions propagate to the scan)."""
    if label_check is not None:
        label_check(args[1])  # args = (im_file, lb_file, prefix, ...)
    result = verify(args)
    if isinstance(result[-1], str) and result[-1].endswith(_TRUNCATED_JPEG_MSG):
        result = (*result[:-1], f"{args[0]}: JPEG without end marker, used as is")
    return result


def _use_image_as_is(im_file: Any, write: Any) -> None:
    """Stand-in for ultralytics' in-place rewrite of a JPEG without end marker: keep it if training can decode it."""
    if _ul_imread(str(im_file)) is None:
        raise ValueError("truncated JPEG that cannot be decoded")


@contextlib.contextmanager
def _jpeg_restore_disabled():
    original = getattr(_ul_data_utils, "_replace_image", None)
    if original is None:  # pragma: no cover - a newer ultralytics; tests check the image stays unchanged
        yield
        return
    _ul_data_utils._replace_image = _use_image_as_is
    try:
        yield
    finally:
        _ul_data_utils._replace_image = original


def build_yolo_dataset(img_path: str | list[str], names: list[str], imgsz: int, batch_size: int, augment: bool,
                       hyp: IterableSimpleNamespace, label_cache: str | Path, *, rect: bool = False,
                       stride: int = 32, cache_images: bool = False, rank: int = -1,
                       label_check: Callable[[str], Any] | None = None,
                       label_files_for: Callable[[list[str]], list[str]] | None = None,
                       prefix: str = "") -> YoloDetectionDataset:
    """A detection dataset as ultralytics' ``build_yolo_dataset`` makes it (pad 0 when augmenting, else 0.5).

    Args:
        img_path: image folder(s) or image-list file(s).
        names: class names (index order).
        imgsz: training / letterbox size.
        augment: v8 training transforms (mosaic, perspective, HSV, flips) from ``hyp``; else letterbox only.
        hyp: namespace from :func:`hyperparameters` (augmentation gains).
        label_cache: where the labels cache is written.
        rect: rectangular batches (sorted by aspect ratio; disables mosaic).
        cache_images: keep decoded images in RAM (ultralytics' ``cache='ram'``; the disk mode is not offered because
            it writes ``.npy`` files beside the images).
        rank: DDP rank; rank 0 scans first and the others read its cache.
    """
    data = {"names": dict(enumerate(names)), "nc": len(names), "channels": 3}
    with _ul_zero_first(rank):
        return YoloDetectionDataset(
            img_path=img_path, imgsz=imgsz, batch_size=batch_size, augment=augment, hyp=hyp, rect=rect,
            cache="ram" if cache_images else None, single_cls=False, stride=stride, pad=0.0 if augment else 0.5,
            prefix=prefix, task="detect", classes=None, data=data, fraction=1.0,
            label_cache=label_cache, label_check=label_check, label_files_for=label_files_for)


def build_yolo_dataloader(dataset: torch.utils.data.Dataset, batch_size: int, workers: int, shuffle: bool,
                          rank: int = -1, drop_last: bool = False,
                          device: torch.device | str = "cpu") -> torch.utils.data.DataLoader:
    """ultralytics' ``InfiniteDataLoader`` (persistent workers; a DistributedSampler when ``rank >= 0``)."""
    return _ul_build_dataloader(dataset, batch=batch_size, workers=workers, shuffle=shuffle, rank=rank,
                                drop_last=drop_last, device=device)


def close_dataset_mosaic(loader: torch.utils.data.DataLoader) -> None:
    """Switch mosaic, mixup, cutmix and copy-paste off and restart the loader's workers (ultralytics' close_mosaic)."""
    dataset = loader.dataset
    dataset.close_mosaic(hyp=copy(dataset.hyp))
    dataset.mosaic_closed = True
    if hasattr(loader, "reset"):
        loader.reset()  # workers hold a copy of the dataset: fork new ones


def loader_state(loader: torch.utils.data.DataLoader) -> dict[str, Any]:
    """What an exact resume needs of a training loader, taken between epochs.

    The shuffle generator (ultralytics shuffles with the loader's own generator, not the global RNG), the mosaic
    buffer (mosaic partners are drawn from the indices loaded last) and whether mosaic was closed.
    """
    generator = getattr(loader, "generator", None)
    return {"generator": generator.get_state() if generator is not None else None,
            "mosaic_buffer": [int(i) for i in getattr(loader.dataset, "buffer", [])],
            "mosaic_closed": bool(getattr(loader.dataset, "mosaic_closed", False))}


def restore_loader_state(loader: torch.utils.data.DataLoader, state: dict[str, Any]) -> None:
    """Put :func:`loader_state` into a freshly built loader, so that it goes on as the saved one would have.

    Exact with ``num_workers == 0`` (docs/reliability.md). The saved run's InfiniteDataLoader kept one iterator
    across epochs whose sampler stands at the end of an epoch: the next epoch resumes that sampler (torch's
    RandomSampler then draws one more permutation, which it drops, when the dataset is a multiple of the batch
    size) before it starts the next pass. A fresh iterator would skip that draw, so the fresh one is walked
    through one epoch of indices (no images loaded) before the generator state is put back. Closing mosaic here
    (when the saved run had) keeps the trainer from closing it again, which would restart the iterator.

    With workers the iterator is left to the first epoch, which creates it from the restored generator. That is
    exact when the trainer restarts the workers at every epoch (spikeyolo's does), as persistent workers hold RNGs and
    a prefetch into the next epoch that no checkpoint has. A plain torch DataLoader with persistent workers (the
    event sources', which draw nothing at random in their workers) gets its iterator here, before the generator is
    put back, as the saved run got it in its first epoch: later epochs only reset it (no new base seed).
    """
    dataset = loader.dataset
    if state.get("mosaic_closed") and not getattr(dataset, "mosaic_closed", True):
        dataset.close_mosaic(hyp=copy(dataset.hyp))  # before any worker copies the dataset
        dataset.mosaic_closed = True
    generator = getattr(loader, "generator", None)
    if getattr(loader, "_iterator", "absent") is None and loader.num_workers > 0 and loader.persistent_workers:
        # a torch DataLoader with persistent workers (the event sources') made its iterator in its first epoch and
        # only resets it since: make it now, from the fresh generator as the saved run did
        loader._iterator = loader._get_iterator()
    if getattr(loader, "iterator", "absent") is None and loader.num_workers == 0:
        loader.iterator = loader._get_iterator()  # draws its base seed from the generator, as the saved run did
        for _ in range(len(loader)):
            loader.iterator._next_index()  # index batches only: the sampler ends where the saved run's ended
    if generator is not None and state.get("generator") is not None:
        generator.set_state(state["generator"])
    if state.get("mosaic_buffer") and hasattr(dataset, "buffer"):
        dataset.buffer.clear()
        for index in state["mosaic_buffer"]:  # replaying the loads rebuilds the buffer and its cached images
            dataset.load_image(index)


def letterbox_image(image: np.ndarray, imgsz: int, stride: int = 32, rect: bool = True,
                    pad: float = 0.5) -> tuple[np.ndarray, tuple[tuple[float, float], tuple[float, float]]]:
    """One image as a validation loader of the same settings would make it (no labels, no file).

    ultralytics' val pipeline for a single image: the long side resized to ``imgsz`` (``load_image``, never
    enlarged past it, INTER_LINEAR), then ``LetterBox(scaleup=False)`` to the rect shape of this image alone
    (``set_rectangle``: the short side padded to a stride multiple with ``pad``) or to ``imgsz x imgsz``.

    Args:
        image: [H, W, 3] uint8 BGR (as OpenCV reads it).

    Returns:
        ([h, w, 3] uint8 BGR network image, ratio_pad ((gain_h, gain_w), (pad_w, pad_h)) as the dataset records it).
    """
    import math

    import cv2
    from ultralytics.data.augment import LetterBox

    h0, w0 = image.shape[:2]
    ratio = imgsz / max(h0, w0)
    if ratio != 1:
        image = cv2.resize(image, (min(math.ceil(w0 * ratio), imgsz), min(math.ceil(h0 * ratio), imgsz)),
                           interpolation=cv2.INTER_LINEAR)
    if rect:
        aspect = h0 / w0
        shape = [aspect, 1] if aspect < 1 else [1, 1 / aspect] if aspect > 1 else [1, 1]
        new_shape = tuple(int(s) for s in (np.ceil(np.array(shape) * imgsz / stride + pad).astype(int) * stride))
    else:
        new_shape = (imgsz, imgsz)
    resized = image.shape[:2]
    labels = {"img": image, "ratio_pad": (resized[0] / h0, resized[1] / w0), "rect_shape": new_shape}
    out = LetterBox(new_shape=new_shape, scaleup=False)(labels=labels)
    return out["img"], out["ratio_pad"]
