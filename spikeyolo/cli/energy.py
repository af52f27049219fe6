"""spikeyolo-energy: ops, spikes and energy of a model on N validation images (spike-driven counting).

Examples:
    spikeyolo-energy checkpoint=runs/demo_spikeyolo_n/.../weights/best.pt num_images=12
    spikeyolo-energy model=spikeyolo_s data.imgsz=640 energy=int_spiking_yolo mode=exact
    spikeyolo-energy random_images=true data.imgsz=320
    spikeyolo-energy checkpoint=best.pt data.val_rect=true     (the validator's rect batches instead of imgsz x imgsz)

Writes RUN_DIR/energy.json (``total`` and ``layers``), energy.md and the PNG plots.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any, Iterator

import torch
from omegaconf import DictConfig

from spikeyolo.cli.common import UserError, friendly_errors, hydra_app, prepare_run_dir, setup_logging
from spikeyolo.config import resolve_imgsz, resolve_time_steps
from spikeyolo.data import dataloader_from_config, get_source, spec_from_config
from spikeyolo.deploy import to_spike_driven
from spikeyolo.energy import EnergyPreset, build_report, measure, write_report
from spikeyolo.engine.checkpoint import load_checkpoint
from spikeyolo.models import build_model
from spikeyolo.structures import model_input

log = logging.getLogger("spikeyolo.energy")

MODES = ("reference", "exact")


def _load_model(cfg: DictConfig) -> tuple[torch.nn.Module, str]:
    """(the checkpoint's model, or the model and neuron groups' at random init; where it came from)."""
    if cfg.checkpoint is None:
        return build_model(cfg), "random init"
    if not Path(cfg.checkpoint).is_file():
        raise UserError(f"checkpoint not found: {cfg.checkpoint}")
    return load_checkpoint(cfg.checkpoint, map_location="cpu", use_ema=cfg.use_ema), str(cfg.checkpoint)


def _images(cfg: DictConfig, model, num_images: int) -> tuple[Iterator[Any], dict[str, Any]]:
    """Batches of one image [1, 3, H, W] (event clips [T, 1, C, H, W]) in [0, 1] and where they came from."""
    size = resolve_imgsz(cfg, model)
    if cfg.random_images:
        gen = torch.Generator().manual_seed(cfg.seed)
        return (torch.rand(1, 3, size, size, generator=gen) for _ in range(num_images)), \
            {"random_images": True, "imgsz": size, "input_shapes": [[size, size]]}
    spec = spec_from_config(cfg.data)
    overrides = {}
    if get_source(spec.source).is_event_data:   # event clips of the model's T (a checkpoint's, not the neuron group's)
        overrides["time_steps"] = resolve_time_steps(cfg, model)
    loader = dataloader_from_config(spec, cfg.data, "val", batch_size=1, workers=0, stride=max(model.strides),
                                    device="cpu", **overrides)
    origin = {"random_images": False, "dataset": spec.name, "imgsz": size, "rect": bool(cfg.data.val_rect),
              "input_shapes": []}

    def batches() -> Iterator[Any]:
        for batch in itertools.islice(iter(loader), num_images):
            inputs = model_input(batch["img"])
            shape = [int(side) for side in inputs.shape[-2:]]    # [H, W] the model really sees
            if shape not in origin["input_shapes"]:
                origin["input_shapes"].append(shape)
            yield inputs

    return batches(), origin


@friendly_errors
def energy(cfg: DictConfig) -> dict[str, float]:
    """Count ops and spikes, write RUN_DIR/energy.{json,md} and plots; returns the totals."""
    if cfg.num_images < 1:
        raise UserError(f"num_images must be >= 1, got {cfg.num_images}")
    if cfg.mode not in MODES:
        raise UserError(f"mode must be one of {', '.join(MODES)}, got {cfg.mode!r}")
    setup_logging()
    torch.manual_seed(cfg.seed)
    model, source = _load_model(cfg)
    spike_model = to_spike_driven(model)
    batches, origin = _images(cfg, spike_model, cfg.num_images)
    run_dir = prepare_run_dir(cfg)
    counts = measure(spike_model, batches, channel_stats=cfg.plots)
    if not counts or counts[0].images == 0:
        raise UserError("no images were run (empty validation split?)")
    preset = EnergyPreset(cfg.energy.name, cfg.energy.e_mac_pj, cfg.energy.e_ac_pj)
    info = {"model": source, "num_classes": int(model.num_classes), **origin}
    report = build_report(counts, preset, mode=cfg.mode, info=info)
    write_report(report, counts, run_dir, plots=cfg.plots)
    total = report.total
    flag = "  (RANDOM images)" if origin["random_images"] else ""
    shapes = ", ".join(f"{h}x{w}" for h, w in origin["input_shapes"])
    print(f"{report.num_images} images at {shapes}, T={report.time_steps} D={report.max_level}: dense {total['dense_ops']:.4g} "
          f"MACs, {total['sops']:.4g} SOPs ({cfg.mode}), ANN {total['ann_energy_mj']:.4f} mJ, "
          f"SNN {total['snn_energy_mj']:.4f} mJ{flag} -> {run_dir / 'energy.json'}")
    print(f"counting modes: reference vs exact on in-bounds taps {100 * total['modes_rel_diff_in_bounds']:+.2f} %; "
          f"with the sheet's padding credit {100 * total['modes_rel_diff_sheet']:+.2f} %")
    return total


main = hydra_app("energy", energy, __doc__)


if __name__ == "__main__":
    main()
