"""Reference SpikeYOLO (BICLab/SpikeYOLO, ultralytics format) weights onto spikeyolo modules.

The reference state_dict keys are ``model.<i>[.<j>].<suffix>`` where i is the
yaml layer index (equal to ours) and j the repeat index. Our modules use
descriptive names; each module class lists ``reference_key_map``, ordered
(reference prefix, our prefix) pairs, and a key is translated by walking down
the module tree applying each level's map. Every translated key must exist in
our model with the same shape, and every one of our keys must be covered:
otherwise ``ReferenceKeyError`` lists what did not match.

This module reads no files: it takes a state_dict already read. Reference checkpoints are pickled
``DetectionModel`` objects; :mod:`spikeyolo.checkpoints.reference` reads them without running anything in them
(and its ``load_reference_weights`` takes a path). :func:`spikeyolo.config.reference.reference_model_config` derives
the spikeyolo model description (scale, classes, input channels, neuron) from a reference state_dict's shapes
(it composes the packaged configs, which nn does not), and ``spikeyolo.engine.checkpoint.reference_payload`` turns
a reference checkpoint into the in-memory form of a spikeyolo checkpoint, so evaluation and fine-tuning take
either.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from spikeyolo.errors import ReferenceKeyError

__all__ = ["ReferenceKeyError", "reference_to_spikeyolo_key", "translate_reference_keys",
           "convert_reference_state_dict", "GEN1_LIF"]


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
        def some(items: list[str], sep: str = ", ") -> str:   # a few, each cut: the keys come from the file
            return sep.join(item[:80] for item in items[:5]) + (f"{sep}..." if len(items) > 5 else "")

        lines = []
        if unmatched:
            lines.append(f"{len(unmatched)} reference keys have no counterpart: " + some(unmatched))
        if mismatched:
            lines.append(f"{len(mismatched)} shape mismatches: " + some(mismatched, "; "))
        if missing:
            lines.append(f"{len(missing)} model keys not covered: " + some(missing))
        raise ReferenceKeyError("reference state_dict does not match this model (wrong scale or num_classes?): "
                                + " | ".join(lines))
    return converted


GEN1_LIF = (2.0, True, None, True)  # (tau, decay_input, v_reset, detach_reset) of SpikeYOLO_for_Gen1
