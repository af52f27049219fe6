"""spikeyolo-eval: COCO mAP of a checkpoint on a dataset, or of an existing COCO results file.

Writes RUN_DIR/metrics.json (map50_95, map50, the 12 COCO stats, the ultralytics-protocol AP,
firing rates) and prints the results table. The model runs once over the val split, and that one pass is
scored every way the data config lists (``data.evaluators``, spikeyolo/evaluation/evaluators.py).
``deploy=spike_driven`` evaluates through the binary T x D spike-driven path built from the same weights. On
a Gen1 dataset (``data=gen1``) it also scores the three Gen1 protocols (``protocol=all``, or one of them) and
adds them to metrics.json under ``protocols``. ``checkpoint=`` also takes a reference (BICLab/SpikeYOLO)
checkpoint, read without running anything in it; its scale is inferred from the weights (or
``model=spikeyolo_s``) and T, D are the reference's unless ``neuron.time_steps=`` / ``neuron.max_level=`` are
given.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from spikeyolo.cli.common import UserError, friendly_errors, hydra_app, prepare_run_dir, setup_logging, write_json
from spikeyolo.config import resolve_imgsz, resolve_time_steps
from spikeyolo.conversion import SpikingYOLO
from spikeyolo.data import dataloader_from_config, get_source, spec_from_config
from spikeyolo.deploy import DEPLOY_PATHS
from spikeyolo.engine.checkpoint import (
    describe_model_config,
    model_from_payload,
    read_model_checkpoint,
    trained_data_config,
)
from spikeyolo.engine.distributed import select_device
from spikeyolo.engine.validate import ValidationResult, validate, validate_timesteps
from spikeyolo.evaluation import evaluate_coco, get_evaluator, save_coco_results
from spikeyolo.plots import plot_channel_rates, plot_firing_rates, plot_timesteps

log = logging.getLogger("spikeyolo.eval")


def score_files(cfg: DictConfig) -> dict[str, float]:
    """The 12 COCO stats of a results json (``detections``) against a ground-truth json (``gt``)."""
    for key in ("gt", "detections"):
        if not Path(cfg[key]).is_file():
            raise UserError(f"{key}={cfg[key]}: file not found (a COCO {'ground-truth' if key == 'gt' else 'results'} "
                            "json file)")
    run_dir = prepare_run_dir(cfg)
    gt, detections, backend = cfg.gt, cfg.detections, cfg.backend
    result = evaluate_coco(gt, detections, backend=backend)
    print(result.summary)
    print(result.table(markdown=True))
    metrics = {k: v for k, v in result.to_dict().items() if isinstance(v, float)}
    write_json(run_dir / "metrics.json", {**metrics, "stats": result.stats})
    return metrics


def load_model(cfg: DictConfig) -> torch.nn.Module:
    """The checkpoint's model (on the CPU); ``cfg.data.imgsz`` becomes the size it was trained at when the data
    config leaves it null (a model trained at 128 and scored at the data config's 320 finds almost nothing)."""
    payload = read_model_checkpoint(cfg.checkpoint, cfg.model, cfg.neuron.time_steps, cfg.neuron.max_level)
    if "source" in payload:
        print(f"{cfg.checkpoint}: {payload['source']}, model {describe_model_config(payload['model_config'])}")
    model = model_from_payload(payload, use_ema=cfg.use_ema, source=str(cfg.checkpoint))
    resolve_imgsz(cfg, model, trained_data_config(payload))
    return model


DTYPES = {"float32": torch.float32, "float64": torch.float64}


def deployed(cfg: DictConfig, model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in the evaluation dtype (``dtype``) on the ``deploy`` path (spikeyolo.deploy.DEPLOY_PATHS)."""
    if cfg.dtype not in DTYPES:
        raise UserError(f"dtype must be one of {', '.join(DTYPES)}, got {cfg.dtype!r}")
    if cfg.deploy not in DEPLOY_PATHS:
        raise UserError(f"deploy must be one of {', '.join(DEPLOY_PATHS)}, got {cfg.deploy!r}")
    model = model.to(dtype=DTYPES[cfg.dtype])  # fold BN/RepConv in the evaluation precision
    return DEPLOY_PATHS[cfg.deploy](model)


def evaluator_names(cfg: DictConfig) -> list[str]:
    """The data config's evaluators (data.evaluators); ``protocol=NAME`` keeps one Gen1 protocol."""
    names = [str(name) for name in cfg.data.evaluators]
    for name in names:
        try:
            get_evaluator(name)
        except ValueError as error:
            raise UserError(f"data.evaluators: {error}") from None
    protocols = [name for name in names if get_evaluator(name).section == "protocols"]
    if cfg.protocol == "all":
        return names
    if not protocols:
        raise UserError(f"protocol={cfg.protocol} applies to event datasets only (data=gen1, data=gen4)")
    if cfg.protocol not in protocols:
        raise UserError(f"protocol must be all or one of {', '.join(protocols)}, got {cfg.protocol!r}")
    return [name for name in names if name not in protocols or name == cfg.protocol]


def evaluate_checkpoint(cfg: DictConfig) -> dict:
    """One pass of the checkpoint's model over the val split, scored by the data config's evaluators; RUN_DIR is
    created once the checkpoint, the dataset and the options are accepted."""
    if not Path(cfg.checkpoint).is_file():
        raise UserError(f"checkpoint not found: {cfg.checkpoint}")
    device = select_device(cfg.device)
    model = load_model(cfg)
    spec = spec_from_config(cfg.data)
    if model.num_classes != spec.num_classes:
        raise UserError(f"checkpoint {cfg.checkpoint} predicts {model.num_classes} classes but dataset "
                        f"{spec.name!r} has {spec.num_classes}")
    model = deployed(cfg, model).to(device)
    names = evaluator_names(cfg)
    overrides = {}
    if get_source(spec.source).is_event_data:   # clips of the model's T
        overrides["time_steps"] = resolve_time_steps(cfg, model)
    loader = dataloader_from_config(spec, cfg.data, "val", cfg.batch_size, cfg.workers,
                                    stride=max(model.strides), device=device, **overrides)
    if cfg.timesteps is not None and not isinstance(model, SpikingYOLO):
        raise UserError(f"timesteps= applies to converted Spiking-YOLO checkpoints (spikeyolo-convert), "
                        f"not to a {type(model).__name__}")
    run_dir = prepare_run_dir(cfg)
    if cfg.timesteps is not None:
        return evaluate_timestep_sweep(cfg, model, loader, spec, device, run_dir)
    result = validate(model, loader, spec, device, cfg.nms.conf, cfg.nms.iou, cfg.nms.max_det, backend=cfg.backend,
                      progress=True, evaluators=names)
    print_result(result)
    metrics = {**result.metrics, "checkpoint": str(cfg.checkpoint), "deploy": str(cfg.deploy), "dataset": spec.name}
    if cfg.save_json:
        save_coco_results(result.coco_results, run_dir / "predictions.json")
    write_json(run_dir / "metrics.json", metrics)
    if "map50" in metrics:
        print(f"mAP@50 {metrics['map50']:.4f}  mAP@50:95 {metrics['map50_95']:.4f}  ({cfg.deploy} path)  "
              f"-> {run_dir / 'metrics.json'}")
    else:
        print(f"({cfg.deploy} path) -> {run_dir / 'metrics.json'}")
    return metrics


def print_result(result: ValidationResult) -> None:
    """The COCO summary and per-class table, and the Gen1 protocols' table, of what was scored."""
    if result.coco is not None:
        print(result.coco.summary)
        print(result.coco.table(markdown=True))
    protocols = result.metrics.get("protocols", {})
    if protocols:
        print("| protocol | metric | mAP@50:95 | mAP@50 | reference-arithmetic mAP@50:95 / @50 | images | gt boxes |\n"
              "|---|---|---|---|---|---|---|")
    for name, score in protocols.items():
        reference = (f"{score['reference_map50_95']:.4f} / {score['reference_map50']:.4f}"
                     if "reference_map50" in score else "-")
        print(f"| {name} | {score['metric']} | {score['map50_95']:.4f} | {score['map50']:.4f} | {reference} | "
              f"{score['images']} | {score['gt_boxes']} |")


def evaluate_timestep_sweep(cfg: DictConfig, model, loader, spec, device, run_dir: Path) -> dict:
    """A converted Spiking-YOLO at every T of ``timesteps`` (Vmem and spike-count decoding, one simulation and one
    pass over the loader).

    Writes RUN_DIR/timesteps.json, map_vs_timesteps.png, firing_rates.png (per layer) and channel_rates.png
    (per-channel spread per layer).
    """
    steps = sorted(set(cfg.timesteps))
    if not steps or steps[0] < 1:
        raise UserError(f"timesteps must be >= 1, got {steps}")
    sweep = validate_timesteps(model, loader, spec, device, steps, e_mac_pj=float(cfg.energy.e_mac_pj),
                               e_ac_pj=float(cfg.energy.e_ac_pj), progress=True, conf=cfg.nms.conf,
                               iou=cfg.nms.iou, max_det=cfg.nms.max_det, backend=cfg.backend)
    report = {**sweep.to_dict(), "checkpoint": str(cfg.checkpoint), "dataset": spec.name}
    write_json(run_dir / "timesteps.json", report)
    plot_timesteps({Path(str(cfg.checkpoint)).stem: sweep}, run_dir / "map_vs_timesteps.png")
    plot_firing_rates({Path(str(cfg.checkpoint)).stem: sweep.firing_rates}, run_dir / "firing_rates.png")
    plot_channel_rates(list(enumerate(sweep.channel_rates)), run_dir / "channel_rates.png", xlabel="hidden conv layer",
                       ylabel="per-channel net spikes / neuron / step", title=f"T={steps[-1]}")
    print("| T | mAP@50 vmem | mAP@50 spike | mAP@50:95 vmem | SNN energy (mJ) |")
    print("|---|---|---|---|---|")
    for t in steps:
        by = {p.decoding: p for p in sweep.points if p.time_steps == t}
        print(f"| {t} | {by['vmem'].map50:.4f} | {by['spike'].map50:.4f} | {by['vmem'].map50_95:.4f} | "
              f"{by['vmem'].snn_energy_mj:.3f} |")
    print(f"ANN (dense MACs) {sweep.ann_energy_mj:.3f} mJ per image -> {run_dir / 'timesteps.json'}")
    return report


@friendly_errors
def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Score a checkpoint (``checkpoint``) or a results file (``gt`` and ``detections``); returns the metrics."""
    setup_logging()
    if cfg.gt is not None or cfg.detections is not None:
        if cfg.gt is None or cfg.detections is None:
            raise UserError("scoring mode needs both gt=FILE and detections=FILE (COCO json files)")
        return score_files(cfg)
    if cfg.checkpoint is None:
        raise UserError("give checkpoint=PATH (a checkpoint file; or gt=FILE detections=FILE to score a results file)")
    return evaluate_checkpoint(cfg)


main = hydra_app("eval", evaluate, __doc__)


if __name__ == "__main__":
    main()
