"""The evaluator registry: names -> scorers of an inference pass, as the data config lists them.

An evaluator is a pure function of one pass (:class:`~spikeyolo.structures.Predictions`) and the dataset:
``score(predictions, spec, backend) -> Score``. The data config names the ones its dataset is scored with
(``evaluators:`` in spikeyolo/configs/data/; default :data:`DEFAULT_EVALUATORS`); validation during training,
``spikeyolo-eval`` and the Gen1 protocols then score one pass of the model every way listed.

    coco       the 12 COCOeval stats (map50_95, map50, map75, map_small/medium/large, ar1/10/100, ar_*)
    yolo_ap    yolo_map50_95, yolo_map50 (ultralytics 8.4), reference_map50_95, reference_map50 (8.0.197),
               precision, recall
    firing     firing/<group> (backbone, neck, head, all): firing rates recorded during the pass
    spikeyolo, prophesee, cordone
               the Gen1 protocols (:mod:`spikeyolo.evaluation.gen1`), each a dict under ``protocols``
    spikeyolo_gen4, prophesee_gen4
               the same module's 1 Megapixel (Gen4) protocols, likewise

An evaluator's metrics go to the top level of the metrics dict, or with a ``section`` under
``metrics[section][name]``. The trainer logs flat scalars every epoch, so it runs the evaluators without a
section (:func:`flat_evaluators`); ``spikeyolo-eval`` runs them all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from spikeyolo.evaluation.ap import score_yolo_ap
from spikeyolo.evaluation.coco import score_coco
from spikeyolo.evaluation.firing import score_firing
from spikeyolo.evaluation.gen1 import PROTOCOLS, score_gen1
from spikeyolo.structures import Predictions, Score

__all__ = ["Scorer", "Evaluator", "EVALUATORS", "DEFAULT_EVALUATORS", "get_evaluator", "register_evaluator",
           "flat_evaluators", "run_evaluators"]

#: ``score(predictions, spec, backend) -> Score``
Scorer = Callable[[Predictions, Any, str], Score]


@dataclass(frozen=True)
class Evaluator:
    """A named scorer.

    Attributes:
        name: the name data configs list.
        score: ``score(predictions, spec, backend) -> Score``.
        section: None: the metrics are merged into the top level; otherwise they go to
            ``metrics[section][name]`` (the event protocols: ``protocols``).
    """

    name: str
    score: Scorer
    section: str | None = None


EVALUATORS: dict[str, Evaluator] = {evaluator.name: evaluator for evaluator in (
    Evaluator("coco", score_coco), Evaluator("yolo_ap", score_yolo_ap), Evaluator("firing", score_firing),
    *(Evaluator(name, partial(score_gen1, name), section="protocols") for name in PROTOCOLS))}
DEFAULT_EVALUATORS: tuple[str, ...] = ("coco", "yolo_ap", "firing")


def register_evaluator(evaluator: Evaluator) -> Evaluator:
    """Add an evaluator under its name (a name taken already is an error)."""
    if EVALUATORS.setdefault(evaluator.name, evaluator) is not evaluator:
        raise ValueError(f"an evaluator named {evaluator.name!r} is registered already")
    return evaluator


def get_evaluator(name: str) -> Evaluator:
    """The evaluator of a name.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    try:
        return EVALUATORS[name]
    except KeyError:
        raise ValueError(f"unknown evaluator {name!r}; expected one of {', '.join(EVALUATORS)}") from None


def flat_evaluators(names: Iterable[str] | None) -> list[str]:
    """The names among ``names`` (None: :data:`DEFAULT_EVALUATORS`) whose metrics are top-level scalars."""
    return [name for name in (DEFAULT_EVALUATORS if names is None else names) if get_evaluator(name).section is None]


def run_evaluators(names: Sequence[str] | None, predictions: Predictions, spec: Any,
                   backend: str = "pycocotools") -> tuple[dict[str, Any], dict[str, Score]]:
    """Score one pass every way ``names`` lists (None: :data:`DEFAULT_EVALUATORS`), in that order.

    Returns:
        (metrics: every evaluator's metrics merged, sectioned ones under ``metrics[section][name]``;
        {name: Score}).
    """
    metrics: dict[str, Any] = {}
    scores: dict[str, Score] = {}
    for name in DEFAULT_EVALUATORS if names is None else names:
        evaluator = get_evaluator(name)
        score = evaluator.score(predictions, spec, backend)
        scores[name] = score
        if evaluator.section is None:
            metrics.update(score.metrics)
        else:
            metrics.setdefault(evaluator.section, {})[name] = score.metrics
    return metrics, scores

