"""spikeyolo-export: a checkpoint as ONNX (integer or spike-driven path, checked with onnxruntime) or NIR.

Examples:
    spikeyolo-export checkpoint=runs/demo/.../weights/best.pt                  # RUN_DIR/model_integer.onnx
    spikeyolo-export checkpoint=best.pt path=spike_driven imgsz=640 opset=17
    spikeyolo-export checkpoint=best.pt format=nir output=model.nir

Writes the model file and RUN_DIR/export.json (what was exported, the onnxruntime check, or for NIR
the layers in the graph and those NIR cannot express).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from spikeyolo.cli.common import UserError, friendly_errors, prepare_run_dir, run_hydra_app, write_json
from spikeyolo.config import CONFIG_DIR

FORMATS = ("onnx", "nir")


def load_for_export(checkpoint: str, use_ema: bool = True):
    """(model in float32 eval mode, the training run's imgsz or None) of a spikeyolo checkpoint."""
    from spikeyolo.engine.checkpoint import model_from_payload, read_model_checkpoint, trained_data_config

    if not Path(checkpoint).is_file():
        raise UserError(f"checkpoint not found: {checkpoint}")
    payload = read_model_checkpoint(checkpoint)  # a spikeyolo or a reference checkpoint
    return model_from_payload(payload, use_ema, str(checkpoint)).float(), trained_data_config(payload).get("imgsz")


@friendly_errors
def export(cfg: DictConfig) -> dict:
    """Export the checkpoint; returns the report written to RUN_DIR/export.json."""
    from spikeyolo.deploy.export import ExportError, export_onnx

    if cfg.checkpoint is None:
        raise UserError("give checkpoint=PATH (a spikeyolo checkpoint, e.g. RUN_DIR/weights/best.pt)")
    if cfg.format not in FORMATS:
        raise UserError(f"format must be one of {', '.join(FORMATS)}, got {cfg.format!r}")
    path = cfg.path or ("integer" if cfg.format == "onnx" else "spike_driven")
    if cfg.format == "nir" and path != "spike_driven":
        raise UserError("format=nir writes the spike-driven path (path=spike_driven); NIR has no integer neurons")
    run_dir = prepare_run_dir(cfg)
    model, trained_imgsz = load_for_export(str(cfg.checkpoint), bool(cfg.use_ema))
    imgsz = int(cfg.imgsz or trained_imgsz or 640)
    stride = max(model.strides)
    if imgsz % stride:
        raise UserError(f"imgsz={imgsz} is not a multiple of the model's largest stride {stride}")
    suffix = "onnx" if cfg.format == "onnx" else "nir"
    output = Path(cfg.output) if cfg.output else run_dir / f"model_{path}.{suffix}"
    try:
        if cfg.format == "onnx":
            report = export_onnx(model, output, imgsz, path=path, opset=int(cfg.opset), check=bool(cfg.check),
                                 check_batch=int(cfg.check_batch), fixed_point=bool(cfg.fixed_point),
                                 mantissa_bits=cfg.mantissa_bits).to_dict()
            checked = report["max_abs_diff"] is not None
            form = "fixed-point" if cfg.fixed_point else "float"
            print(f"ONNX ({path} path, {form} weights, opset {report['opset']}) -> {output}: input images "
                  f"{report['input_shape']}, output detections {report['output_shape']}")
            if checked:
                print(f"onnxruntime {report['onnxruntime']} vs PyTorch on {report['check_batch']} images: "
                      f"max abs diff {report['max_abs_diff']:.3g} (boxes in units of imgsz; "
                      f"{report['max_abs_diff_pixels']:.3g} in pixels; atol {cfg.atol:g})")
        else:
            from spikeyolo.deploy.nir_export import export_nir

            nir_report = export_nir(model, output, imgsz)
            report = nir_report.to_dict()
            print(nir_report.message())
            checked = False
    except ExportError as err:
        raise UserError(str(err)) from None
    report.update({"checkpoint": str(cfg.checkpoint), "format": str(cfg.format), "imgsz": imgsz})
    write_json(run_dir / "export.json", report)
    if checked and report["max_abs_diff"] > float(cfg.atol):
        print(f"error: the ONNX file does not reproduce PyTorch: max abs diff {report['max_abs_diff']:.3g} > atol "
              f"{cfg.atol:g} (see {run_dir / 'export.json'})", file=sys.stderr)
        sys.exit(1)
    return report


@hydra.main(config_path=str(CONFIG_DIR), config_name="export", version_base=None)
def _hydra_main(cfg: DictConfig) -> None:
    export(cfg)


def main() -> None:
    run_hydra_app(_hydra_main, "export")


if __name__ == "__main__":
    main()
