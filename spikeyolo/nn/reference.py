"""Loading weights of the reference SpikeYOLO implementation (BICLab/SpikeYOLO, ultralytics format).

The reference state_dict keys are ``model.<i>[.<j>].<suffix>`` where i is the
yaml layer index (equal to ours) and j the repeat index. Our modules use
descriptive names; each module class lists ``reference_key_map``, ordered
(reference prefix, our prefix) pairs, and a key is translated by walking down
the module tree applying each level's map. Every translated key must exist in
our model with the same shape, and every one of our keys must be covered:
otherwise ``ReferenceKeyError`` lists what did not match.

Reference checkpoints are pickled ``DetectionModel`` objects; :mod:`spikeyolo.nn.reference_pickle`
reads them without running anything in them. :func:`reference_model_config` derives the spikeyolo
model description (scale, classes, input channels, neuron) from a reference state_dict's shapes, and
``spikeyolo.engine.checkpoint.reference_payload`` turns a reference checkpoint into the in-memory form of a
spikeyolo checkpoint, so evaluation and fine-tuning take either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from omegaconf import OmegaConf
from torch import nn

from spikeyolo.config import compose, model_config
from spikeyolo.errors import ReferenceCheckpointError, ReferenceKeyError
from spikeyolo.nn.reference_checkpoint import load_reference_checkpoint
from spikeyolo.nn.reference_pickle import is_reference_checkpoint

__all__ = ["ReferenceKeyError", "ReferenceCheckpointError", "reference_to_spikeyolo_key", "translate_reference_keys",
           "convert_reference_state_dict", "read_reference_checkpoint", "load_reference_weights",
           "reference_model_config", "is_reference_checkpoint", "load_reference_checkpoint", "GEN1_LIF"]


def _translate(module: nn.Module, suffix: str) -> str:
    """Translate a key suffix relative to ``module`` by its (and its children's) reference_key_map."""
    for old, new in getattr(type(module), "reference_key_map", ()):
        if suffix.startswith(old):
            child = module.get_submodule(new.rstrip("."))
            return new + _translate(child, suffix[len(old):])
    head, sep, rest = suffix.partition(".")
    if sep and head in dict(module.named_children()):
        return head + "." + _translate(getattr(module, head), rest)
    return suffix


def reference_to_spikeyolo_key(model: nn.Module, key: str) -> str:
    """``model.<i>[.<j>].<suffix>`` (reference) -> ``layers.<i>[.<j>].<suffix'>`` (spikeyolo)."""
    parts = key.split(".")
    if len(parts) < 3 or parts[0] != "model" or not parts[1].isdigit():
        raise ReferenceKeyError(f"not a reference key (expected 'model.<layer>.<...>'): {key}")
    index = int(parts[1])
    if index >= len(model.layers):
        raise ReferenceKeyError(f"reference key {key} names layer {index}, the model has {len(model.layers)}")
    layer = model.layers[index]
    prefix = f"layers.{index}."
    rest = parts[2:]
    if isinstance(layer, nn.Sequential) and rest[0].isdigit():
        prefix += rest[0] + "."
        layer = layer[int(rest[0])]
        rest = rest[1:]
    return prefix + _translate(layer, ".".join(rest))


def translate_reference_keys(reference: Mapping[str, torch.Tensor], model: nn.Module
                             ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Reference keys renamed to ``model``'s ((spikeyolo key -> tensor), reference keys with no module)."""
    translated: dict[str, torch.Tensor] = {}
    unmatched = []
    for key, value in reference.items():
        try:
            translated[reference_to_spikeyolo_key(model, key)] = value
        except (ReferenceKeyError, AttributeError):
            unmatched.append(key)
    return translated, unmatched


def convert_reference_state_dict(reference: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map a reference-format state_dict onto ``model``, 1:1 with every shape checked.

    Raises:
        ReferenceKeyError: listing unmatched reference keys, shape mismatches and uncovered model keys.
    """
    ours = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    unmatched, mismatched = [], []
    for key, value in reference.items():
        try:
            target = reference_to_spikeyolo_key(model, key)
        except (ReferenceKeyError, AttributeError):
            unmatched.append(key)
            continue
        if target not in ours:
            unmatched.append(f"{key} -> {target}")
        elif tuple(ours[target].shape) != tuple(value.shape):
            mismatched.append(f"{key}: reference {tuple(value.shape)} vs model {tuple(ours[target].shape)}")
        else:
            converted[target] = value.to(ours[target].dtype)
    missing = sorted(set(ours) - set(converted))
    if unmatched or mismatched or missing:
        lines = []
        if unmatched:
            lines.append(f"{len(unmatched)} reference keys have no counterpart: " + ", ".join(unmatched[:20]))
        if mismatched:
            lines.append(f"{len(mismatched)} shape mismatches: " + "; ".join(mismatched[:20]))
        if missing:
            lines.append(f"{len(missing)} model keys not covered: " + ", ".join(missing[:20]))
        raise ReferenceKeyError("reference state_dict does not match this model (wrong scale or num_classes?): "
                                + " | ".join(lines))
    return converted


def read_reference_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state_dict (reference keys, float32) of a reference checkpoint: its ``ema``, else its ``model``."""
    return load_reference_checkpoint(path).state_dict


def load_reference_weights(model: nn.Module, source: str | Path | Mapping[str, torch.Tensor]) -> nn.Module:
    """Load a reference checkpoint (path) or reference state_dict into ``model`` (strict, shape-checked)."""
    reference = read_reference_checkpoint(source) if isinstance(source, (str, Path)) else source
    model.load_state_dict(convert_reference_state_dict(reference, model), strict=True)
    return model


# The reference's scales (shared/reference section 4): [depth, width] per model config; width = layer-1 channels / 128.
_SCALES = {("0.33", 48): "spikeyolo_n", ("0.33", 64): "spikeyolo_s", ("0.5", 80): "spikeyolo_m",
           ("0.5", 96): "spikeyolo_l"}
_REPEATS = {2: 3, 4: 6, 6: 9, 8: 3}  # yaml repeats of the scaled backbone layers
# The reference's neurons (section 1): COCO mem_update I-LIF (T=1, D=4, decay 0.25); Gen1 spikingjelly LIF, tau 2
# (T=2 from the data, D=4), which is charge=lif with decay 0.5.
REFERENCE_NEURONS = {"coco": {"time_steps": 1, "max_level": 4, "decay": 0.25, "charge": "ilif"},
                     "gen1": {"time_steps": 2, "max_level": 4, "decay": 0.5, "charge": "lif"}}
GEN1_LIF = (2.0, True, None, True)  # (tau, decay_input, v_reset, detach_reset) of SpikeYOLO_for_Gen1


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
