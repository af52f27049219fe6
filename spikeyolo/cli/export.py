"""spikeyolo-export: a checkpoint as ONNX (integer or spike-driven path, checked with onnxruntime) or NIR.

Examples:
    spikeyolo-export checkpoint=runs/demo_spikeyolo_n/.../weights/best.pt          # RUN_DIR/model_integer.onnx
    spikeyolo-export checkpoint=best.pt path=spike_driven data.imgsz=640 opset=17
    spikeyolo-export checkpoint=best.pt format=nir output=model.nir nir_groups=exact

``path`` names a deploy path (spikeyolo.deploy.DEPLOY_PATHS): integer, spike_driven, or fixed_point (the
spike-driven path on the fixed-point grids, whatever ``fixed_point`` says). The input size is the one the checkpoint
was trained at unless data.imgsz=N is given. Writes the model file(s) and RUN_DIR/export.json (what was exported,
the onnxruntime check). NIR (spikeyolo.deploy.nir): the spike-driven network as stage graphs that snnTorch, norse,
sinabs and nirtorch import (``model.stage<i>.nir``) plus the rest of the network (``model.rest.pt``: upsampling,
concatenation, max-pooling, decoding), read back with ``NirBundle.load`` (docs/user-guide.md, "NIR"). The stage
files are typed (``nir_typed=true``, configs/export.yaml): ``nir.read(path)`` passes its own type check; they take
[3, imgsz, imgsz] images only (letterboxed squares), which the printed report states.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from spikeyolo.cli.common import UserError, friendly_errors, hydra_app, prepare_run_dir, write_json
from spikeyolo.config import resolve_imgsz
from spikeyolo.deploy import DEPLOY_PATHS
from spikeyolo.deploy.export import ExportError, export_onnx
from spikeyolo.deploy.nir import export_nir
from spikeyolo.deploy.spike_driven import require_spike_levels
from spikeyolo.engine.checkpoint import model_from_payload, read_model_checkpoint, trained_data_config

FORMATS = {"onnx": "integer", "nir": "spike_driven"}   # format -> its default deploy path


@friendly_errors
def export(cfg: DictConfig) -> dict:
    """Export the checkpoint; returns the report written to RUN_DIR/export.json."""
    if cfg.checkpoint is None:
        raise UserError("give checkpoint=PATH (a spikeyolo checkpoint file, e.g. RUN_DIR/weights/best.pt)")
    if cfg.format not in FORMATS:
        raise UserError(f"format must be one of {', '.join(FORMATS)}, got {cfg.format!r}")
    path = cfg.path or FORMATS[cfg.format]
    if path not in DEPLOY_PATHS:
        raise UserError(f"path must be one of {', '.join(DEPLOY_PATHS)}, got {path!r}")
    fixed_point = cfg.fixed_point or path == "fixed_point"
    path = "spike_driven" if path == "fixed_point" else path
    if cfg.format == "nir" and path != "spike_driven":
        raise UserError("format=nir writes the spike-driven path (path=spike_driven); NIR has no integer neurons")
    if not Path(cfg.checkpoint).is_file():
        raise UserError(f"checkpoint not found: {cfg.checkpoint}")
    payload = read_model_checkpoint(cfg.checkpoint)  # a spikeyolo or a reference checkpoint
    model = model_from_payload(payload, cfg.use_ema, str(cfg.checkpoint)).float()
    imgsz = resolve_imgsz(cfg, model, trained_data_config(payload))
    if fixed_point or path == "spike_driven":
        require_spike_levels(model)   # an ANN: refused before the run folder exists
    run_dir = prepare_run_dir(cfg)
    output = Path(cfg.output) if cfg.output else run_dir / f"model_{path}.{cfg.format}"
    try:
        if cfg.format == "onnx":
            report = export_onnx(model, output, imgsz, path=path, opset=cfg.opset, check=cfg.check,
                                 check_batch=cfg.check_batch, fixed_point=fixed_point,
                                 mantissa_bits=cfg.mantissa_bits).to_dict()
            checked = report["max_abs_diff"] is not None
            form = "fixed-point" if fixed_point else "float"
            print(f"ONNX ({path} path, {form} weights, opset {report['opset']}) -> {output}: input images "
                  f"{report['input_shape']}, output detections {report['output_shape']}")
            if checked:
                print(f"onnxruntime {report['onnxruntime']} vs PyTorch on {report['check_batch']} images: "
                      f"max abs diff {report['max_abs_diff']:.3g} (boxes in units of imgsz; "
                      f"{report['max_abs_diff_pixels']:.3g} in pixels; atol {cfg.atol:g})")
        else:
            nir_report = export_nir(model, output, imgsz, groups=cfg.nir_groups, typed=cfg.nir_typed,
                                    fixed_point=fixed_point, mantissa_bits=cfg.mantissa_bits)
            report = nir_report.to_dict()
            print(nir_report.message())
            checked = False
    except ExportError as err:
        raise UserError(str(err)) from None
    report.update({"checkpoint": str(cfg.checkpoint), "format": str(cfg.format), "imgsz": imgsz})
    write_json(run_dir / "export.json", report)
    if checked and report["max_abs_diff"] > cfg.atol:
        print(f"error: the ONNX file does not reproduce PyTorch: max abs diff {report['max_abs_diff']:.3g} > atol "
              f"{cfg.atol:g} (see {run_dir / 'export.json'})", file=sys.stderr)
        sys.exit(1)
    return report


main = hydra_app("export", export, __doc__)


if __name__ == "__main__":
    main()
