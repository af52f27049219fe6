"""spikeyolo-summary: build a configured model and print its layer table and parameter counts.

    spikeyolo-summary model=spikeyolo_s neuron.time_steps=1 neuron.max_level=4 model.num_classes=80
    spikeyolo-summary model=tiny_yolo data.imgsz=416

The table (index, inputs, module, parameters, output shape at data.imgsz) is printed for models built from a layer
list (SpikeYOLO); every model gets its parameter counts, strides, T and D. ``model.num_classes`` null: 80 (COCO).
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from spikeyolo.cli.common import friendly_errors, hydra_app
from spikeyolo.config import resolve_imgsz, resolve_num_classes
from spikeyolo.models import build_model


def layer_table(model: torch.nn.Module, imgsz: int = 640) -> list[tuple[int, str, str, int, str]]:
    """(index, from, module, params, output shape at imgsz) per layer of a model built from a layer list."""
    shapes: dict[int, str] = {}
    handles = [layer.register_forward_hook(lambda _m, _i, out, i=i: shapes.__setitem__(
        i, "x".join(map(str, out.shape[1:])) if isinstance(out, torch.Tensor) else "-"))
        for i, layer in enumerate(model.layers)]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, model.in_chs, imgsz, imgsz))
    for handle in handles:
        handle.remove()
    rows = []
    for index, (layer, sources) in enumerate(zip(model.layers, model.sources)):
        name = type(layer[0] if isinstance(layer, torch.nn.Sequential) else layer).__name__
        repeats = len(layer) if isinstance(layer, torch.nn.Sequential) else 1
        source = ",".join(map(str, sources)) if isinstance(sources, (list, tuple)) else str(sources)
        rows.append((index, source if index else "input", f"{name} x{repeats}",
                     sum(p.numel() for p in layer.parameters()), shapes.get(index, "-")))
    return rows


@friendly_errors
def summary(cfg: DictConfig) -> None:
    """Print the layer table (where the model has a layer list) and the parameter counts."""
    model = build_model(cfg, num_classes=resolve_num_classes(cfg))
    imgsz = resolve_imgsz(cfg, model)
    if hasattr(model, "layers"):
        print(f"{'#':>3}  {'from':<10} {'module':<20} {'params':>12}  output [C x H x W] at {imgsz}")
        for index, source, name, params, shape in layer_table(model, imgsz):
            print(f"{index:>3}  {source:<10} {name:<20} {params:>12,}  {shape}")
    timing = f"T={model.time_steps} D={model.max_level}" if model.time_steps is not None else "ANN (no T, D)"
    print(f"{type(model).__name__}: total parameters {model.num_parameters():,} (trainable "
          f"{model.num_parameters(True):,}); {timing}, strides {model.strides}, {model.num_classes} classes")


main = hydra_app("summary", summary, __doc__)


if __name__ == "__main__":
    main()
