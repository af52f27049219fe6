"""Validation: one pass of a detector over a val loader (:mod:`spikeyolo.engine.predict`), scored every way the
data config lists (:mod:`spikeyolo.evaluation.evaluators`).

``validate`` serves training (every ``trainer.val_interval`` epochs, the flat evaluators), ``spikeyolo-eval``
and the Gen1 protocols (all of the data config's evaluators); ``validate_timesteps`` serves the timestep sweep
of a converted Spiking-YOLO: one pass read out at every (decoding, T) and each point scored by the COCO
evaluator. Either way the loader is read once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from spikeyolo.conversion.evaluation import TimestepReadOut, TimestepSweep
from spikeyolo.conversion.spiking_yolo import SpikingYOLO
from spikeyolo.engine.predict import predict, predict_each
from spikeyolo.evaluation.coco import CocoResult, score_coco
from spikeyolo.evaluation.evaluators import run_evaluators
from spikeyolo.structures import Predictions, Score

__all__ = ["ValidationResult", "validate", "validate_timesteps"]


@dataclass
class ValidationResult:
    """One validation: the merged metrics, the pass and every evaluator's score.

    Attributes:
        metrics: the evaluators' metrics (sectioned ones, the Gen1 protocols, under ``protocols``) plus
            ``images`` and ``time_ms_per_image`` of the pass.
        predictions: the pass (detections in original pixels, ground truth, firing rates).
        scores: evaluator name -> :class:`~spikeyolo.structures.Score`.
    """

    metrics: dict[str, Any]
    predictions: Predictions
    scores: dict[str, Score]

    @property
    def coco(self) -> CocoResult | None:
        """The COCO evaluator's result (None when it did not run)."""
        return self.scores["coco"].result if "coco" in self.scores else None

    @property
    def yolo_ap(self) -> dict[str, Any]:
        """The ultralytics AP arrays (:func:`~spikeyolo.evaluation.evaluate_yolo_ap`); {} when it did not run."""
        return self.scores["yolo_ap"].result if "yolo_ap" in self.scores else {}

    @property
    def coco_results(self) -> list[dict]:
        """The detections as COCO result dicts (what predictions.json holds); [] without the COCO evaluator."""
        return self.scores["coco"].records if "coco" in self.scores else []

    @property
    def firing(self) -> dict[str, float]:
        return self.predictions.firing

    @property
    def detections(self) -> list[torch.Tensor]:
        return self.predictions.detections

    @property
    def im_files(self) -> list[str]:
        return self.predictions.im_files


@torch.no_grad()
def validate(model: nn.Module, loader, spec, device: torch.device, conf: float = 0.001, iou: float = 0.7,
             max_det: int = 300, amp: bool = False, backend: str = "pycocotools", progress: bool = False,
             evaluators: Sequence[str] | None = None) -> ValidationResult:
    """Evaluate ``model`` on ``loader`` (a val loader of ``spec``) with one pass; returns metrics and predictions.

    Args:
        evaluators: evaluator names (:data:`~spikeyolo.evaluation.EVALUATORS`), the data config's
            ``evaluators``; None: coco, yolo_ap, firing.

    Metrics keys (default evaluators): map50_95, map50, map75, map_small/medium/large, ar100 ... (COCO protocol),
    yolo_map50_95, yolo_map50, reference_map50_95, reference_map50, precision, recall (ultralytics protocol),
    firing/<group>, images, time_ms_per_image; with the Gen1 protocols, ``protocols``: {name: metrics}.
    """
    predictions = predict(model, loader, device, conf, iou, max_det, amp, progress)
    metrics, scores = run_evaluators(evaluators, predictions, spec, backend)
    metrics.update({"images": predictions.images,
                    "time_ms_per_image": 1000 * predictions.seconds / max(predictions.images, 1)})
    return ValidationResult(metrics=metrics, predictions=predictions, scores=scores)


@torch.no_grad()
def validate_timesteps(model: SpikingYOLO, loader, spec, device: torch.device, timesteps: Sequence[int],
                       decodings: Sequence[str] = ("vmem", "spike"), e_mac_pj: float = 4.6, e_ac_pj: float = 0.9,
                       progress: bool = False, conf: float = 0.001, iou: float = 0.7, max_det: int = 300,
                       backend: str = "pycocotools") -> TimestepSweep:
    """mAP@50 and mAP@50:95 (COCO protocol) at every T in ``timesteps`` for each decoding, with energy per image.

    Args:
        model: a converted SpikingYOLO (eval mode is used).
        loader: the validation loader of ``spec``, read once.
        timesteps: the T values (one simulation to their maximum per batch).
        decodings: output decodings to score.
        e_mac_pj, e_ac_pj: energy per MAC and per accumulate (pJ).
        conf, iou, max_det: NMS settings of the scoring (as ``spikeyolo-eval``).
        backend: the COCO backend.
    """
    read_out = TimestepReadOut(model.to(device), timesteps, decodings)
    runs = predict_each(model, loader, device, read_out, conf, iou, max_det, progress, record_firing=False,
                        desc="simulate")
    maps = {}
    for key, predictions in runs.items():
        metrics = score_coco(predictions, spec, backend).metrics
        maps[key] = (metrics["map50"], metrics["map50_95"])
    return read_out.sweep(maps, e_mac_pj, e_ac_pj)
