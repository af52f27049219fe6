"""The Python API for detecting objects in pictures: ``spikeyolo.Detector``.

    detector = spikeyolo.Detector.load("runs/demo_spikeyolo_n/RUN/weights/best.pt")     # or a reference checkpoint
    results = detector.predict(["a.jpg", frame_bgr, pil_image])            # one ImageDetections per image
    results[0].boxes, results[0].scores, results[0].classes, results[0].names

Images are prepared exactly as the validation loader of the checkpoint's run prepares them (the long side
resized to the trained image size, letterboxed to its rect shape: ``spikeyolo._ultralytics.data.letterbox_image``),
and the batch goes through the one inference path (:func:`spikeyolo.engine.predict.detect`, whose boxes come from
:func:`spikeyolo.evaluation.predictions.postprocess`, as ``spikeyolo-eval``'s and ``spikeyolo-predict``'s do), so
the boxes equal what ``spikeyolo-eval`` scores for the same checkpoint and image. Boxes come back in pixels of the
original image (xyxy, float64).

Accepted images: a file path (str or Path), a numpy array [H, W, 3] uint8 in BGR order as OpenCV gives it (RGB
with ``rgb=True``; [H, W] grey is taken as three equal channels), a PIL image (any mode; converted to RGB).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spikeyolo._ultralytics.data import letterbox_image
from spikeyolo.config import checked_imgsz
from spikeyolo.data import get_source
from spikeyolo.deploy import DEPLOY_PATHS
from spikeyolo.engine.checkpoint import model_from_payload, read_model_checkpoint, trained_data_config
from spikeyolo.engine.distributed import select_device
from spikeyolo.engine.media import Frame
from spikeyolo.engine.predict import detect
from spikeyolo.errors import InputError, UserError
from spikeyolo.evaluation.predictions import ImageDetections

__all__ = ["Detector", "ImageDetections", "read_image"]


def read_image(image: Any, rgb: bool = False) -> tuple[np.ndarray, str | None]:
    """One accepted image as ([H, W, 3] uint8 BGR, its path or None).

    Raises:
        InputError: a missing or undecodable file, or an array that is not [H, W], [H, W, 1] or [H, W, 3].
    """
    import cv2

    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise InputError(f"image not found: {path}")
        array = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if array is None:
            raise InputError(f"{path}: not a readable image (OpenCV cannot decode it)")
        return array, str(path)
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1]), None
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3 or min(array.shape[:2]) < 1:
        raise InputError(f"an image array must be [H, W, 3] (or [H, W]), got shape {tuple(array.shape)}")
    if array.dtype != np.uint8:
        raise InputError(f"an image array must be uint8 (0..255), got {array.dtype}")
    return np.ascontiguousarray(array[:, :, ::-1] if rgb else array), None


@dataclass
class Detector:
    """A trained detector ready for pictures: model, class names, input size, deploy path and device.

    Build it with :meth:`load`. ``predict`` runs in eval mode without gradients.

    Attributes:
        model: the detector (its current deploy path, on ``device``).
        names: class names (index -> name).
        imgsz: the size images are letterboxed to (the run's ``data.imgsz``).
        rect: letterbox to the image's own rect shape (the run's ``data.val_rect``) or to imgsz x imgsz.
        path: the deploy path: ``integer``, ``spike_driven`` or ``fixed_point``.
    """

    model: torch.nn.Module
    names: list[str]
    imgsz: int
    rect: bool = True
    path: str = "integer"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    base: torch.nn.Module | None = None   # the loaded (integer-path) model every deploy path is built from

    @classmethod
    def from_nir(cls, exported: Any, stages: list, names: list[str] | None = None) -> "Detector":
        """A Detector that runs NIR stages loaded by any importer (``exported``: a
        :class:`spikeyolo.deploy.nir.NirBundle`): each picture letterboxed to the graphs' square ``imgsz``
        (``rect=False``: a rect shape is another size), NMS, boxes in picture pixels.

        Args:
            names: class names (default: the exported model's, or the class indices).
        """
        if names is None:
            names = exported.meta.get("names") or [
                str(k) for k in range(int(exported.rest.program["decode"]["num_classes"]))]
        return cls(model=exported.module(stages), names=list(names), imgsz=exported.imgsz, rect=False, path="nir")

    @classmethod
    def load(cls, checkpoint: str | Path, device: str | torch.device = "cpu", imgsz: int | None = None,
             use_ema: bool = True) -> "Detector":
        """A spikeyolo checkpoint (``weights/best.pt``) or a reference SpikeYOLO checkpoint (read safely).

        Args:
            imgsz: input size; default the size the checkpoint was trained at.

        Raises:
            CheckpointError: the file cannot be read or is not a checkpoint.
            UserError: the model was trained on event data, or no image size is known.
        """
        payload = read_model_checkpoint(checkpoint)
        data = trained_data_config(payload)
        source = data.get("source")
        if source is not None and get_source(str(source)).is_event_data:
            raise UserError(f"{checkpoint} was trained on event data ({source}); Detector predicts on pictures: "
                            "use spikeyolo-predict events=RECORDING.dat")
        model = model_from_payload(payload, use_ema, str(checkpoint))
        size = checked_imgsz(imgsz, model, data, key="imgsz")
        # rect letterbox unless the run validated on square inputs (data.val_rect false, e.g. event frames)
        detector = cls(model=model, names=list(model.names), imgsz=size, rect=data.get("val_rect") is not False,
                       base=model)
        return detector.to(device)

    def to(self, device: str | torch.device) -> "Detector":
        """Move the model to ``device`` (``cpu``, ``cuda``, ``cuda:1``, ``0``, ``auto``); returns self."""
        self.device = select_device(str(device))
        self.model = self.model.to(self.device)
        self.base = self.base.to(self.device) if self.base is not None else None
        return self

    def eval_path(self, path: str) -> "Detector":
        """Run the same weights through another deploy path (:data:`spikeyolo.deploy.DEPLOY_PATHS`); returns self.

        ``integer`` (the trained network), ``spike_driven`` (binary T x D spikes, BN and RepConv folded) or
        ``fixed_point`` (the spike-driven path on the exported power-of-two weight grids).
        """
        if path not in DEPLOY_PATHS:
            raise UserError(f"deploy path must be one of {', '.join(DEPLOY_PATHS)}, got {path!r}")
        base = self.base if self.base is not None else self.model
        self.model = DEPLOY_PATHS[path](base.cpu()).to(self.device).eval()
        self.base = base.to(self.device)
        self.path = path
        return self

    @torch.no_grad()
    def predict(self, images: Any, conf: float = 0.25, iou: float = 0.7, max_det: int = 300, batch_size: int = 16,
                rgb: bool = False) -> list[ImageDetections]:
        """Detect objects in one image or a sequence of images; one :class:`ImageDetections` per image, in order.

        Args:
            images: an image or a list/tuple of images (paths, arrays, PIL images; see the module docstring).
            conf: minimum confidence kept (ultralytics' predict default 0.25; validation uses 0.001).
            iou: NMS IoU threshold.
            max_det: most detections per image.
            batch_size: images per forward (images of different letterbox shapes run in separate batches).
            rgb: arrays are RGB (default: BGR, as OpenCV gives them). File paths and PIL images need no flag.
        """
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        prepared = [self._prepare(item, rgb) for item in items]
        results: list[ImageDetections | None] = [None] * len(prepared)
        for indices in self._batches(prepared, batch_size):
            _, ratio_pads, shapes, sources = zip(*(prepared[i] for i in indices))
            batch = torch.stack([prepared[i][0] for i in indices])                      # [B, 3, h, w] uint8 RGB
            found = detect(self.model, batch, list(ratio_pads), list(shapes), self.device, conf, iou, max_det,
                           sources=list(sources), class_names=self.names)
            for index, result in zip(indices, found):
                results[index] = result
        return [result for result in results if result is not None]

    def predict_frames(self, frames: Iterable[Frame], conf: float = 0.25, iou: float = 0.7, max_det: int = 300,
                       batch_size: int = 16) -> Iterator[tuple[Frame, ImageDetections | None]]:
        """Detections of a stream of :class:`~spikeyolo.engine.media.Frame` (pictures, video frames), in order.

        Frames are run ``batch_size`` at a time as they arrive (a video is never held in memory); a frame that
        could not be read (``frame.error``) comes back with None.
        """
        pending: list[Frame] = []

        def run() -> Iterator[tuple[Frame, ImageDetections]]:
            results = self.predict([frame.image for frame in pending], conf, iou, max_det, batch_size)
            for frame, result in zip(pending, results):
                result.source = frame.path
                yield frame, result
            pending.clear()

        for frame in frames:
            if frame.image is None:
                yield from run()
                yield frame, None
                continue
            pending.append(frame)
            if len(pending) >= batch_size:
                yield from run()
        yield from run()

    def _prepare(self, item: Any, rgb: bool):
        """(network image [3, h, w] uint8 RGB, ratio_pad, original (h, w), source)."""
        bgr, source = read_image(item, rgb)
        letterboxed, ratio_pad = letterbox_image(bgr, self.imgsz, max(self.model.strides), self.rect)
        tensor = torch.from_numpy(np.ascontiguousarray(letterboxed[:, :, ::-1].transpose(2, 0, 1)))
        return tensor, ratio_pad, (int(bgr.shape[0]), int(bgr.shape[1])), source

    @staticmethod
    def _batches(prepared: Sequence[tuple], batch_size: int) -> Iterable[list[int]]:
        """Indices grouped by letterbox shape, at most ``batch_size`` each, in input order within a group."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, (tensor, *_) in enumerate(prepared):
            groups.setdefault(tuple(tensor.shape), []).append(index)
        for indices in groups.values():
            for start in range(0, len(indices), max(int(batch_size), 1)):
                yield indices[start:start + max(int(batch_size), 1)]
