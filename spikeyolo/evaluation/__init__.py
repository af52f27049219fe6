"""Evaluation: COCO mAP (pycocotools / faster-coco-eval), the ultralytics-style AP, COCO results, plots,
and the three Gen1 protocols (spikeyolo / prophesee / cordone)."""

from spikeyolo.evaluation.ap import IOU_THRESHOLDS, evaluate_yolo_ap, match_image
from spikeyolo.evaluation.coco import STAT_NAMES, ClassAP, CocoResult, evaluate_coco
from spikeyolo.evaluation.gen1 import (GEN1_PROTOCOLS, Gen1Protocol, evaluate_gen1, evaluate_gen1_protocols,
                                      get_protocol, protocol_ground_truth)
from spikeyolo.evaluation.predictions import (
    letterbox_ratio_pad,
    save_coco_results,
    to_coco_results,
    unletterbox_boxes,
)

__all__ = [
    "STAT_NAMES",
    "ClassAP",
    "CocoResult",
    "evaluate_coco",
    "IOU_THRESHOLDS",
    "match_image",
    "evaluate_yolo_ap",
    "to_coco_results",
    "save_coco_results",
    "letterbox_ratio_pad",
    "unletterbox_boxes",
    "GEN1_PROTOCOLS",
    "Gen1Protocol",
    "get_protocol",
    "protocol_ground_truth",
    "evaluate_gen1",
    "evaluate_gen1_protocols",
]
