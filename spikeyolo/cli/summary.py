"""spikeyolo-summary: build a configured model and print its layer table and parameter counts.

    spikeyolo-summary model=spikeyolo_s neuron.time_steps=1 neuron.max_level=4 model.num_classes=80
"""

from __future__ import annotations

import sys

import torch

from spikeyolo.cli.common import friendly_errors


def layer_table(model: torch.nn.Module, imgsz: int = 640) -> list[tuple[int, str, str, int, str]]:
    """(index, from, module, params, output shape at imgsz) per layer."""
    shapes: dict[int, str] = {}
    handles = [layer.register_forward_hook(lambda _m, _i, out, i=i: shapes.__setitem__(
        i, "x".join(map(str, out.shape[1:])) if isinstance(out, torch.Tensor) else "-"))
        for i, layer in enumerate(model.layers)]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, imgsz, imgsz))
    for handle in handles:
        handle.remove()
    rows = []
    for index, (layer, sources) in enumerate(zip(model.layers, model.sources)):
        name = type(layer[0] if isinstance(layer, torch.nn.Sequential) else layer).__name__
        repeats = len(layer) if isinstance(layer, torch.nn.Sequential) else 1
        rows.append((index, ",".join(map(str, sources)) if index else "input", f"{name} x{repeats}",
                     sum(p.numel() for p in layer.parameters()), shapes.get(index, "-")))
    return rows


@friendly_errors
def summary(overrides: list[str]) -> None:
    import spikeyolo

    imgsz = 640
    rest = []
    for item in overrides:
        if item.startswith("imgsz="):
            imgsz = int(item.split("=", 1)[1])
        else:
            rest.append(item)
    cfg = spikeyolo.compose(rest)
    model = spikeyolo.build_model(cfg, num_classes=cfg.model.num_classes or 80)
    print(f"{'#':>3}  {'from':<10} {'module':<20} {'params':>12}  output [C x H x W] at {imgsz}")
    for index, source, name, params, shape in layer_table(model, imgsz):
        print(f"{index:>3}  {source:<10} {name:<20} {params:>12,}  {shape}")
    print(f"total parameters {model.num_parameters():,} (trainable {model.num_parameters(True):,}); "
          f"T={model.time_steps} D={model.max_level}, strides {model.strides}, {model.num_classes} classes")


def main() -> None:
    summary(sys.argv[1:])


if __name__ == "__main__":
    main()
