"""spikeyolo-train: train a model on a dataset (the reference recipe unless an experiment is named).

Examples:
    spikeyolo-train experiment=demo                   # the CPU demo: SpikeYOLO-n on the embedded trees, ~10 min
    spikeyolo-train model=spikeyolo_s data=coco trainer.epochs=300 neuron.max_level=4 trainer.device=0
    spikeyolo-train data=yolo data.yaml=PATH/TO/dataset.yaml
    spikeyolo-train run_dir=runs/x trainer.resume=true   # continue the run in runs/x as its config.yaml says
    spikeyolo-train -m neuron.max_level=1,2,4            # a sweep: a run folder per point and summary.md
    torchrun --nproc_per_node 2 -m spikeyolo.cli.train run_dir=runs/ddp trainer.device=cuda   (one GPU per process)

A run lands in runs/<name>/<time> (name: <model config>_<dataset>, or the experiment's) unless run_dir is given.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from spikeyolo.cli.common import (UserError, friendly_errors, hydra_app, log_to_file, prepare_run_dir, setup_logging,
                                  write_json)
from spikeyolo.config import resume_config
from spikeyolo.engine import checkpoint as ckpt
from spikeyolo.engine.loggers import build_logger
from spikeyolo.engine.model_card import write_model_card
from spikeyolo.engine.trainer import Trainer
from spikeyolo.plots import plot_pr_curve, plot_training_curves, plot_val_mosaic

log = logging.getLogger("spikeyolo.train")


@friendly_errors
def train(cfg: DictConfig) -> dict[str, float]:
    """Train, evaluate the best weights, write RUN_DIR/metrics.json and plots; returns the final metrics.

    RUN_DIR is created once the data, model and loaders are built, so bad input leaves no run folder behind;
    its train.log starts with what was logged before. ``trainer.resume=true`` continues the run in ``run_dir`` with
    its own config.yaml (:func:`spikeyolo.config.resume_config`: only a few keys may change).
    """
    is_main = int(os.environ.get("RANK", "0")) == 0
    setup_logging(keep_for_file=is_main)
    if cfg.trainer.resume:
        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else [f"run_dir={cfg.run_dir}"]
        cfg = resume_config(overrides, composed=cfg)
    elif (Path(cfg.run_dir) / "config.yaml").is_file():
        # a new run would overwrite that run's checkpoints and results
        raise UserError(f"run_dir {cfg.run_dir} already holds a run (its config.yaml): trainer.resume=true "
                        f"run_dir={cfg.run_dir} continues it; give another run_dir= to start a new one")
    trainer = Trainer(cfg)
    if is_main:
        run_dir = prepare_run_dir(cfg)
        log_to_file(run_dir / "train.log")
        trainer.logger = build_logger(OmegaConf.to_container(cfg.logger, resolve=True), run_dir,
                                      OmegaConf.to_container(cfg, resolve=True))
        steps = trainer.model.time_steps  # None: an ANN (tiny_yolo) has no T and D
        timing = f"T={steps} D={trainer.model.max_level}" if steps is not None else "ANN"
        log.info("run %s: %s on %s (%d train / %d val images), %s, %s, %.2fM parameters", trainer.run_dir,
                 type(trainer.model).__name__, trainer.spec.name,
                 len(trainer.train_loader.dataset), len(trainer.val_loader.dataset), trainer.device,
                 timing, trainer.model.num_parameters() / 1e6)
    metrics = trainer.fit()
    if not is_main:
        return metrics
    return finish_run(trainer, trainer.logger)


def finish_run(trainer, logger) -> dict[str, float]:
    """Evaluate best.pt (the EMA weights of the best epoch), write metrics.json, model_card.md and the plots."""
    run_dir = trainer.run_dir
    best = trainer.weights_dir / "best.pt"
    model = trainer.ema.module if trainer.ema else trainer.model
    if best.is_file():
        ckpt.load_weights(model, ckpt.read_checkpoint(best), source=str(best))
    metrics = trainer.validate()
    result = trainer.last_result
    write_json(run_dir / "metrics.json", {**metrics, "weights": str(best), "epochs_trained":
                                          len(trainer.metrics_file.read()),
                                          "parameters": trainer.model.num_parameters(),
                                          "time_steps": trainer.model.time_steps,  # None: ANN
                                          "max_level": trainer.model.max_level,
                                          "epochs_planned": trainer.epochs,
                                          "cut_by_max_minutes": trainer.cut})
    if result.coco is not None:   # the data config's evaluators include coco (the default)
        (run_dir / "per_class_ap.md").write_text(result.coco.table(markdown=True) + "\n")
    write_model_card(trainer, metrics)
    plot_training_curves(trainer.metrics_file.read(), run_dir / "curves.png")
    yolo = result.yolo_ap
    if len(yolo.get("class_index", [])):
        plot_pr_curve(yolo["recall_grid"], yolo["precision_curve"], list(trainer.spec.names), run_dir / "pr_curve.png",
                      ap50=yolo["ap50"])
    mosaic = plot_val_mosaic(result.im_files, result.detections, list(trainer.spec.names), run_dir / "val_pred.png")
    if logger is not None:
        logger.log_metrics({f"final/{k}": v for k, v in metrics.items()}, step=len(trainer.metrics_file.read()) + 1)
        for name in ("curves.png", "pr_curve.png"):
            if (run_dir / name).exists():
                logger.log_image(name.removesuffix(".png"), run_dir / name, step=len(trainer.metrics_file.read()) + 1)
        if mosaic is not None:
            logger.log_image("val_predictions", mosaic, step=len(trainer.metrics_file.read()) + 1)
        logger.finish()
    if result.coco is not None:
        print(result.coco.table(markdown=True))
    labels = {"map50": "mAP@50", "map50_95": "mAP@50:95", "yolo_map50": "ultralytics protocol: mAP@50"}
    scores = "  ".join(f"{label} {metrics[key]:.4f}" for key, label in labels.items() if key in metrics)
    print(f"final evaluation ({best.name}): {scores}  -> {run_dir / 'metrics.json'}")
    if trainer.cut:
        print(f"note: {trainer.cut}")
    if trainer.tcfg.yardstick:
        print(f"yardstick: {trainer.tcfg.yardstick}")
    return metrics


main = hydra_app("train", train, __doc__)


if __name__ == "__main__":
    main()
