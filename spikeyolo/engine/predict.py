"""The one inference loop: a detector over a loader -> :class:`~spikeyolo.structures.Predictions`.

Per batch: network input (:func:`~spikeyolo.structures.model_input`, in the model's dtype), the forward under
autocast when asked, NMS (ultralytics' settings through :mod:`spikeyolo._ultralytics.ops`), the boxes mapped
back to original-image pixels (:func:`~spikeyolo.evaluation.unletterbox_boxes`), clipped to the image and also kept
unclipped (ultralytics 8.4's validator matches those: ``yolo_ap``); firing rates are recorded around the pass
(:class:`~spikeyolo.evaluation.FiringRecorder`) and the ground truth is read from the loader's dataset once.
Scoring is the evaluators' business (:mod:`spikeyolo.evaluation.evaluators`).

A *read-out* maps a batch's network input to decoded outputs ``{key: [B, 4 + C, A]}`` (xywh pixels and class
scores, what NMS takes). The default reads the model's eval output once (key None); a read-out that returns
several keys makes one pass yield one ``Predictions`` per key (the conversion timestep sweep: one simulation
per batch read out at every (decoding, T), :class:`~spikeyolo.conversion.evaluation.TimestepReadOut`). So
every way of scoring a model reads its loader once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from spikeyolo._ultralytics.ops import non_max_suppression
from spikeyolo.evaluation.firing import FiringRecorder
from spikeyolo.evaluation.predictions import clip_boxes, unletterbox_boxes
from spikeyolo.structures import Predictions, model_input

__all__ = ["ReadOut", "model_read_out", "predict", "predict_each"]

#: network input [B, C, H, W] or [T, B, C, H, W] -> {key: decoded [B, 4 + C, A]}
ReadOut = Callable[[torch.Tensor], Mapping[Hashable, torch.Tensor]]


def model_read_out(model: nn.Module, amp: bool = False) -> ReadOut:
    """The model's own eval output, under CUDA autocast when ``amp``; key None."""
    def read_out(images: torch.Tensor) -> dict[Hashable, torch.Tensor]:
        with torch.autocast(images.device.type, enabled=amp and images.device.type == "cuda"):
            decoded, _ = model(images)
        return {None: decoded}
    return read_out


@torch.no_grad()
def predict(model: nn.Module, loader, device: torch.device, conf: float = 0.001, iou: float = 0.7,
            max_det: int = 300, amp: bool = False, progress: bool = False) -> Predictions:
    """Run ``model`` over ``loader`` once: detections in original pixels, the ground truth, firing rates, timing.

    Args:
        model: a detector whose eval forward returns (decoded [B, 4 + C, A], raw maps).
        loader: a val loader (batches with ``img``, ``im_file``, ``ori_shape``, ``ratio_pad``; ``dataset.labels``).
        device: where the model runs.
        conf, iou, max_det: NMS settings.
        amp: CUDA autocast for the forward.
        progress: a tqdm bar.
    """
    runs = predict_each(model, loader, device, model_read_out(model, amp), conf, iou, max_det, progress)
    return runs[None] if runs else Predictions(detections=[], im_files=[], shapes=[], gt_boxes=[], gt_classes=[])


@torch.no_grad()
def predict_each(model: nn.Module, loader, device: torch.device, read_out: ReadOut, conf: float = 0.001,
                 iou: float = 0.7, max_det: int = 300, progress: bool = False, record_firing: bool = True,
                 desc: str = "val") -> dict[Hashable, Predictions]:
    """One pass over ``loader``; one :class:`Predictions` per key of ``read_out`` (module docstring).

    Args:
        model: put in eval mode for the pass (and back after); its parameters' dtype is the input's.
        read_out: batch network input -> {key: decoded [B, 4 + C, A]}; e.g. :func:`model_read_out`.
        record_firing: hook a :class:`FiringRecorder` on ``model``'s spiking neurons.
        desc: the progress bar's label.

    Returns:
        {key: Predictions}; every entry shares the pass's samples, ground truth, firing rates and time.
    """
    was_training = model.training
    model.eval()
    recorder = FiringRecorder(model) if record_firing else None
    dtype = next(model.parameters()).dtype
    detections: dict[Hashable, list[torch.Tensor]] = {}
    unclipped: dict[Hashable, list[torch.Tensor]] = {}
    shapes: list[tuple[int, int]] = []
    files: list[str] = []
    started = time.perf_counter()
    try:
        for batch in tqdm(loader, desc=desc, leave=False) if progress else loader:
            images = model_input(batch["img"], device).to(dtype)  # float64 models: exact path comparisons
            for key, decoded in read_out(images).items():
                per_image = non_max_suppression(decoded.float(), conf, iou, max_det)  # B x [N, 6]
                for image_dets, ratio_pad, shape in zip(per_image, batch["ratio_pad"], batch["ori_shape"]):
                    boxes = unletterbox_boxes(image_dets[:, :4].cpu(), ratio_pad)  # [N, 4] float64, unclipped
                    detections.setdefault(key, []).append(
                        torch.cat((clip_boxes(boxes, shape), image_dets[:, 4:6].cpu().double()), 1))  # [N, 6]
                    unclipped.setdefault(key, []).append(boxes)
            shapes.extend((int(shape[0]), int(shape[1])) for shape in batch["ori_shape"])
            files.extend(batch["im_file"])
        seconds = time.perf_counter() - started
    finally:
        firing = recorder.rates() if recorder is not None else {}
        if recorder is not None:
            recorder.remove()
        model.train(was_training)
    gt_boxes, gt_classes = _ground_truth(loader.dataset, files)
    samples = _samples(loader.dataset, files)
    return {key: Predictions(detections=dets, im_files=files, shapes=shapes, gt_boxes=gt_boxes,
                             gt_classes=gt_classes, samples=samples, firing=firing, seconds=seconds,
                             unclipped_boxes=unclipped[key])
            for key, dets in detections.items()}


def _ground_truth(dataset, files: list[str]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per file its labels from ``dataset.labels``: ([M, 4] float64 normalised cx cy w h, [M] int64 classes)."""
    by_file = {record["im_file"]: record for record in dataset.labels}
    boxes = [torch.as_tensor(np.asarray(by_file[f]["bboxes"], dtype=np.float64).reshape(-1, 4)) for f in files]
    classes = [torch.as_tensor(np.asarray(by_file[f]["cls"]).reshape(-1), dtype=torch.int64) for f in files]
    return boxes, classes


def _samples(dataset, files: list[str]) -> list | None:
    """Per file the dataset's own sample record (``dataset.samples`` with an ``im_file`` each), or None."""
    samples = getattr(dataset, "samples", None)
    if not samples or not all(hasattr(sample, "im_file") for sample in samples):
        return None
    by_file = {sample.im_file: sample for sample in samples}
    return [by_file[f] for f in files]
