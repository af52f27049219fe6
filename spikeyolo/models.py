"""Building a detector from its description: a registry of names, checked values, a size bound.

A model description (``model_config``, what a checkpoint stores and :func:`spikeyolo.config.model_config` makes
from a composed config) is plain data::

    {"model": {"family": "spikeyolo", "num_classes": 80, "depth_multiple": 0.33, ..., "layers": [...]},
     "neuron": {"kind": "ilif", "time_steps": 1, "max_level": 4, "decay": 0.25, "charge": "ilif", ...}}

:func:`build_model` builds it in three steps, the first two before any real tensor exists:

1. **Names.** The family (:data:`FAMILIES`), the neuron (:data:`NEURONS`), Spiking-YOLO's hidden neuron
   (:data:`CONVERSION_NEURONS`) and the layer kinds of a layer list (``spikeyolo.nn.detector.LAYER_KINDS``) are
   looked up in tables this package owns; the Python paths older releases stored are translated
   (:mod:`spikeyolo.config.names`) and any other path is refused. Nothing from a file reaches Hydra's
   ``instantiate``, ``get_class`` or an import.
2. **Values.** Every key of the family's and the neuron's node is checked against :data:`LIMITS` (types and
   ranges, in this one place); an unknown key, a wrong type or a value out of range is one line naming the key.
3. **Size** (a description read from a file: ``source`` names it). The network is built once on PyTorch's ``meta``
   device (shapes only, no memory) and refused when it has more than :data:`MAX_PARAMETERS` parameters, so a 2 KB
   file cannot make the process allocate a 15 GB model. Then it is built for real.

Errors are :class:`~spikeyolo.errors.CheckpointError` (a file's description, ``source`` names it) or
:class:`~spikeyolo.errors.UserError` (a composed config), always one bounded line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Mapping

import torch
from omegaconf import DictConfig
from torch import nn

from spikeyolo.config import model_config
from spikeyolo.config.names import (CONVERSION_NEURONS as CONVERSION_NEURON_NAMES, FAMILIES as FAMILY_NAMES,
                                    NEURONS as NEURON_NAMES, shown, translate_model_config)
from spikeyolo.conversion.converter import DECODINGS
from spikeyolo.conversion.neurons import IBTNeuron, IFNeuron, SignedNeuron
from spikeyolo.conversion.spiking_yolo import SpikingYOLO, build_spiking_yolo
from spikeyolo.errors import CheckpointError, InputError, UserError
from spikeyolo.nn.detector import LAYER_KINDS, ROLE_CHOICES, SpikeYOLO
from spikeyolo.nn.neurons import ILIF, ReLUNeuron
from spikeyolo.nn.tiny_yolo import TinyYOLO
from spikeyolo.nn.yolov8 import SCALES as YOLOV8_SCALES, YOLOv8

__all__ = ["build_model", "check_model_config", "FAMILIES", "NEURONS", "CONVERSION_NEURONS", "LIMITS",
           "MAX_PARAMETERS", "family_class", "neuron_factory", "conversion_neuron"]

# The most parameters a described model may have (the largest real ones, SpikeYOLO-l and YOLOv8-x, have ~70 M).
MAX_PARAMETERS = 300_000_000


@dataclass(frozen=True)
class Limit:
    """A value's type and range: ``kind`` int | float | bool | str; ``low``/``high`` inclusive; ``choices``."""

    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    optional: bool = False


# Every number a description may hold, with its sane range, in one place.
LIMITS: dict[str, Limit] = {
    "num_classes": Limit("int", 1, 10_000),
    "in_chs": Limit("int", 1, 256),
    "depth_multiple": Limit("float", 1e-3, 8),
    "width_multiple": Limit("float", 1e-3, 8),
    "max_channels": Limit("int", 1, 8192),
    "reg_max": Limit("int", 1, 64),
    "reparam": Limit("bool"),
    "early_block": Limit("str", choices=tuple(ROLE_CHOICES["early_block"])),
    "late_block": Limit("str", choices=tuple(ROLE_CHOICES["late_block"])),
    "head": Limit("str", choices=tuple(ROLE_CHOICES["head"])),
    "negative_slope": Limit("float", 0, 1),
    "scale": Limit("str", choices=YOLOV8_SCALES),
    # neurons: T, D, decay; Spiking-YOLO's simulated T (the paper evaluates up to 5000 steps)
    "time_steps": Limit("int", 1, 4096),
    "max_level": Limit("int", 0, 255),
    "decay": Limit("float", 0, 1),
    "charge": Limit("str", choices=("ilif", "lif")),
    "backend": Limit("str", choices=("fused", "spikingjelly", "loop")),
    "spiking_time_steps": Limit("int", 1, 100_000),
    "time_chunk": Limit("int", 1, 100_000),
    "decoding": Limit("str", choices=tuple(DECODINGS)),
    "norm": Limit("str", choices=("channel", "layer")),
    "percentile": Limit("float", 0, 100, optional=True),
    "v_threshold": Limit("float", 1e-9, 1e9),
    "alpha": Limit("float", 0, 1),
    # layer lists: rows, repeats, sources, and every number in a layer's arguments
    "layers": Limit("int", 1, 128),
    "repeats": Limit("int", 1, 64),
    "source": Limit("int", -128, 127),
    "layer_arg": Limit("float", 0, 8192),
    "anchor": Limit("float", 0, 65536),
}

# family -> the class it builds (spiking_yolo: by build_spiking_yolo, from its ANN's description)
FAMILIES: dict[str, type] = {"spikeyolo": SpikeYOLO, "tiny_yolo": TinyYOLO, "yolov8": YOLOv8,
                             "spiking_yolo": SpikingYOLO}
NEURONS: dict[str, type] = {"ilif": ILIF, "relu": ReLUNeuron}
CONVERSION_NEURONS: dict[str, type] = {"ibt": IBTNeuron, "signed": SignedNeuron, "if": IFNeuron}
assert set(FAMILIES) == set(FAMILY_NAMES) and set(NEURONS) == set(NEURON_NAMES) \
    and set(CONVERSION_NEURONS) == set(CONVERSION_NEURON_NAMES)

# The keys of each node (others are refused); ``num_classes`` etc. are typed by LIMITS under the same name.
_FAMILY_KEYS: dict[str, tuple[str, ...]] = {
    "spikeyolo": ("num_classes", "depth_multiple", "width_multiple", "max_channels", "reg_max", "in_chs",
                  "block_overrides", "early_block", "late_block", "reparam", "head", "anchors", "layers"),
    "tiny_yolo": ("num_classes", "anchors", "channels", "width_multiple", "negative_slope", "in_chs"),
    "yolov8": ("num_classes", "scale", "in_chs"),
    "spiking_yolo": ("ann", "spiking_neuron", "time_steps", "decoding", "time_chunk", "norm", "percentile",
                     "num_classes"),
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "spikeyolo": ("num_classes", "depth_multiple", "width_multiple", "max_channels", "layers"),
    "tiny_yolo": ("num_classes", "anchors"), "yolov8": ("num_classes",), "spiking_yolo": ("ann",),
}
_NEURON_KEYS = {"ilif": ("time_steps", "max_level", "decay", "charge", "backend"),
                "relu": ("time_steps", "max_level", "decay", "charge")}
_CONVERSION_NEURON_KEYS = {"ibt": ("v_threshold", "alpha"), "signed": ("v_threshold",), "if": ("v_threshold",)}


class _Refused(Exception):
    """A description that is refused: the message names the key (becomes CheckpointError / UserError)."""


def _value(node: Mapping[str, Any], key: str, where: str, limit: Limit | None = None) -> Any:
    limit = limit or LIMITS[key]
    value = node[key]
    if value is None and limit.optional:
        return None
    ok = {"int": type(value) is int, "bool": type(value) is bool, "str": type(value) is str,
          "float": type(value) in (int, float) and math.isfinite(value)}[limit.kind]
    if not ok:
        wanted = {"int": "an integer", "bool": "true or false", "str": "a string", "float": "a number"}[limit.kind]
        raise _Refused(f"{where}.{key} must be {wanted}, got {shown(value)}")
    if limit.choices and value not in limit.choices:
        raise _Refused(f"{where}.{key}={shown(value)} is not one of {', '.join(limit.choices)}")
    if (limit.low is not None and value < limit.low) or (limit.high is not None and value > limit.high):
        raise _Refused(f"{where}.{key}={shown(value)} is out of range [{limit.low:g}, {limit.high:g}]")
    return value


def _dict(value: Any, where: str, max_items: int = 64) -> dict:
    if not isinstance(value, dict):
        raise _Refused(f"{where} must be a mapping, got {shown(value)}")
    if len(value) > max_items:
        raise _Refused(f"{where} has {len(value)} entries (at most {max_items})")
    return value


def _list(value: Any, where: str, max_items: int) -> list:
    if not isinstance(value, (list, tuple)):
        raise _Refused(f"{where} must be a list, got {shown(value)}")
    if len(value) > max_items:
        raise _Refused(f"{where} has {len(value)} entries (at most {max_items})")
    return list(value)


def _numbers(values: Any, where: str, max_items: int, limit: Limit) -> list:
    return [_value({"v": v}, "v", where, limit) for v in _list(values, where, max_items)]


def _layer_args(args: Any, where: str) -> dict:
    """A layer's keyword arguments: names (checked against the layer's build later), plain numbers and flags."""
    args = _dict(args if args is not None else {}, where, 16)
    checked = {}
    for key, value in args.items():
        if type(key) is not str or not key.isidentifier() or key.startswith("_"):
            raise _Refused(f"{where}: argument name {shown(key)} is not allowed")
        if type(value) is not bool:
            _value({key: value}, key, where, LIMITS["layer_arg"])
        checked[key] = value
    return checked


def _layers(rows: Any, where: str) -> list:
    rows = _list(rows, where, int(LIMITS["layers"].high))
    if not rows:
        raise _Refused(f"{where} is empty")
    checked = []
    for index, row in enumerate(rows):
        at = f"{where}[{index}]"
        row = _list(row, at, 4)
        if len(row) != 4:
            raise _Refused(f"{at} must be [from, repeats, kind, args], got {len(row)} entries")
        source, repeats, kind, args = row
        sources = _numbers(source if isinstance(source, (list, tuple)) else [source], f"{at}.from", 8,
                           LIMITS["source"])
        if any(type(s) is not int or (s >= index if s >= 0 else index + s < -1) for s in sources):  # -1 of 0: input
            got = shown(source) if type(source) is int else sources
            raise _Refused(f"{at}.from must name earlier layers, got {got}")
        _value({"repeats": repeats}, "repeats", at)
        if type(kind) is not str or (kind not in LAYER_KINDS and kind not in ROLE_CHOICES):
            raise _Refused(f"{at}: unknown layer kind {shown(kind)} (known: {', '.join(LAYER_KINDS)}; roles: "
                           f"{', '.join(ROLE_CHOICES)})")
        checked.append([source, repeats, kind, _layer_args(args, f"{at}.args")])
    return checked


def _check_family(model: Any, where: str) -> dict:
    model = _dict(model, where)
    family = model.get("family")
    if family not in FAMILIES:
        raise _Refused(f"{where}.family: unknown model family {shown(family)} (known: {', '.join(FAMILIES)})")
    allowed = _FAMILY_KEYS[family]
    unknown = next((k for k in model if k != "family" and k not in allowed), None)
    if unknown is not None:
        raise _Refused(f"{where}: unknown key {shown(unknown)} for family {family}")
    missing = next((k for k in _REQUIRED[family] if k not in model), None)
    if missing is not None:
        raise _Refused(f"{where}.{missing} is missing")
    out: dict[str, Any] = {"family": family}
    for key, value in model.items():
        if key == "family":
            continue
        if key == "layers":
            out[key] = _layers(value, f"{where}.layers")
        elif key == "block_overrides":
            overrides = _dict(value if value is not None else {}, f"{where}.block_overrides", 128)
            out[key] = {}
            for layer, args in overrides.items():
                index = int(layer) if type(layer) is int or (type(layer) is str and layer.isdigit()
                                                              and len(layer) < 4) else None
                if index is None or index >= int(LIMITS["layers"].high):
                    raise _Refused(f"{where}.block_overrides: layer {shown(layer)} is not a layer index")
                out[key][index] = _layer_args(args, f"{where}.block_overrides.{index}")
        elif key == "anchors":
            levels = _list(value, f"{where}.anchors", 8) if value is not None else None
            out[key] = None if levels is None else [
                _numbers(level, f"{where}.anchors[{i}]", 64, LIMITS["anchor"]) for i, level in enumerate(levels)]
        elif key == "channels":
            out[key] = _numbers(value, f"{where}.channels", 8, Limit("int", 1, 8192))
        elif key == "ann":
            ann = _check_family(value, f"{where}.ann")
            if ann["family"] != "tiny_yolo":
                raise _Refused(f"{where}.ann.family must be tiny_yolo (the ANN Spiking-YOLO converts), got "
                               f"{ann['family']}")
            out[key] = ann
        elif key == "spiking_neuron":
            out[key] = _check_kind(value, f"{where}.spiking_neuron", CONVERSION_NEURONS, _CONVERSION_NEURON_KEYS)
        elif family == "spiking_yolo" and key == "time_steps":
            out[key] = _value(model, key, where, LIMITS["spiking_time_steps"])
        elif family == "spiking_yolo" and key == "num_classes" and value is None:
            out[key] = None
        else:
            out[key] = _value(model, key, where)
    return out


def _check_kind(node: Any, where: str, table: Mapping[str, type], keys: Mapping[str, tuple[str, ...]]) -> dict:
    node = _dict(node, where)
    kind = node.get("kind")
    if kind not in table:
        raise _Refused(f"{where}.kind: unknown {shown(kind)} (known: {', '.join(table)})")
    unknown = next((k for k in node if k != "kind" and k not in keys[kind]), None)
    if unknown is not None:
        raise _Refused(f"{where}: unknown key {shown(unknown)} for {kind}")
    return {"kind": kind, **{key: _value(node, key, where) for key in node if key != "kind"}}


def _checked(config: Any) -> dict[str, Any]:
    try:
        config = translate_model_config(config)
    except InputError as err:
        raise _Refused(str(err)) from None
    config = _dict(config, "model_config", 4)
    unknown = next((k for k in config if k not in ("model", "neuron")), None)
    if unknown is not None:
        raise _Refused(f"model_config: unknown key {shown(unknown)}")
    if "model" not in config:
        raise _Refused("model_config.model is missing")
    model = _check_family(config["model"], "model_config.model")
    neuron = config.get("neuron")
    if model["family"] == "spikeyolo" or neuron is not None:
        neuron = _check_kind(neuron, "model_config.neuron", NEURONS, _NEURON_KEYS)
    return {"model": model, "neuron": neuron}


def neuron_factory(neuron: Mapping[str, Any] | None) -> Callable[[], nn.Module] | None:
    """The framework neuron of a checked ``neuron`` node as a zero-argument factory (None: none)."""
    if neuron is None:
        return None
    return partial(NEURONS[neuron["kind"]], **{k: v for k, v in neuron.items() if k != "kind"})


def conversion_neuron(node: Mapping[str, Any], where: str = "spiking_neuron") -> Callable[[], nn.Module]:
    """Spiking-YOLO's hidden neuron (``{"kind": "ibt", "v_threshold": 1.0, "alpha": 0.1}``) as a factory."""
    try:
        node = _check_kind(dict(node), where, CONVERSION_NEURONS, _CONVERSION_NEURON_KEYS)
    except _Refused as err:
        raise UserError(str(err)) from None
    return partial(CONVERSION_NEURONS[node["kind"]], **{k: v for k, v in node.items() if k != "kind"})


def family_class(family: str) -> str:
    """The class name a family builds (for run logs and model cards)."""
    return FAMILIES[family].__name__


def _build(model: Mapping[str, Any], neuron: Callable[[], nn.Module] | None) -> nn.Module:
    args = {k: v for k, v in model.items() if k != "family"}
    family = model["family"]
    if family == "spiking_yolo":
        ann = _build(args.pop("ann"), neuron)
        spiking = args.pop("spiking_neuron", None)
        factory = partial(CONVERSION_NEURONS[spiking["kind"]], **{k: v for k, v in spiking.items()
                                                                 if k != "kind"}) if spiking else partial(IBTNeuron)
        return build_spiking_yolo(ann, spiking_neuron=factory, **args)
    if family == "spikeyolo":
        args["block_overrides"] = args.get("block_overrides") or {}
        return SpikeYOLO(neuron=neuron, **args)
    return FAMILIES[family](**args)


def check_model_config(config: Any, source: str | None = None) -> dict[str, Any]:
    """The checked, name-only form of a model description (steps 1 and 2 of the module docstring).

    Raises:
        CheckpointError: (``source`` given: the file it came from) a name, key or value the description may not have.
        UserError: the same for a composed config (no ``source``).
    """
    try:
        return _checked(config)
    except _Refused as err:
        if source:
            raise CheckpointError(f"{source}: {err}") from None
        raise UserError(str(err).removeprefix("model_config.")) from None   # a command line's keys: model., neuron.


def _size_checked(config: dict[str, Any], source: str | None) -> None:
    """Build ``config`` on the meta device (no memory) and refuse more than MAX_PARAMETERS parameters."""
    where = f"{source}: " if source else ""
    if config["model"]["family"] == "yolov8":
        return   # sized by its checked values alone (a scale of five, num_classes, in_chs): x at 10,000 classes ~ 80 M
    try:
        with torch.device("meta"):
            probe = _build(config["model"], neuron_factory(config["neuron"]))
    except (ValueError, TypeError, RuntimeError, IndexError, KeyError, ZeroDivisionError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        error = CheckpointError if source else UserError
        raise error(f"{where}the described model cannot be built: {first}") from None
    count = sum(p.numel() for p in probe.parameters()) + sum(b.numel() for b in probe.buffers())
    if count > MAX_PARAMETERS:
        error = CheckpointError if source else UserError
        raise error(f"{where}the described model has {count:,} parameters (at most {MAX_PARAMETERS:,}: "
                    f"num_classes, widths and layer arguments out of proportion)")


def build_model(cfg: DictConfig | Mapping[str, Any], num_classes: int | None = None,
                source: str | None = None) -> nn.Module:
    """Build the detector of a composed config or of a stored description (``model_config`` of a checkpoint).

    Args:
        cfg: a composed config (its ``model`` and ``neuron`` nodes) or a description dict.
        num_classes: overrides the description's class count.
        source: where a description came from (a checkpoint's or a run config's path): named in errors, and the
            description's size is checked before it is built.
    """
    description = model_config(cfg, num_classes) if isinstance(cfg, DictConfig) else cfg
    if num_classes is not None and not isinstance(cfg, DictConfig) and isinstance(description, Mapping):
        description = dict(translate_model_config(dict(description)))
        description["model"] = {**description["model"], "num_classes": int(num_classes)}
    config = check_model_config(description, source)
    if source is not None:   # a file's description: its size too (a command line's is the user's own choice)
        _size_checked(config, source)
    try:
        return _build(config["model"], neuron_factory(config["neuron"]))
    except (ValueError, TypeError) as err:   # a constructor's own check (e.g. "time_steps (T) must be >= 1")
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise (CheckpointError(f"{source}: {first}") if source else type(err)(first)) from None
