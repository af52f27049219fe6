"""Checkpoints: atomic writes, bounded code-free reads, and model reconstruction from names.

A spikeyolo checkpoint is a plain dict of tensors and primitives, read by :func:`spikeyolo.torchfile.read_torch_zip`
with no class allowed (no pickled code is ever executed; sizes bounded by the file), and the model it describes is
built by :func:`spikeyolo.models.build_model` from names and checked values only:

    format, version     "spikeyolo-checkpoint", 1
    model_config        {"model": {"family": ..., ...}, "neuron": {"kind": ..., ...}}  (enough to rebuild the network;
                        older releases' Python paths are translated, spikeyolo.config.names)
    model               state_dict (float32)
    ema, ema_updates    EMA state_dict (or None) and its update count
    optimizer, scaler   state dicts (or None)
    epoch               last finished epoch (0-based); -1 before the first
    best_fitness        best validation fitness so far
    rng                 torch / numpy / python RNG states
    loader              the training loader's shuffle generator, mosaic buffer and close-mosaic state
    ranks               DDP: every rank's rng and loader (index = rank; rank 0's are the two above), or None
    pending_grads       None (gradients left at an epoch's end are dropped, as the reference does; older files may
                        hold them)
    last_opt_step       the iteration of the last optimizer step (the reference's counter, carried across epochs)
    train_config        the resolved run config as YAML text (or None)
    names, metrics      class names and the last metrics

:func:`read_model_checkpoint` also takes a reference (BICLab/SpikeYOLO, ultralytics-format) checkpoint and a stock
ultralytics YOLOv8 one, recognised by the classes their pickles name and read by the same reader with an allow-list of
inert stand-ins (``spikeyolo.checkpoints.reference``, ``spikeyolo.checkpoints.ultralytics``), and returns them in the
same payload form (model_config inferred from the weights); :func:`init_from_weights` starts a training run
(fine-tuning) from any of them.
"""

from __future__ import annotations

import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from spikeyolo.checkpoints.reference import ReferenceCheckpoint, is_reference_checkpoint, load_reference_checkpoint
from spikeyolo.checkpoints.ultralytics import is_ultralytics_checkpoint, ultralytics_payload
from spikeyolo.errors import CheckpointError, InputError, ReferenceCheckpointError
from spikeyolo.io import atomic_write
from spikeyolo.config.names import refuse_hydra_keys, shown, yaml_data
from spikeyolo.models import build_model, check_model_config
from spikeyolo.config.reference import reference_model_config
from spikeyolo.nn.reference import GEN1_LIF, convert_reference_state_dict, translate_reference_keys
from spikeyolo.torchfile import Refusal, unpickle_torch_zip
from spikeyolo.torchfile import read_error as torchfile_read_error

FORMAT = "spikeyolo-checkpoint"
VERSION = 1

__all__ = ["CheckpointError", "save_checkpoint", "read_checkpoint", "read_model_checkpoint", "reference_payload",
           "load_checkpoint", "load_weights", "init_from_weights", "rng_state", "set_rng_state",
           "describe_model_config", "stored_model_config"]


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write ``payload`` atomically: a temp file in the same folder, fsync, then rename over ``path``.

    A crash at any moment leaves either the old file or the new one, never a torn file.
    """
    payload = {"format": FORMAT, "version": VERSION, **payload}
    with atomic_write(path) as handle:
        torch.save(payload, handle)
    return Path(path)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a spikeyolo checkpoint: data only, within the bounds of :mod:`spikeyolo.torchfile`.

    Raises:
        CheckpointError: one line: a missing, legacy, foreign or hostile file, or a newer format.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):  # torch >= 1.6 writes zip archives; the legacy format is a bare pickle
        raise CheckpointError(f"cannot read checkpoint {path}: not a torch zip archive (truncated, or the "
                              "pre-1.6 legacy format, which is not read because unpickling it can run code)")
    try:  # the bounded, code-free reader (spikeyolo.torchfile): plain data and tensors, no stand-in classes
        payload = unpickle_torch_zip(path)
    except Refusal as refusal:
        raise CheckpointError(f"cannot read checkpoint {path}: {refusal}") from None
    except Exception as exc:  # truncated file, malformed pickle, out of memory, ...
        raise torchfile_read_error(path, exc) from None
    if torch.device(map_location).type != "cpu":  # tensors are read onto the CPU; move them (depth <= MAX_DEPTH)
        def to_device(node: Any) -> Any:
            if isinstance(node, torch.Tensor):
                return node.to(map_location)
            if isinstance(node, dict):
                return type(node)((key, to_device(value)) for key, value in node.items())
            return type(node)(map(to_device, node)) if type(node) in (list, tuple) else node

        payload = to_device(payload)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a spikeyolo checkpoint (nor a reference SpikeYOLO/ultralytics one)")
    if type(payload.get("version", 0)) is not int:
        raise CheckpointError(f"{path} has a format version that is not a number")
    if payload.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} was written by a newer spikeyolo (format version {payload['version']})")
    return payload


def read_model_checkpoint(path: str | Path, model: str | Any = None, time_steps: int | None = None,
                          max_level: int | None = None) -> dict[str, Any]:
    """A spikeyolo checkpoint, or a reference checkpoint as the same payload (``model_config`` inferred).

    ``model`` (a model config name or node), ``time_steps`` and ``max_level`` choose the scale, T and D of a
    reference checkpoint (default: inferred from the weights; the reference's T and D); a spikeyolo
    checkpoint stores its own, so they are refused for it.
    """
    if Path(path).is_file() and is_ultralytics_checkpoint(path):  # a stock YOLOv8 (yolo train's best.pt)
        return {"format": FORMAT, "version": VERSION, **ultralytics_payload(path, model, time_steps, max_level)}
    if Path(path).is_file() and is_reference_checkpoint(path):
        return reference_payload(load_reference_checkpoint(path), model, time_steps, max_level)
    payload = read_checkpoint(path)
    given = [name for name, value in (("model", model), ("neuron.time_steps", time_steps),
                                      ("neuron.max_level", max_level)) if value is not None]
    if given:
        raise CheckpointError(f"{', '.join(given)} apply to reference checkpoints only: {path} is a spikeyolo "
                              f"checkpoint and stores its model ({describe_model_config(payload['model_config'])})")
    return payload


def reference_payload(reference: ReferenceCheckpoint, model: str | None = None, time_steps: int | None = None,
                      max_level: int | None = None) -> dict[str, Any]:
    """A reference checkpoint in the in-memory form of a spikeyolo checkpoint (``read_checkpoint``'s dict).

    ``model_config`` from :func:`~spikeyolo.config.reference.reference_model_config`, ``model`` the converted
    (spikeyolo-key, float32) weights, ``names`` the pickled class names, and ``train_config`` the image size the
    reference trained at, so :func:`model_from_payload` and spikeyolo-eval take it as it is.

    Raises:
        ReferenceCheckpointError: Gen1 neurons other than the reference's (tau 2, decay_input, soft reset).
        ReferenceKeyError: weights that do not fit the inferred (or given) model.
    """
    if reference.kind == "gen1" and reference.lif_settings != {GEN1_LIF}:
        raise ReferenceCheckpointError(
            f"{reference.path}: Gen1 neurons with (tau, decay_input, v_reset, detach_reset) = "
            f"{sorted(reference.lif_settings, key=str)}; spikeyolo reproduces only the reference's {GEN1_LIF} "
            "(charge=lif)")
    config = reference_model_config(reference.state_dict, reference.kind, model, time_steps, max_level)
    network = build_model(config, source=str(reference.path))
    state = convert_reference_state_dict(reference.state_dict, network)
    imgsz = reference.train_args.get("imgsz")
    num_classes = config["model"]["num_classes"]
    names = reference.names if len(reference.names) == num_classes else [str(i) for i in range(num_classes)]
    return {"format": FORMAT, "version": VERSION, "model_config": config, "model": state, "ema": None,
            "names": names, "epoch": -1, "source": f"reference ({reference.kind}, {reference.entry} weights)",
            "train_config": yaml.safe_dump({"data": {"imgsz": imgsz}}) if type(imgsz) is int else None}


def trained_data_config(payload: dict[str, Any]) -> dict[str, Any]:
    """The ``data`` node of the run config a checkpoint was trained with ({} if it has none)."""
    text = payload.get("train_config")
    try:
        config = yaml_data(text, "the checkpoint's train_config") if text else {}
        data = (config or {}).get("data") if isinstance(config, dict) else None
        refuse_hydra_keys(data, "the checkpoint's train_config.data")
    except InputError as err:
        raise CheckpointError(str(err)) from None
    return dict(data) if isinstance(data, dict) else {}


def describe_model_config(model_config: Any) -> str:
    """Short human description: 'depth 0.33 width 0.5, 80 classes, T=1 D=4' (bounded, whatever it holds)."""
    config = model_config if isinstance(model_config, dict) else {}
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    neuron = config.get("neuron") if isinstance(config.get("neuron"), dict) else {}
    return (f"depth {shown(model.get('depth_multiple'))} width {shown(model.get('width_multiple'))}, "
            f"{shown(model.get('num_classes'))} classes, T={shown(neuron.get('time_steps'))} "
            f"D={shown(neuron.get('max_level'))}")


def load_weights(model: nn.Module, payload: dict[str, Any], use_ema: bool = True,
                 source: str = "checkpoint") -> nn.Module:
    """Load a checkpoint's (EMA) weights into ``model``, with a clear error when the architecture differs."""
    state = payload.get("ema") if use_ema and payload.get("ema") is not None else payload["model"]
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    shapes = [k for k in set(ours) & set(state) if tuple(ours[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        stored = describe_model_config(payload.get("model_config", {}))
        detail = (f"{len(missing)} missing, {len(unexpected)} unexpected keys, {len(shapes)} shape mismatches"
                  + (f" (e.g. {shapes[0]})" if shapes else ""))
        raise CheckpointError(f"{source} holds another architecture ({stored}) than the configured model: {detail}")
    model.load_state_dict(state, strict=True)
    return model


def stored_model_config(payload: dict[str, Any], source: str = "checkpoint") -> dict[str, Any]:
    """A read checkpoint's ``model_config``, checked (names and values; :func:`spikeyolo.models.check_model_config`).

    Raises:
        CheckpointError: none stored, or one that names what spikeyolo does not build or holds values out of range.
    """
    if "model_config" not in payload:
        raise CheckpointError(f"{source}: no model_config (not a model checkpoint of spikeyolo)")
    return check_model_config(payload["model_config"], source)


def model_from_payload(payload: dict[str, Any], use_ema: bool = True, source: str = "checkpoint") -> nn.Module:
    """The model of a read checkpoint (:func:`read_checkpoint`) with its (EMA) weights and class names, eval mode."""
    model = build_model(stored_model_config(payload, source), source=source)
    load_weights(model, payload, use_ema=use_ema, source=source)
    model.names = list(payload.get("names") or [])
    return model.eval()


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", use_ema: bool = True) -> nn.Module:
    """Rebuild the model stored in a spikeyolo (or reference) checkpoint with its (EMA) weights, in eval mode."""
    return model_from_payload(read_model_checkpoint(path), use_ema, str(path)).to(map_location)


def init_from_weights(model: nn.Module, model_config: dict[str, Any], path: str | Path) -> str:
    """Start training from a spikeyolo, reference or stock ultralytics checkpoint's weights (fine-tuning); returns a
    log line.

    Every tensor of the same name and shape is copied. When the checkpoint predicts another number of
    classes, the tensors whose shape depends on it (the class branches of the head) keep ``model``'s
    fresh initialisation. Checkpoint keys the model does not have are reported as unexpected.

    Raises:
        CheckpointError: any other missing key or shape mismatch (another architecture).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights not found: {path}")
    if is_ultralytics_checkpoint(path):   # a stock YOLOv8 (yolo train's best.pt): read as a spikeyolo payload
        payload = ultralytics_payload(path)
        state, unexpected = payload["model"], []
        their_classes = payload["model_config"]["model"]["num_classes"]
        kind = "ultralytics"
    elif is_reference_checkpoint(path):
        reference = load_reference_checkpoint(path)
        state, unexpected = translate_reference_keys(reference.state_dict, model)
        their_classes = int(reference.state_dict["model.26.cv3.0.2.conv.weight"].shape[0]) \
            if "model.26.cv3.0.2.conv.weight" in reference.state_dict else None
        kind = f"reference {reference.kind}"
    else:
        payload = read_checkpoint(path)
        state, unexpected = (payload["ema"] if payload.get("ema") is not None else payload["model"]), []
        their_classes = stored_model_config(payload, str(path))["model"].get("num_classes")
        kind = "spikeyolo"
    ours = model.state_dict()
    ours_classes = model_config["model"]["num_classes"]
    class_shaped: set[str] = set()
    if their_classes is not None and their_classes != ours_classes:  # the same network for their class count
        other = build_model(model_config, num_classes=their_classes, source=str(path)).state_dict()
        class_shaped = {k for k in ours if k in other and other[k].shape != ours[k].shape}
    loaded, reinitialised, mismatched = {}, [], []
    for key, value in state.items():
        if key not in ours:
            unexpected.append(key)
        elif tuple(value.shape) == tuple(ours[key].shape):
            loaded[key] = value
        elif key in class_shaped:
            reinitialised.append(key)
        else:
            mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(ours[key].shape)}")
    missing = sorted(set(ours) - set(state))
    if mismatched or missing:
        raise CheckpointError(f"weights {path} ({kind}) do not fit the configured model: {len(missing)} missing keys"
                              f"{' (e.g. ' + missing[0] + ')' if missing else ''}, {len(mismatched)} shape "
                              f"mismatches{' (e.g. ' + mismatched[0] + ')' if mismatched else ''}")
    model.load_state_dict({**ours, **loaded}, strict=True)
    classes = f" for {their_classes} -> {ours_classes} classes" if reinitialised else ""
    return (f"weights {path} ({kind}): {len(loaded)} tensors loaded, {len(reinitialised)} re-initialised{classes}, "
            f"{len(unexpected)} unexpected{' (' + ', '.join(unexpected[:5]) + ')' if unexpected else ''}")


def rng_state() -> dict[str, Any]:
    """All RNG states as weights-only-loadable values."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
