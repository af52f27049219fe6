"""The spikeyolo model description of a reference (BICLab/SpikeYOLO) checkpoint, derived from its state_dict.

:func:`reference_model_config` reads the shapes of a reference state_dict (as :mod:`spikeyolo.checkpoints.reference`
reads it) and composes the packaged model and neuron configs of the network they belong to: it lives here, with
the composing, because nn builds from what it is given and composes no configs.
``spikeyolo.engine.checkpoint.reference_payload`` builds the model from it.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from omegaconf import OmegaConf

from spikeyolo.config import model_config
from spikeyolo.config.composing import compose
from spikeyolo.errors import ReferenceKeyError

__all__ = ["REFERENCE_NEURONS", "reference_model_config"]

# The reference's scales (shared/reference section 4): [depth, width] per model config; width = layer-1 channels / 128.
_SCALES = {("0.33", 48): "spikeyolo_n", ("0.33", 64): "spikeyolo_s", ("0.5", 80): "spikeyolo_m",
           ("0.5", 96): "spikeyolo_l"}
_REPEATS = {2: 3, 4: 6, 6: 9, 8: 3}  # yaml repeats of the scaled backbone layers
# The reference's neurons (section 1): COCO mem_update I-LIF (T=1, D=4, decay 0.25); Gen1 spikingjelly LIF, tau 2
# (T=2 from the data, D=4), which is charge=lif with decay 0.5.
REFERENCE_NEURONS = {"coco": {"time_steps": 1, "max_level": 4, "decay": 0.25, "charge": "ilif"},
                     "gen1": {"time_steps": 2, "max_level": 4, "decay": 0.5, "charge": "lif"}}


def _repeats(state: Mapping[str, torch.Tensor], layer: int) -> int:
    indices = {key.split(".")[2] for key in state if key.startswith(f"model.{layer}.")}
    return 1 + max(int(i) for i in indices) if indices and all(i.isdigit() for i in indices) else 1


def _shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise ReferenceKeyError(f"not a SpikeYOLO reference state_dict: no {key}")
    return tuple(state[key].shape)


def reference_model_config(state: Mapping[str, torch.Tensor], kind: str = "coco",
                           model: str | Mapping[str, Any] | None = None, time_steps: int | None = None,
                           max_level: int | None = None) -> dict[str, Any]:
    """The spikeyolo ``model_config`` of the network a reference state_dict belongs to.

    Derived from the shapes: width = layer-1 channels / 128, depth from the repeats of layers 2/4/6/8,
    layer 25's mlp ratio, input channels, ``num_classes`` from the class head; or, with ``model`` (a
    config name such as ``spikeyolo_s``, or a composed model node), that model's scale. The neuron is
    the reference's for ``kind`` (:data:`REFERENCE_NEURONS`) with ``time_steps``/``max_level`` as T and D.
    """
    stem_out, in_chs = _shape(state, "model.1.encode_conv.weight")[:2]
    num_classes = _shape(state, "model.26.cv3.0.2.conv.weight")[0]
    mixer = _shape(state, "model.25.conv1.body.2.1.weight")
    if min(stem_out, in_chs, num_classes, *mixer[:2]) < 1 or mixer[0] % mixer[1]:
        raise ReferenceKeyError(f"not a SpikeYOLO reference state_dict: layer 1 {stem_out}x{in_chs}, "
                                f"{num_classes} classes, layer 25 mixer {mixer}")
    repeats = {layer: _repeats(state, layer) for layer in _REPEATS}
    if model is None:
        depth = next((d for d in ("0.33", "0.5") if all(max(round(n * float(d)), 1) == repeats[layer]
                                                      for layer, n in _REPEATS.items())), None)
        if depth is None:
            raise ReferenceKeyError(f"cannot infer the depth of the reference weights: layers 2/4/6/8 repeat "
                                    f"{list(repeats.values())} (depth 0.33 gives [1, 2, 3, 1], 0.5 [2, 3, 4, 2])")
        model = _SCALES.get((depth, stem_out), "spikeyolo_s" if depth == "0.33" else "spikeyolo_l")
        overrides = [f"model.depth_multiple={depth}", f"model.width_multiple={stem_out / 128}"]
    else:
        overrides = []
    cfg = compose([f"model={model if isinstance(model, str) else 'spikeyolo_s'}", "neuron=ilif", "experiment=none",
                   *overrides])
    if model is not None and not isinstance(model, str):  # a composed model node, e.g. spikeyolo-eval model=...
        cfg.model = OmegaConf.create(OmegaConf.to_container(OmegaConf.create(dict(model)), resolve=True))
    config = model_config(cfg, num_classes)
    config["model"]["in_chs"] = in_chs
    config["model"].pop("weights", None)
    ratio = mixer[0] // mixer[1]
    config["model"]["block_overrides"] = {25: {"mlp_ratio": ratio}} if ratio != 1 else {}
    neuron = {**config["neuron"], **REFERENCE_NEURONS[kind]}
    for name, value in (("time_steps", time_steps), ("max_level", max_level)):
        if value is not None:
            neuron[name] = int(value)
    config["neuron"] = neuron
    return config
