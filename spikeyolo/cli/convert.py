"""spikeyolo-convert: calibrate and convert a Tiny YOLO checkpoint into a Spiking-YOLO checkpoint.

    spikeyolo-convert checkpoint=ANN.pt data=trees norm=channel spiking_neuron=ibt timesteps=1000

The calibration images are the training split of ``data`` letterboxed to ``data.imgsz``. Prints the path of the
SNN checkpoint (default: beside the ANN's, <stem>_snn_<norm>_<neuron>.pt).
"""

from __future__ import annotations

import logging
from itertools import islice
from pathlib import Path
from typing import Iterator

import torch
from omegaconf import DictConfig, OmegaConf

from spikeyolo.cli.common import friendly_errors, hydra_app
from spikeyolo.config import resolve_imgsz
from spikeyolo.conversion import DECODINGS, convert_detector, spiking_model_config
from spikeyolo.conversion.normalize import NORM_MODES
from spikeyolo.data import build_dataloader, spec_from_config
from spikeyolo.engine.checkpoint import load_weights, read_checkpoint, save_checkpoint, stored_model_config
from spikeyolo.errors import UserError
from spikeyolo.models import build_model, conversion_neuron

log = logging.getLogger("spikeyolo.convert")

__all__ = ["convert", "main", "calibration_batches"]


def calibration_batches(cfg: DictConfig, stride: int) -> Iterator[torch.Tensor]:
    """Up to ``calibration.images`` training images letterboxed to ``data.imgsz``, as float batches
    [B, 3, H, W] in [0, 1]."""
    calib = cfg.calibration
    spec = spec_from_config(cfg.data)
    loader = build_dataloader(spec, calib.split, imgsz=cfg.data.imgsz, batch_size=calib.batch_size, workers=0,
                              augment=False, shuffle=False, stride=stride, device=cfg.device)
    remaining = calib.images
    for batch in islice(iter(loader), len(loader)):
        if remaining <= 0:
            break
        images = batch["img"][:remaining].to(cfg.device).float() / 255.0  # uint8 [B, 3, H, W] -> [0, 1]
        remaining -= images.shape[0]
        yield images


@friendly_errors
def convert(cfg: DictConfig) -> Path:
    """Load the ANN, calibrate, convert, save; prints and returns the SNN checkpoint path."""
    if cfg.checkpoint is None:
        raise UserError("give checkpoint=PATH (the checkpoint file of a trained tiny_yolo model, "
                        "e.g. RUN_DIR/weights/best.pt)")
    if cfg.norm not in NORM_MODES:
        raise UserError(f"norm={cfg.norm!r}: expected one of {', '.join(NORM_MODES)}")
    if cfg.spiking_neuron not in cfg.spiking_neurons:
        choices = ", ".join(cfg.spiking_neurons)
        raise UserError(f"spiking_neuron={cfg.spiking_neuron!r}: expected one of {choices}")
    if cfg.decoding not in DECODINGS:
        raise UserError(f"decoding={cfg.decoding!r}: expected one of {', '.join(DECODINGS)}")
    if cfg.timesteps < 1 or cfg.calibration.images < 1:
        raise UserError(f"timesteps and calibration.images must be >= 1, got {cfg.timesteps} and "
                        f"{cfg.calibration.images}")
    torch.manual_seed(cfg.seed)
    path = Path(cfg.checkpoint)
    payload = read_checkpoint(path)
    ann_config = stored_model_config(payload, str(path))
    ann = build_model(ann_config, source=str(path))
    if not hasattr(ann, "conversion_layers"):
        raise UserError(f"{path}: holds a {type(ann).__name__}, not an ANN the converter maps (model=tiny_yolo)")
    load_weights(ann, payload, source=str(path))
    resolve_imgsz(cfg, ann)
    ann = ann.to(cfg.device).eval()
    neuron_node = OmegaConf.to_container(cfg.spiking_neurons[cfg.spiking_neuron], resolve=True)
    slope = ann.negative_slope
    if "alpha" in neuron_node and abs(float(neuron_node["alpha"]) - slope) > 1e-9:
        raise UserError(f"spiking_neurons.{cfg.spiking_neuron}.alpha={neuron_node['alpha']} differs from "
                        f"the ANN's leaky slope {slope}")
    try:
        snn = convert_detector(ann, calibration_batches(cfg, max(ann.strides)), cfg.norm,
                               conversion_neuron(neuron_node, f"spiking_neurons.{cfg.spiking_neuron}"),
                               cfg.percentile, cfg.timesteps, cfg.decoding,
                               cfg.time_chunk)
    except TypeError as err:
        raise UserError(f"{path}: {err}") from None
    default_name = f"{path.stem}_snn_{cfg.norm}_{cfg.spiking_neuron}.pt"
    output = Path(cfg.output) if cfg.output else path.with_name(default_name)
    config = spiking_model_config(ann_config, neuron_node, cfg.timesteps, cfg.decoding,
                                  cfg.time_chunk, cfg.norm, cfg.percentile)
    save_checkpoint({"model_config": config, "model": snn.state_dict(), "names": payload.get("names"),
                     "source_checkpoint": str(path), "ema": None,
                     "train_config": payload.get("train_config")}, output)   # the ANN's run: its data, imgsz
    log.info("saved %s (norm=%s, neuron=%s, T=%d, %s decoding)", output, cfg.norm, cfg.spiking_neuron,
             cfg.timesteps, cfg.decoding)
    print(output)
    return output


main = hydra_app("convert", convert, __doc__)


if __name__ == "__main__":
    main()
