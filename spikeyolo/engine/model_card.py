"""Model card of a training run: RUN_DIR/model_card.md, filled in from the run at the end of training.

The template is ``TEMPLATE`` below (the same text as docs/model-card-template.md, which a test keeps in
sync). Fields are ``$name`` placeholders (``string.Template``); what the run cannot know (intended use,
limitations) stays as a TODO line for a person to write.
"""

from __future__ import annotations

import datetime as _dt
import os
import string
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from spikeyolo.io import plain, write_text
from spikeyolo.models import NEURONS, family_class
from spikeyolo.version import __version__

__all__ = ["TEMPLATE", "model_card_fields", "render_model_card", "write_model_card"]

TEMPLATE = """\
# Model card: $run_name

Filled in by `spikeyolo-train` at the end of the run ($date); edit the TODO lines by hand.

## Model

| | |
|---|---|
| architecture | $architecture |
| scale | depth $depth_multiple, width $width_multiple, max channels $max_channels |
| neuron | $neuron (T = $time_steps time steps, D = $max_level levels) |
| parameters | $parameters |
| classes | $num_classes: $class_names |
| checkpoint | `$checkpoint` (EMA weights of the best epoch) |
| spikeyolo | $version |

Inference runs the same weights on the integer path (activations in {0..D}) or on the spike-driven
path (T x D binary time steps); see docs/spike-driven.md and `spikeyolo-export`.

## Data

| | |
|---|---|
| dataset | $dataset ($data_source) |
| images | $train_images train, $val_images val |
| input size | $imgsz x $imgsz (letterboxed) |
| augmentation | $augmentation |

## Training recipe

| | |
|---|---|
| epochs | $epochs_trained trained of $epochs configured |
| batch | $batch_size in all over $world_size process(es), nominal batch $nominal_batch_size |
| optimizer | SGD lr0 $lr0, final factor $lrf, momentum $momentum, weight decay $weight_decay, warmup $warmup_epochs epochs |
| EMA | $ema |
| mixed precision | $amp |
| device | $device |
| seed | $seed |
| full config | `$config_path` |

## Results (validation split, best epoch)

| metric | value |
|---|---|
| mAP@50:95 (COCO protocol) | $map50_95 |
| mAP@50 (COCO protocol) | $map50 |
| mAP@50 (ultralytics protocol) | $yolo_map50 |
| mAP@50 (ultralytics protocol, the SpikeYOLO reference's 8.0.197 arithmetic) | $reference_map50 |

Per-class AP: `per_class_ap.md`. All numbers: `metrics.json`.

## Firing rates (validation split)

Mean spike count of the neurons of each layer group divided by D (0: silent, 1: every neuron at D).

$firing_rates

## Intended use and limitations

- Intended use: TODO
- Out of scope: TODO
- Known failure modes: TODO (e.g. small objects, other sensors or image statistics than the training data)
- Energy: estimate with `spikeyolo-energy checkpoint=$checkpoint` (see docs/user-guide.md)
"""


def _fmt(value: Any, digits: int | None = None) -> str:
    """A config value as written (``0.33``, ``1e-05``) or a metric with ``digits`` decimals."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if digits is not None else f"{value:g}"
    return str(value)


def _firing_table(metrics: Mapping[str, Any]) -> str:
    rates = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("firing/")}
    if not rates:
        return "(not measured)"
    rows = ["| group | firing rate |", "|---|---|"]
    rows += [f"| {name} | {float(value):.4f} |" for name, value in sorted(rates.items())]
    return "\n".join(rows)


def model_card_fields(cfg: DictConfig, metrics: Mapping[str, Any], *, run_dir: str | os.PathLike,
                      checkpoint: str | os.PathLike, class_names: list[str], parameters: int,
                      train_images: int, val_images: int, epochs_trained: int, world_size: int = 1,
                      dataset: str | None = None) -> dict[str, str]:
    """The template's fields from a run's config (spikeyolo-train's), final metrics and counts (all as strings);
    keys a model family does not have (Tiny YOLO's depth) read n/a."""

    def pick(key: str) -> Any:
        return OmegaConf.select(cfg, key, default=None)

    augment = plain(pick("data.augment"))
    shown = [f"{k} {augment[k]}" for k in ("mosaic", "mixup", "scale", "translate", "fliplr", "hsv_v")
             if k in augment]
    names = ", ".join(class_names[:20]) + (f", ... ({len(class_names)} in all)" if len(class_names) > 20 else "")
    neuron_kind = pick("neuron.kind")
    neuron_class = NEURONS[neuron_kind].__name__ if neuron_kind in NEURONS else str(neuron_kind)
    return {
        "run_name": str(cfg.name),
        "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "architecture": family_class(str(pick("model.family"))),
        "depth_multiple": _fmt(pick("model.depth_multiple")),
        "width_multiple": _fmt(pick("model.width_multiple")),
        "max_channels": _fmt(pick("model.max_channels")),
        "neuron": neuron_class,
        "time_steps": _fmt(pick("neuron.time_steps")),
        "max_level": _fmt(pick("neuron.max_level")),
        "parameters": f"{parameters:,} ({parameters / 1e6:.2f} M)",
        "num_classes": str(len(class_names)),
        "class_names": names or "n/a",
        "checkpoint": str(checkpoint),
        "version": __version__,
        "dataset": str(dataset or cfg.data.name),
        "data_source": str(cfg.data.source),
        "train_images": str(train_images),
        "val_images": str(val_images),
        "imgsz": _fmt(pick("data.imgsz")),
        "augmentation": ", ".join(shown) or "none",
        "epochs_trained": str(epochs_trained),
        "epochs": _fmt(pick("trainer.epochs")),
        "batch_size": _fmt(pick("trainer.batch_size")),
        "world_size": str(world_size),
        "nominal_batch_size": _fmt(pick("optim.nominal_batch_size")),
        "lr0": _fmt(pick("optim.lr0")),
        "lrf": _fmt(pick("optim.lrf")),
        "momentum": _fmt(pick("optim.momentum")),
        "weight_decay": _fmt(pick("optim.weight_decay")),
        "warmup_epochs": _fmt(pick("optim.warmup_epochs")),
        "ema": (f"decay {pick('trainer.ema_decay')}, tau {pick('trainer.ema_tau')}" if pick("trainer.ema")
                else "off"),
        "amp": "on (CUDA)" if pick("trainer.amp") and str(pick("trainer.device")) != "cpu" else "off",
        "device": _fmt(pick("trainer.device")),
        "seed": _fmt(pick("seed")),
        "config_path": str(Path(run_dir) / "config.yaml"),
        "map50_95": _fmt(metrics.get("map50_95"), 4),
        "map50": _fmt(metrics.get("map50"), 4),
        "yolo_map50": _fmt(metrics.get("yolo_map50"), 4),
        "reference_map50": _fmt(metrics.get("reference_map50"), 4),
        "firing_rates": _firing_table(metrics),
    }


def render_model_card(fields: Mapping[str, str], template: str = TEMPLATE) -> str:
    """Fill the template; a field the mapping lacks stays as its ``$name``."""
    return string.Template(template).safe_substitute(fields)


def write_model_card(trainer: Any, metrics: Mapping[str, Any], path: str | os.PathLike | None = None) -> Path:
    """Write RUN_DIR/model_card.md for a finished :class:`~spikeyolo.engine.trainer.Trainer` run.

    Args:
        trainer: the trainer after ``fit()`` (config, dataset spec, loaders, model).
        metrics: the final metrics of the best weights (``finish_run``).
        path: default RUN_DIR/model_card.md.
    """
    run_dir = Path(trainer.run_dir)
    fields = model_card_fields(
        trainer.cfg, metrics, run_dir=run_dir, checkpoint=trainer.weights_dir / "best.pt",
        class_names=list(trainer.spec.names), parameters=int(sum(p.numel() for p in trainer.model.parameters())),
        train_images=len(trainer.train_loader.dataset),
        val_images=len(trainer.val_loader.dataset) if trainer.val_loader is not None else 0,
        epochs_trained=len(trainer.metrics_file.read()), world_size=int(trainer.dist.world_size),
        dataset=trainer.spec.name)
    path = Path(path) if path is not None else run_dir / "model_card.md"
    return write_text(path, render_model_card(fields))
