"""The names a checkpoint or a run folder may use for what it builds, and the translation of older files.

Files are data: a checkpoint's ``model_config`` and a run's ``config.yaml`` name a model family, a neuron, the
layer kinds of a layer list and a logger by the short, stable names below; :mod:`spikeyolo.models` (families,
neurons, conversion neurons), :mod:`spikeyolo.nn.detector` (layer kinds) and :mod:`spikeyolo.engine.loggers`
(loggers) map each name to the class the package owns. No file content ever reaches Hydra's ``instantiate``,
``get_class`` or ``import_module``.

Releases up to 1594679 stored Python paths instead (Hydra ``_target_`` strings such as
``spikeyolo.nn.detector.SpikeYOLO``, layer class paths such as ``spikeyolo.nn.blocks.ConvBlock``).
:func:`translate_model_config` and :func:`translate_run_config` turn exactly those known paths into names (so the
files those releases wrote still load) and refuse every other path, before anything is built: an unknown path is
one line naming the key, never an import.
"""

from __future__ import annotations

from typing import Any

import yaml

from spikeyolo.errors import InputError

__all__ = ["FAMILIES", "NEURONS", "CONVERSION_NEURONS", "LAYER_KINDS", "LOGGERS", "translate_model_config",
           "translate_run_config", "shown", "HYDRA_KEYS", "yaml_data", "refuse_hydra_keys", "MAX_YAML_BYTES",
           "MAX_YAML_VALUES"]

FAMILIES = ("spikeyolo", "tiny_yolo", "yolov8", "spiking_yolo")
NEURONS = ("ilif", "relu")                      # the framework's neurons (the `neuron` group)
CONVERSION_NEURONS = ("ibt", "signed", "if")     # Spiking-YOLO's hidden neurons (spikeyolo-convert spiking_neuron=)
LAYER_KINDS = ("time_expand", "down_sampling", "standard_conv", "all_conv_block", "conv_block", "transformer_block",
               "sppf", "upsample", "concat", "anchor_free_head", "anchor_head")
LOGGERS = ("csv", "none", "wandb")

# The Python paths releases up to 1594679 wrote, and the name each one is now.
_LEGACY_FAMILIES = {"spikeyolo.nn.detector.SpikeYOLO": "spikeyolo", "spikeyolo.nn.tiny_yolo.TinyYOLO": "tiny_yolo",
                    "spikeyolo.nn.yolov8.YOLOv8": "yolov8",
                    "spikeyolo.conversion.spiking_yolo.build_spiking_yolo": "spiking_yolo"}
_LEGACY_NEURONS = {"spikeyolo.nn.neurons.ILIF": "ilif", "spikeyolo.nn.neurons.ReLUNeuron": "relu"}
_LEGACY_CONVERSION_NEURONS = {f"spikeyolo.conversion{module}.{cls}": name
                              for module in ("", ".neurons")
                              for cls, name in (("IBTNeuron", "ibt"), ("SignedNeuron", "signed"), ("IFNeuron", "if"))}
_LEGACY_LAYERS = {f"spikeyolo.nn.{module}.{cls}": name for module, cls, name in (
    ("blocks", "TimeExpand", "time_expand"), ("blocks", "DownSampling", "down_sampling"),
    ("blocks", "StandardConv", "standard_conv"), ("blocks", "AllConvBlock", "all_conv_block"),
    ("blocks", "ConvBlock", "conv_block"), ("attention", "TransformerBlock", "transformer_block"),
    ("blocks", "SPPF", "sppf"), ("blocks", "Upsample", "upsample"), ("blocks", "Concat", "concat"),
    ("heads", "AnchorFreeHead", "anchor_free_head"), ("heads", "SpikingAnchorHead", "anchor_head"))}
_LEGACY_LOGGERS = {"spikeyolo.engine.loggers.CSVLogger": "csv", "spikeyolo.engine.loggers.NullLogger": "none",
                   "spikeyolo.engine.loggers.WandbLogger": "wandb"}
# Hydra's instantiation keys: never meaningful in a file's model, neuron or logger node
HYDRA_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")
MAX_YAML_BYTES = 1 << 20      # a run's config.yaml (or a checkpoint's copy of it) is a few KB
MAX_YAML_VALUES = 100_000     # values reachable in it, a YAML alias counted once per place it is used


def shown(value: Any, limit: int = 60) -> str:
    """A value for a one-line message, bounded: scalars (strings cut to ``limit``), else only the type's name.

    Never calls ``repr`` on a container (a file's nested or self-sharing structure could make it endless).
    """
    if value is None or isinstance(value, (bool, int, float)):
        text = repr(value)
        return text if len(text) <= limit else text[:limit] + "..."
    if isinstance(value, str):
        return repr(value[:limit]) + ("..." if len(value) > limit else "")
    return f"<{type(value).__name__}>"


def _translated(node: dict, key: str, table: dict[str, str], where: str, name_key: str) -> dict:
    """``node`` with its Hydra ``_target_`` (a known path) replaced by ``{name_key: name}``; other Hydra keys refused.

    A node that has no ``_target_`` is returned as it is (a current file's node).
    """
    if "_target_" not in node:
        return node
    target = node["_target_"]
    if not isinstance(target, str) or target not in table:
        raise InputError(f"{where}.{key}._target_: unknown {name_key} {shown(target)} (a file may name only what "
                         f"spikeyolo builds: {', '.join(sorted(set(table.values())))})")
    out = {k: v for k, v in node.items() if k not in ("_target_", "_partial_")}
    extra = next((k for k in out if k in HYDRA_KEYS), None)
    if extra is not None:
        raise InputError(f"{where}.{key}.{extra}: a Hydra key is not allowed in a stored config")
    if name_key in out and out[name_key] != table[target]:
        raise InputError(f"{where}.{key}.{name_key}: {shown(out[name_key])} contradicts {where}.{key}._target_")
    return {name_key: table[target], **out}


def _translated_layers(layers: Any, where: str) -> Any:
    if not isinstance(layers, list):
        return layers          # the model check refuses it with its own message
    rows = []
    for index, row in enumerate(layers):
        if isinstance(row, list) and len(row) == 4 and isinstance(row[2], str) and "." in row[2]:
            if row[2] not in _LEGACY_LAYERS:
                raise InputError(f"{where}.layers[{index}]: unknown layer kind {shown(row[2])} (known: "
                                 f"{', '.join(LAYER_KINDS)})")
            row = [row[0], row[1], _LEGACY_LAYERS[row[2]], row[3]]
        rows.append(row)
    return rows


def translate_model_config(config: Any, where: str = "model_config") -> Any:
    """A stored ``{"model": ..., "neuron": ...}`` with the Python paths of older releases turned into names.

    Returns the input unchanged where it uses names already (and whatever is not a dict: the model check refuses
    that). Raises :class:`~spikeyolo.errors.InputError` for any path that is not one an older release wrote.
    """
    if not isinstance(config, dict):
        return config
    out = dict(config)
    model = out.get("model")
    if isinstance(model, dict):
        model = _translated(model, "model", _LEGACY_FAMILIES, where, "family")
        if model.get("family") == "spiking_yolo":
            model = dict(model)
            if isinstance(model.get("ann"), dict):
                model["ann"] = _translated(model["ann"], "model.ann", _LEGACY_FAMILIES, where, "family")
            if isinstance(model.get("spiking_neuron"), dict):
                model["spiking_neuron"] = _translated(model["spiking_neuron"], "model.spiking_neuron",
                                                      _LEGACY_CONVERSION_NEURONS, where, "kind")
        if "layers" in model:
            model = {**model, "layers": _translated_layers(model["layers"], f"{where}.model")}
        out["model"] = model
    neuron = out.get("neuron")
    if isinstance(neuron, dict):
        if neuron == {"_target_": "builtins.dict"}:   # a converted ANN without a framework neuron
            out["neuron"] = None
        else:
            out["neuron"] = _translated(neuron, "neuron", _LEGACY_NEURONS, where, "kind")
    return out


def translate_run_config(config: Any, where: str = "config.yaml") -> Any:
    """A run's saved config (plain containers) with older releases' paths in model, neuron and logger as names."""
    if not isinstance(config, dict):
        return config
    out = dict(translate_model_config(config, where))
    if isinstance(out.get("logger"), dict):
        out["logger"] = _translated(out["logger"], "logger", _LEGACY_LOGGERS, where, "kind")
    return out


def yaml_data(text: Any, where: str) -> Any:
    """YAML text from a file (a run's config.yaml, a checkpoint's ``train_config``) as plain data, bounded.

    Read with YAML's safe loader (no tags that build objects); at most :data:`MAX_YAML_BYTES` of text and
    :data:`MAX_YAML_VALUES` values reachable (aliases that multiply, "billion laughs", are refused before anything
    walks them again); Hydra's instantiation keys (:data:`HYDRA_KEYS`) are refused anywhere in it, except that the
    older releases' known paths are the caller's to translate first (:func:`translate_run_config`).

    Raises:
        InputError: one line naming ``where``.
    """
    if not isinstance(text, str):
        raise InputError(f"{where}: not YAML text ({shown(text)})")
    if len(text) > MAX_YAML_BYTES:
        raise InputError(f"{where}: {len(text):,} characters of YAML (at most {MAX_YAML_BYTES:,})")
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise InputError(f"cannot read {where}: {first}") from None
    stack, seen = [data], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_YAML_VALUES:
            raise InputError(f"{where}: more than {MAX_YAML_VALUES:,} values (YAML aliases that multiply?)")
        if isinstance(node, dict):
            stack.extend(node.values())
            stack.extend(key for key in node if isinstance(key, (tuple, dict, list)))
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
    return data


def refuse_hydra_keys(data: Any, where: str) -> None:
    """Refuse Hydra's instantiation keys anywhere in ``data`` (already bounded by :func:`yaml_data`)."""
    stack = [(data, "")]
    while stack:
        node, key = stack.pop()
        if isinstance(node, dict):
            for name, value in node.items():
                if name in HYDRA_KEYS:
                    raise InputError(f"{where}: {key + '.' if key else ''}{name} is not allowed (a file names what "
                                     "spikeyolo builds; it never holds Python paths)")
                stack.append((value, f"{key}.{name}" if key else str(name)))
        elif isinstance(node, list):
            stack.extend((value, f"{key}[{index}]") for index, value in enumerate(node))
