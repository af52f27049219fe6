"""Model outputs -> detections in original pixels -> COCO results.

:func:`postprocess` is the one place a detector's decoded output becomes boxes: NMS (ultralytics' through
:mod:`spikeyolo._ultralytics.ops`), the letterbox undone, the boxes clipped to the image, one
:class:`ImageDetections` per image. Evaluation (:func:`spikeyolo.engine.predict.predict_each`), spikeyolo-predict
(pictures, video, event recordings: :mod:`spikeyolo.engine.event_stream`) and :class:`spikeyolo.Detector` all call
it, so their boxes are equal by construction. :func:`to_coco_results` turns detections into COCO result dicts
(xyxy -> xywh, class index -> category id).

Letterbox convention (ultralytics 8.4, ``ultralytics.utils.ops.scale_boxes``): an
image of shape (h0, w0) is resized by per-axis gains (gain_h, gain_w) = new / old
and padded by (pad_w, pad_h) pixels on the left and top. The per-image
``ratio_pad`` that ultralytics' datasets record is ``((gain_h, gain_w), (pad_w, pad_h))``.
A network-input point (x, y) maps back to the original image as

    x0 = (x - pad_w) / gain_w        y0 = (y - pad_h) / gain_h

and boxes are then clipped to [0, w0] x [0, h0].
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from spikeyolo._ultralytics.ops import non_max_suppression
from spikeyolo.io import atomic_write

__all__ = ["RatioPad", "ImageDetections", "postprocess", "letterbox_ratio_pad", "unletterbox_boxes", "clip_boxes",
           "to_coco_results", "save_coco_results"]

# ((gain_h, gain_w), (pad_w, pad_h)), as ultralytics 8.4 stores it per image.
RatioPad = tuple[tuple[float, float], tuple[float, float]]


@dataclass
class ImageDetections:
    """The detections of one image (or one event window) in pixels of the original image, as :func:`postprocess`
    makes them: what :meth:`spikeyolo.Detector.predict` returns, spikeyolo-predict writes and evaluation scores.

    Attributes:
        boxes: [N, 4] float64 (x1, y1, x2, y2), clipped to the image.
        scores: [N] float32 confidences.
        classes: [N] int64 class indices.
        class_names: all class names of the model (index -> name).
        shape: (height, width) of the original image.
        source: the file path, or None for an array / PIL image / event window.
        unclipped_boxes: [N, 4] float64, ``boxes`` before clipping (what ultralytics 8.4's validator matches).
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    class_names: list[str]
    shape: tuple[int, int]
    source: str | None = None
    unclipped_boxes: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def names(self) -> list[str]:
        """The class name of every detection, in order."""
        return [self.class_names[int(c)] for c in self.classes]

    def rows(self) -> np.ndarray:
        """[N, 6] float64 (x1, y1, x2, y2, score, class index), the layout of ``Predictions.detections``."""
        return np.concatenate((self.boxes, self.scores[:, None].astype(np.float64),
                               self.classes[:, None].astype(np.float64)), 1)  # [N, 4] + [N, 1] + [N, 1] -> [N, 6]

    def to_list(self) -> list[dict[str, Any]]:
        """One dict per detection: ``{"box": [x1, y1, x2, y2], "score", "class", "name"}`` (plain Python types)."""
        return [{"box": [float(v) for v in box], "score": float(score), "class": int(cls), "name": name}
                for box, score, cls, name in zip(self.boxes, self.scores, self.classes, self.names)]


def postprocess(decoded: torch.Tensor, ratio_pads: Sequence[RatioPad], orig_shapes: Sequence[Sequence[int]],
                conf: float = 0.25, iou: float = 0.7, max_det: int = 300, class_names: Sequence[str] = (),
                sources: Sequence[str | None] | None = None) -> list[ImageDetections]:
    """A batch of decoded detector output -> one :class:`ImageDetections` per image, in original-image pixels.

    NMS on float32 (``spikeyolo._ultralytics.ops.non_max_suppression``, no time limit), then per image the
    letterbox undone (:func:`unletterbox_boxes`) and the boxes clipped (:func:`clip_boxes`), both in float64.

    Args:
        decoded: [B, 4 + C, A] (cx, cy, w, h in network-input pixels, then class scores), any device and dtype.
        ratio_pads: per image ((gain_h, gain_w), (pad_w, pad_h)) of its letterbox (module docstring).
        orig_shapes: per image its original (height, width).
        conf, iou, max_det: NMS settings (minimum score, IoU threshold, most detections per image).
        class_names: the model's class names (index -> name).
        sources: per image its file path or None (default: None for all).

    Raises:
        ValueError: ratio_pads, orig_shapes or sources not one per image.
    """
    batch = int(decoded.shape[0])
    for name, values in (("ratio_pads", ratio_pads), ("orig_shapes", orig_shapes), ("sources", sources)):
        if values is not None and len(values) != batch:
            raise ValueError(f"{name} has {len(values)} entries for a batch of {batch} images")
    sources = sources if sources is not None else [None] * batch
    names = list(class_names)
    results = []
    for dets, ratio_pad, orig_shape, source in zip(non_max_suppression(decoded.float(), conf, iou, max_det),
                                                   ratio_pads, orig_shapes, sources):  # B x [N, 6]
        dets = dets.cpu()
        shape = (int(orig_shape[0]), int(orig_shape[1]))
        unclipped = unletterbox_boxes(dets[:, :4], ratio_pad)  # [N, 4] float64
        results.append(ImageDetections(boxes=clip_boxes(unclipped, shape).numpy(), scores=dets[:, 4].numpy(),
                                       classes=dets[:, 5].to(torch.int64).numpy(), class_names=names, shape=shape,
                                       source=source, unclipped_boxes=unclipped.numpy()))
    return results


def letterbox_ratio_pad(orig_shape: Sequence[int], input_shape: Sequence[int]) -> RatioPad:
    """The ratio_pad of a centred letterbox from ``orig_shape`` to ``input_shape``.

    Same arithmetic as ``scale_boxes`` with ``ratio_pad=None`` in ultralytics 8.4: one
    scale keeps the aspect ratio, each side is rounded to whole pixels (so the per-axis
    gains can differ slightly), the padding is split in two with ``round(pad / 2 - 0.1)``
    on the left/top.

    Args:
        orig_shape: (h0, w0) of the original image.
        input_shape: (h, w) of the network input.

    Returns:
        ((gain_h, gain_w), (pad_w, pad_h)).
    """
    orig_h, orig_w = int(orig_shape[0]), int(orig_shape[1])
    input_h, input_w = int(input_shape[0]), int(input_shape[1])
    scale = min(input_h / orig_h, input_w / orig_w)
    resized_h, resized_w = max(round(orig_h * scale), 1), max(round(orig_w * scale), 1)
    pad_w = round((input_w - resized_w) / 2 - 0.1)
    pad_h = round((input_h - resized_h) / 2 - 0.1)
    return (resized_h / orig_h, resized_w / orig_w), (pad_w, pad_h)


def unletterbox_boxes(boxes: torch.Tensor, ratio_pad: RatioPad,
                      orig_shape: Sequence[int] | None = None) -> torch.Tensor:
    """Map xyxy boxes from network-input pixels back to original-image pixels.

    Args:
        boxes: [N, 4] (x1, y1, x2, y2) in network-input pixels; not modified.
        ratio_pad: ((gain_h, gain_w), (pad_w, pad_h)), see the module docstring.
        orig_shape: (h0, w0); when given, boxes are clipped to the image.

    Returns:
        [N, 4] xyxy boxes in original-image pixels, float64.
    """
    (gain_h, gain_w), (pad_w, pad_h) = ratio_pad
    boxes = boxes.to(torch.float64)
    offset = boxes.new_tensor([pad_w, pad_h, pad_w, pad_h])  # [4]
    gain = boxes.new_tensor([gain_w, gain_h, gain_w, gain_h])  # [4]
    boxes = (boxes - offset) / gain  # [N, 4]
    return clip_boxes(boxes, orig_shape) if orig_shape is not None else boxes


def clip_boxes(boxes: torch.Tensor, orig_shape: Sequence[int]) -> torch.Tensor:
    """xyxy boxes clipped to [0, w0] x [0, h0], as ultralytics' ``clip_boxes``.

    Args:
        boxes: [N, 4] (x1, y1, x2, y2) in original-image pixels; not modified.
        orig_shape: (h0, w0).

    Returns:
        [N, 4] the clipped boxes, in ``boxes``' dtype.
    """
    orig_h, orig_w = float(orig_shape[0]), float(orig_shape[1])
    upper = boxes.new_tensor([orig_w, orig_h, orig_w, orig_h])  # [4]
    return torch.minimum(boxes.clamp(min=0.0), upper)


def to_coco_results(detections: Sequence[torch.Tensor], image_ids: Sequence[Any], category_ids: Sequence[int],
                    ratio_pads: Sequence[RatioPad] | None = None,
                    orig_shapes: Sequence[Sequence[int]] | None = None,
                    input_shape: Sequence[int] | None = None) -> list[dict]:
    """Turn per-image detections into COCO result dicts.

    Nothing is rounded: coordinates are computed in float64 and written as Python floats.

    Args:
        detections: one tensor per image, [N_i, 6] (x1, y1, x2, y2, score, class_index) in
            letterboxed network-input pixels (extra columns after the 6th are ignored).
        image_ids: the COCO image id of each image, len(detections) of them.
        category_ids: COCO category id of each contiguous class index
            (``category_ids[class_index]``), e.g. the 80 ids 1..90 of COCO.
        ratio_pads: per image ((gain_h, gain_w), (pad_w, pad_h)) as ultralytics' datasets
            record it. When None and ``input_shape`` and ``orig_shapes`` are given, it is
            derived with :func:`letterbox_ratio_pad`; when None otherwise, boxes are taken to
            be in original-image pixels already.
        orig_shapes: per image (h0, w0); boxes are clipped to the image when given.
        input_shape: (h, w) of the network input, used only to derive missing ratio_pads.

    Returns:
        list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.

    Raises:
        ValueError: lengths that do not match, or a class index outside category_ids.
    """
    num_images = len(detections)
    for name, values in (("image_ids", image_ids), ("ratio_pads", ratio_pads), ("orig_shapes", orig_shapes)):
        if values is not None and len(values) != num_images:
            raise ValueError(f"{name} has {len(values)} entries for {num_images} images")
    results: list[dict] = []
    for index, image_detections in enumerate(detections):
        if image_detections.ndim != 2 or image_detections.shape[1] < 6:
            raise ValueError(f"detections[{index}] must be [N, 6], got {tuple(image_detections.shape)}")
        if image_detections.shape[0] == 0:
            continue
        orig_shape = orig_shapes[index] if orig_shapes is not None else None
        ratio_pad = ratio_pads[index] if ratio_pads is not None else None
        if ratio_pad is None and input_shape is not None and orig_shape is not None:
            ratio_pad = letterbox_ratio_pad(orig_shape, input_shape)
        boxes = image_detections[:, :4].detach().cpu().to(torch.float64)  # [N, 4] xyxy
        if ratio_pad is not None:
            boxes = unletterbox_boxes(boxes, ratio_pad, orig_shape)
        elif orig_shape is not None:
            boxes = unletterbox_boxes(boxes, ((1.0, 1.0), (0.0, 0.0)), orig_shape)
        # [N, 4] xyxy -> [N, 4] xywh (top-left corner, width, height)
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
        scores = image_detections[:, 4].detach().cpu().to(torch.float64).tolist()
        class_indices = image_detections[:, 5].detach().cpu().to(torch.int64).tolist()
        image_id = _plain(image_ids[index])
        for bbox, score, class_index in zip(xywh.tolist(), scores, class_indices):
            if not 0 <= class_index < len(category_ids):
                raise ValueError(f"class index {class_index} outside category_ids (len {len(category_ids)})")
            results.append({"image_id": image_id, "category_id": int(category_ids[class_index]),
                            "bbox": bbox, "score": score})
    return results


def save_coco_results(results: Sequence[dict], path: str | os.PathLike) -> Path:
    """Write COCO results as json atomically (temp file in the same folder, then os.replace).

    Args:
        results: result dicts as :func:`to_coco_results` returns them.
        path: the json file to write; parent folders are created.

    Returns:
        the written path.
    """
    with atomic_write(path) as handle:
        handle.write(json.dumps(list(results)).encode("utf-8"))
    return Path(path)


def _plain(value: Any) -> Any:
    """A json-serialisable image id: tensor/numpy scalars become Python ints (strings stay)."""
    if hasattr(value, "item"):
        value = value.item()
    return value
