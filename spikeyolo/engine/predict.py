"""The one inference path: a batch through a detector -> detections in original pixels; a loader ->
:class:`~spikeyolo.structures.Predictions`.

Per batch: network input (:func:`network_input`: :func:`~spikeyolo.structures.model_input` in the model's dtype),
the forward under autocast when asked (:func:`model_read_out`), then
:func:`~spikeyolo.evaluation.predictions.postprocess` (NMS, boxes back to original-image pixels, clipped and also
kept unclipped: ultralytics 8.4's validator matches those, ``yolo_ap``). :func:`detect` is that for one batch
(:class:`spikeyolo.Detector`, the event stream); :func:`predict_each` for a loader, where firing rates are
recorded around the pass (:class:`~spikeyolo.evaluation.FiringRecorder`) and the ground truth is read from the
loader's dataset once.
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

from spikeyolo.evaluation.firing import FiringRecorder
from spikeyolo.evaluation.predictions import ImageDetections, RatioPad, postprocess
from spikeyolo.structures import Predictions, model_input

__all__ = ["ReadOut", "model_read_out", "network_input", "detect", "predict", "predict_each"]

#: network input [B, C, H, W] or [T, B, C, H, W] -> {key: decoded [B, 4 + C, A]}
ReadOut = Callable[[torch.Tensor], Mapping[Hashable, torch.Tensor]]


def model_read_out(model: nn.Module, amp: bool = False) -> ReadOut:
    """The model's own eval output, under CUDA autocast when ``amp``; key None."""
    def read_out(images: torch.Tensor) -> dict[Hashable, torch.Tensor]:
        with torch.autocast(images.device.type, enabled=amp and images.device.type == "cuda"):
            decoded, _ = model(images)
        return {None: decoded}
    return read_out


def network_input(model: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Loader-style uint8 images [B, C, H, W] or [B, T, C, H, W] as ``model``'s input on ``device``, in its
    parameters' dtype (float64 models: exact path comparisons)."""
    return model_input(images, device).to(next(model.parameters()).dtype)


@torch.no_grad()
def detect(model: nn.Module, images: torch.Tensor, ratio_pads: list[RatioPad], orig_shapes: list[tuple[int, int]],
           device: torch.device, conf: float = 0.25, iou: float = 0.7, max_det: int = 300, amp: bool = False,
           sources: list[str | None] | None = None, class_names: list[str] | None = None) -> list[ImageDetections]:
    """One batch through ``model`` (in the mode it is in): one :class:`ImageDetections` per image.

    Args:
        images: uint8 [B, C, H, W] RGB pictures or [B, T, C, H, W] event frames, letterboxed.
        ratio_pads, orig_shapes: per image its letterbox and original (height, width).
        conf, iou, max_det: NMS settings.
        amp: CUDA autocast for the forward.
        sources: per image its file path or None.
        class_names: the names the results carry (default: ``model.names``).
    """
    (decoded,) = model_read_out(model, amp)(network_input(model, images, device)).values()
    names = _class_names(model) if class_names is None else class_names
    return postprocess(decoded, ratio_pads, orig_shapes, conf, iou, max_det, names, sources)


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
    names = _class_names(model)
    detections: dict[Hashable, list[torch.Tensor]] = {}
    unclipped: dict[Hashable, list[torch.Tensor]] = {}
    shapes: list[tuple[int, int]] = []
    files: list[str] = []
    started = time.perf_counter()
    try:
        for batch in tqdm(loader, desc=desc, leave=False) if progress else loader:
            for key, decoded in read_out(network_input(model, batch["img"], device)).items():
                for found in postprocess(decoded, batch["ratio_pad"], batch["ori_shape"], conf, iou, max_det, names):
                    detections.setdefault(key, []).append(torch.from_numpy(found.rows()))  # [N, 6] float64
                    unclipped.setdefault(key, []).append(torch.from_numpy(found.unclipped_boxes))  # [N, 4]
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


def _class_names(model: nn.Module) -> list[str]:
    """The model's class names (``DetectorModel.names``), or none for a bare module."""
    return list(getattr(model, "names", None) or [])


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
