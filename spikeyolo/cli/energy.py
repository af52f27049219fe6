"""spikeyolo-energy: ops, spikes and energy of a model on N validation images (spike-driven counting).

Examples:
    spikeyolo-energy checkpoint=runs/demo/.../weights/best.pt num_images=12
    spikeyolo-energy model=spikeyolo_s data.imgsz=640 energy=int_spiking_yolo mode=exact
    spikeyolo-energy random_images=true imgsz=320
    spikeyolo-energy checkpoint=best.pt data.val_rect=true     (the validator's rect batches instead of imgsz x imgsz)

Writes RUN_DIR/energy.json (``total`` and ``layers``), energy.md and the PNG plots.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any, Iterator

import hydra
from omegaconf import DictConfig

from spikeyolo.cli.common import UserError, friendly_errors, prepare_run_dir, setup_logging
from spikeyolo.config import CONFIG_DIR

log = logging.getLogger("spikeyolo.energy")


def _load_model(cfg: DictConfig):
    import spikeyolo

    if cfg.checkpoint is None:
        return spikeyolo.build_model(cfg), "random init"
    if not Path(str(cfg.checkpoint)).is_file():
        raise UserError(f"checkpoint not found: {cfg.checkpoint}")
    return spikeyolo.load_checkpoint(str(cfg.checkpoint), map_location="cpu", use_ema=bool(cfg.use_ema)), \
        str(cfg.checkpoint)


def _images(cfg: DictConfig, model, num_images: int) -> tuple[Iterator[Any], dict[str, Any]]:
    """Batches of one image [1, 3, H, W] (event clips [T, 1, C, H, W]) in [0, 1] and where they came from."""
    import torch

    if cfg.random_images:
        size = int(cfg.imgsz if cfg.imgsz is not None else cfg.data.imgsz)
        gen = torch.Generator().manual_seed(int(cfg.seed))
        return (torch.rand(1, 3, size, size, generator=gen) for _ in range(num_images)), \
            {"random_images": True, "imgsz": size, "input_shapes": [[size, size]]}
    from omegaconf import open_dict

    from spikeyolo.data import dataloader_from_config, get_source, spec_from_config
    from spikeyolo.structures import model_input

    spec = spec_from_config(cfg.data)
    if get_source(spec.source).is_event_data and cfg.checkpoint is not None:
        with open_dict(cfg):   # event clips of the checkpoint's T, not of the (unused) neuron group's
            cfg.data.time_steps = int(model.time_steps)
    loader = dataloader_from_config(spec, cfg.data, "val", batch_size=1, workers=0, stride=max(model.strides),
                                    device="cpu")
    origin = {"random_images": False, "dataset": spec.name, "imgsz": int(cfg.data.imgsz),
              "rect": bool(cfg.data.get("val_rect", False)), "input_shapes": []}

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
    import torch

    from spikeyolo.deploy import to_spike_driven
    from spikeyolo.energy import EnergyPreset, build_report, measure, write_report

    if int(cfg.num_images) < 1:
        raise UserError(f"num_images must be >= 1, got {cfg.num_images}")
    if cfg.mode not in ("reference", "exact"):
        raise UserError(f"mode must be 'reference' or 'exact', got {cfg.mode!r}")
    run_dir = prepare_run_dir(cfg)
    setup_logging(None)
    torch.manual_seed(int(cfg.seed))
    model, source = _load_model(cfg)
    spike_model = to_spike_driven(model)
    batches, origin = _images(cfg, spike_model, int(cfg.num_images))
    counts = measure(spike_model, batches, channel_stats=bool(cfg.plots))
    if not counts or counts[0].images == 0:
        raise UserError("no images were run (empty validation split?)")
    preset = EnergyPreset(str(cfg.energy.name), float(cfg.energy.e_mac_pj), float(cfg.energy.e_ac_pj))
    info = {"model": source, "num_classes": int(model.num_classes), **origin}
    report = build_report(counts, preset, mode=str(cfg.mode), info=info)
    write_report(report, counts, run_dir, plots=bool(cfg.plots))
    total = report.total
    flag = "  (RANDOM images)" if origin["random_images"] else ""
    shapes = ", ".join(f"{h}x{w}" for h, w in origin["input_shapes"])
    print(f"{report.num_images} images at {shapes}, T={report.time_steps} D={report.max_level}: dense {total['dense_ops']:.4g} "
          f"MACs, {total['sops']:.4g} SOPs ({cfg.mode}), ANN {total['ann_energy_mj']:.4f} mJ, "
          f"SNN {total['snn_energy_mj']:.4f} mJ{flag} -> {run_dir / 'energy.json'}")
    print(f"counting modes: reference vs exact on in-bounds taps {100 * total['modes_rel_diff_in_bounds']:+.2f} %; "
          f"with the sheet's padding credit {100 * total['modes_rel_diff_sheet']:+.2f} %")
    return total


@hydra.main(config_path=str(CONFIG_DIR), config_name="energy", version_base=None)
def _hydra_main(cfg: DictConfig) -> None:
    energy(cfg)


def main() -> None:
    from spikeyolo.cli.common import run_hydra_app

    run_hydra_app(_hydra_main, "energy")


if __name__ == "__main__":
    main()
