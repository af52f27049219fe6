"""Validation: run a detector over a loader, NMS, COCO mAP (pycocotools) and the ultralytics-style AP.

Predictions are mapped back to original-image pixels, then scored twice:
- COCO protocol: pycocotools against the dataset's COCO json (or a COCO json built
  from the YOLO labels when the dataset has none);
- the ultralytics protocol (101-point AP, as the reference's training logs report).
Firing rates (mean spike count per neuron / D) are recorded per layer group.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from spikeyolo.evaluation import evaluate_coco, evaluate_yolo_ap, to_coco_results, unletterbox_boxes
from spikeyolo.nn.neurons import SpikingNeuron
from spikeyolo.structures import model_input

__all__ = ["ValidationResult", "FiringRecorder", "validate", "coco_gt_from_labels"]


@dataclass
class ValidationResult:
    metrics: dict[str, float]
    coco: Any = None                      # CocoResult
    yolo_ap: dict[str, Any] = field(default_factory=dict)
    firing: dict[str, float] = field(default_factory=dict)
    detections: list[torch.Tensor] = field(default_factory=list)   # per image [N, 6], original pixels
    im_files: list[str] = field(default_factory=list)
    coco_results: list[dict] = field(default_factory=list)


class FiringRecorder:
    """Forward hooks on every spiking neuron: mean emitted value per neuron, grouped by layer group.

    Groups: ``backbone`` (layers 1-9), ``neck`` (10-25), ``head`` (26); the firing rate of a
    group is the mean spike count over its neurons divided by D (so it lies in [0, 1]).
    """

    def __init__(self, model: nn.Module) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.handles = []
        layers = getattr(model, "layers", None)
        head_index = len(layers) - 1 if layers is not None else -1
        for name, module in model.named_modules():
            if not isinstance(module, SpikingNeuron) or module.max_level <= 0:
                continue
            parts = name.split(".")
            index = int(parts[1]) if len(parts) > 1 and parts[0] == "layers" and parts[1].isdigit() else -1
            group = "head" if index == head_index else ("backbone" if 0 <= index <= 9 else "neck")
            self.handles.append(module.register_forward_hook(self._hook(name, group, module.max_level)))

    def _hook(self, name: str, group: str, max_level: int):
        def hook(_module, _inputs, output):
            value = float(output.detach().float().mean()) / max_level
            for key in (name, f"group/{group}", "group/all"):
                self.sums[key] = self.sums.get(key, 0.0) + value
                self.counts[key] = self.counts.get(key, 0) + 1
        return hook

    def rates(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in self.sums}

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


def coco_gt_from_labels(labels: Sequence[dict], shapes: Sequence[Sequence[int]], category_ids: Sequence[int],
                        names: Sequence[str]) -> dict:
    """A COCO ground-truth dict from ultralytics label records (normalised xywh) and image shapes (h, w)."""
    images, annotations = [], []
    for image_id, (record, (height, width)) in enumerate(zip(labels, shapes)):
        images.append({"id": image_id, "file_name": Path(record["im_file"]).name, "height": int(height),
                       "width": int(width)})
        boxes = np.asarray(record["bboxes"], dtype=np.float64).reshape(-1, 4)
        classes = np.asarray(record["cls"]).reshape(-1)
        for (cx, cy, w, h), cls_index in zip(boxes, classes):
            box = [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id":
                                int(category_ids[int(cls_index)]), "bbox": box, "area": box[2] * box[3],
                                "iscrowd": 0})
    categories = [{"id": int(cid), "name": str(name)} for cid, name in zip(category_ids, names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _gt_in_pixels(record: dict, shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """[M, 4] xyxy original pixels and [M] classes of one label record; shape is (h, w)."""
    height, width = shape
    boxes = torch.as_tensor(np.asarray(record["bboxes"], dtype=np.float64).reshape(-1, 4))
    scale = boxes.new_tensor([width, height, width, height])
    centre, size = boxes[:, :2], boxes[:, 2:]
    xyxy = torch.cat((centre - size / 2, centre + size / 2), 1) * scale
    return xyxy, torch.as_tensor(np.asarray(record["cls"]).reshape(-1), dtype=torch.int64)


@torch.no_grad()
def validate(model: nn.Module, loader, spec, device: torch.device, conf: float = 0.001, iou: float = 0.7,
             max_det: int = 300, amp: bool = False, backend: str = "pycocotools",
             progress: bool = False) -> ValidationResult:
    """Evaluate ``model`` on ``loader`` (a val loader of ``spec``); returns metrics and predictions.

    Metrics keys: map50_95, map50, map75, map_small/medium/large, ar100 (COCO protocol, pycocotools),
    yolo_map50_95, yolo_map50, precision, recall (ultralytics protocol), images, time_ms_per_image.
    """
    from spikeyolo._ultralytics.ops import non_max_suppression

    was_training = model.training
    model.eval()
    recorder = FiringRecorder(model)
    dataset = loader.dataset
    label_by_file = {record["im_file"]: record for record in dataset.labels}
    dtype = next(model.parameters()).dtype
    detections, ratio_pads, shapes, files = [], [], [], []
    started = time.perf_counter()
    iterator = loader
    if progress:
        from tqdm import tqdm

        iterator = tqdm(loader, desc="val", leave=False)
    for batch in iterator:
        images = model_input(batch["img"], device).to(dtype)  # float64 models: exact path comparisons
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            decoded, _ = model(images)
        for index, image_dets in enumerate(non_max_suppression(decoded.float(), conf, iou, max_det)):
            detections.append(image_dets.cpu())
            ratio_pads.append(batch["ratio_pad"][index])
            shapes.append(batch["ori_shape"][index])
            files.append(batch["im_file"][index])
    elapsed = time.perf_counter() - started
    recorder.remove()
    model.train(was_training)

    in_pixels = [torch.cat((unletterbox_boxes(d[:, :4], rp, shape), d[:, 4:6].double()), 1)
                 for d, rp, shape in zip(detections, ratio_pads, shapes)]
    gt = [_gt_in_pixels(label_by_file[f], shape) for f, shape in zip(files, shapes)]
    yolo = evaluate_yolo_ap(in_pixels, [g[0] for g in gt], [g[1] for g in gt])

    category_ids = list(spec.category_ids) if spec.category_ids else list(range(1, spec.num_classes + 1))
    if spec.val_json is not None:
        from spikeyolo.data import coco_image_ids

        ids_by_name = coco_image_ids(spec)
        image_ids = [ids_by_name[Path(f).name] for f in files]
        gt_source: Any = str(spec.val_json)
    else:
        gt_source = coco_gt_from_labels([label_by_file[f] for f in files], shapes, category_ids, spec.names)
        image_ids = list(range(len(files)))
    results = to_coco_results(in_pixels, image_ids, category_ids)
    coco = evaluate_coco(gt_source, results, backend=backend)
    metrics = {k: float(v) for k, v in coco.to_dict().items() if isinstance(v, (int, float))}
    metrics.update({"yolo_map50_95": float(yolo["map50_95"]), "yolo_map50": float(yolo["map50"]),
                    # the same matching with the SpikeYOLO reference's AP arithmetic (ultralytics 8.0.197)
                    "reference_map50_95": float(yolo["reference_map50_95"]),
                    "reference_map50": float(yolo["reference_map50"]),
                    "precision": float(yolo["precision"]), "recall": float(yolo["recall"]),
                    "images": len(files), "time_ms_per_image": 1000 * elapsed / max(len(files), 1)})
    firing = recorder.rates()
    metrics.update({f"firing/{k.split('/', 1)[1]}": v for k, v in firing.items() if k.startswith("group/")})
    return ValidationResult(metrics=metrics, coco=coco, yolo_ap=yolo, firing=firing, detections=in_pixels,
                            im_files=files, coco_results=results)
