"""Loading weights of the reference SpikeYOLO implementation (BICLab/SpikeYOLO, ultralytics format).

The reference state_dict keys are ``model.<i>[.<j>].<suffix>`` where i is the
yaml layer index (equal to ours) and j the repeat index. Our modules use
descriptive names; each module class lists ``reference_key_map``, ordered
(reference prefix, our prefix) pairs, and a key is translated by walking down
the module tree applying each level's map. Every translated key must exist in
our model with the same shape, and every one of our keys must be covered:
otherwise ``ReferenceKeyError`` lists what did not match.

Reference checkpoints are pickled ``DetectionModel`` objects. ``read_reference_checkpoint``
unpickles them with a restricted unpickler that maps the reference's classes to
inert stubs (no AGPL code, no arbitrary globals) and returns the state_dict.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

__all__ = ["ReferenceKeyError", "reference_to_spikeyolo_key", "convert_reference_state_dict",
           "read_reference_checkpoint", "load_reference_weights"]


class ReferenceKeyError(KeyError):
    """Reference keys that do not map onto the model (or model keys left uncovered)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


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


class _Stub(nn.Module):
    """Inert stand-in for a reference class while unpickling (keeps only tensors and plain attributes)."""

    def __setstate__(self, state):  # nn.Module pickles its __dict__
        self.__dict__.update(state)


_ALLOWED_PREFIXES = ("torch", "collections", "numpy", "builtins", "_codecs", "copyreg")


class _ReferenceUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module.startswith(("ultralytics", "spikingjelly", "models.", "__main__")):
            return type(name, (_Stub,), {"__module__": "spikeyolo.reference_stub"})
        if module == "builtins" and name in {"eval", "exec", "getattr", "setattr", "__import__", "open", "compile"}:
            raise pickle.UnpicklingError(f"refusing global {module}.{name} in a reference checkpoint")
        if module.split(".")[0] in _ALLOWED_PREFIXES:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing global {module}.{name} in a reference checkpoint")


class _RestrictedPickle:
    Unpickler = _ReferenceUnpickler
    load = staticmethod(pickle.load)
    loads = staticmethod(pickle.loads)


def read_reference_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """state_dict of a reference SpikeYOLO checkpoint (a pickled ultralytics ``{'model': DetectionModel}``).

    The EMA weights are used when present (ultralytics saves them as ``ema``), else ``model``.
    """
    path = Path(path)
    obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RestrictedPickle)
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a reference checkpoint (got {type(obj).__name__})")
    module = obj.get("ema") or obj.get("model")
    if not isinstance(module, nn.Module):
        raise ValueError(f"{path}: no 'model' or 'ema' module in the checkpoint")
    return {k: v.float() if v.is_floating_point() else v for k, v in module.state_dict().items()}


def load_reference_weights(model: nn.Module, source: str | Path | Mapping[str, torch.Tensor]) -> nn.Module:
    """Load a reference checkpoint (path) or reference state_dict into ``model`` (strict, shape-checked)."""
    reference = read_reference_checkpoint(source) if isinstance(source, (str, Path)) else source
    model.load_state_dict(convert_reference_state_dict(reference, model), strict=True)
    return model
