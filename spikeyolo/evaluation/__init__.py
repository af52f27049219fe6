"""Evaluation: pure scorers of an inference pass (:class:`~spikeyolo.structures.Predictions`) and their registry.

    coco         COCO mAP (pycocotools / faster-coco-eval); the COCO ground truth of labels without a json
    ap           the ultralytics-style AP (installed 8.4 and the reference's 8.0.197 arithmetic)
    gen1         the three Gen1 protocols (spikeyolo / prophesee / cordone)
    firing       firing rates: the forward-hook recorder of a pass and its ``firing/<group>`` report
    predictions  model outputs -> COCO results (letterbox undone), saved atomically
    evaluators   names -> scorers (the data config's ``evaluators:``), run over one pass

Nothing here imports ``spikeyolo.engine`` or ``spikeyolo.cli``; the pass itself is
:func:`spikeyolo.engine.predict.predict`.
"""

from spikeyolo.evaluation.ap import IOU_THRESHOLDS, evaluate_yolo_ap, match_image, score_yolo_ap
from spikeyolo.evaluation.coco import STAT_NAMES, ClassAP, CocoResult, coco_gt_from_labels, evaluate_coco, score_coco
from spikeyolo.evaluation.evaluators import (
                                             DEFAULT_EVALUATORS,
                                             EVALUATORS,
                                             Evaluator,
                                             flat_evaluators,
                                             get_evaluator,
                                             register_evaluator,
                                             run_evaluators,
)
from spikeyolo.evaluation.firing import FiringRecorder, score_firing
from spikeyolo.evaluation.gen1 import (
                                             GEN1_PROTOCOLS,
                                             GEN4_PROTOCOLS,
                                             EventProtocol,
                                             camera_protocols,
                                             evaluate_gen1,
                                             get_protocol,
                                             protocol_ground_truth,
                                             score_gen1,
)
from spikeyolo.evaluation.predictions import (
                                             clip_boxes,
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
    "coco_gt_from_labels",
    "score_coco",
    "IOU_THRESHOLDS",
    "match_image",
    "evaluate_yolo_ap",
    "score_yolo_ap",
    "to_coco_results",
    "save_coco_results",
    "letterbox_ratio_pad",
    "unletterbox_boxes",
    "clip_boxes",
    "GEN1_PROTOCOLS",
    "GEN4_PROTOCOLS",
    "EventProtocol",
    "camera_protocols",
    "get_protocol",
    "protocol_ground_truth",
    "evaluate_gen1",
    "score_gen1",
    "FiringRecorder",
    "score_firing",
    "Evaluator",
    "EVALUATORS",
    "DEFAULT_EVALUATORS",
    "get_evaluator",
    "register_evaluator",
    "flat_evaluators",
    "run_evaluators",
]
