"""Stock ultralytics YOLOv8 checkpoints (``yolo train``'s best.pt / last.pt) as spikeyolo ``yolov8`` weights.

ultralytics 8.x saves ``torch.save`` of a dict whose ``model`` (and, before ``strip_optimizer``, ``ema``) is a
pickled fp16 ``DetectionModel``, with ``train_args`` and metadata. Such a file is read by the bounded reader of
:mod:`spikeyolo.torchfile` with inert stand-ins for exactly the classes below; nothing it names is imported or
called. The weights are pulled out of the stand-in module tree (:mod:`spikeyolo.checkpoints.module_tree`,
fp16 -> float32) and renamed onto :class:`spikeyolo.nn.yolov8.YOLOv8`: ``model.<i>.*`` -> ``layers.<i>.*`` for the
layers before ``Detect``; Detect's ``cv2`` / ``cv3`` -> ``head.box_branches`` / ``head.cls_branches`` and its fixed
``dfl.conv`` -> ``head.dfl.conv``. The scale (n/s/m/l/x) follows from the first conv's width, the class count
and input channels from the weights' shapes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import yaml

from spikeyolo.checkpoints.module_tree import class_names, collect_state_dict
from spikeyolo.errors import CheckpointError
from spikeyolo.torchfile import Refusal, StandIn, pickle_globals, read_error, read_torch_zip, stand_in_classes

__all__ = ["ALLOWED_CLASSES", "is_ultralytics_checkpoint", "ultralytics_payload", "ultralytics_state_dict"]

WHAT = "ultralytics checkpoint"

# The classes a YOLOv8 checkpoint written by ultralytics' own trainer pickles. Measured (pickletools) from
# best.pt / last.pt of `yolo train model=yolov8n.yaml` with ultralytics 8.4 (tests/test_ultralytics_checkpoint.py
# writes one); older 8.x also pickle model.args as IterableSimpleNamespace and, unstripped, the loss objects
# (the names measured from ultralytics 8.0.197 files, spikeyolo.checkpoints.reference).
ALLOWED_CLASSES: dict[str, tuple[str, ...]] = {
    "ultralytics.nn.tasks": ("DetectionModel",),
    "ultralytics.nn.modules.conv": ("Conv", "Concat"),
    "ultralytics.nn.modules.block": ("C2f", "Bottleneck", "SPPF", "DFL"),
    "ultralytics.nn.modules.head": ("Detect",),
    "ultralytics.utils": ("IterableSimpleNamespace",),
    "ultralytics.utils.loss": ("v8DetectionLoss", "BboxLoss"),
    "ultralytics.utils.tal": ("TaskAlignedAssigner",),
    "torch.nn.modules.conv": ("Conv2d",),
    "torch.nn.modules.batchnorm": ("BatchNorm2d",),
    "torch.nn.modules.activation": ("SiLU",),
    "torch.nn.modules.container": ("Sequential", "ModuleList"),
    "torch.nn.modules.pooling": ("MaxPool2d",),
    "torch.nn.modules.upsampling": ("Upsample",),
    "torch.nn.modules.loss": ("BCEWithLogitsLoss",),
}
_CLASSES = stand_in_classes(ALLOWED_CLASSES)

# first conv's output channels (64 x width multiple) -> scale (ultralytics' yolov8.yaml scales)
_SCALE_BY_STEM = {16: "n", 32: "s", 48: "m", 64: "l", 80: "x"}
_REFERENCE_ONLY = ("ultralytics.nn.modules.yolo_spikformer.", "spikingjelly.")


def is_ultralytics_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a torch zip file whose pickle names stock ultralytics modules (``Detect``, ``Conv``,
    ...) and none of the reference SpikeYOLO's. Scans opcodes only; nothing is unpickled."""
    names = pickle_globals(path)
    stock = any(name.startswith("ultralytics.nn.modules.") and not name.startswith(_REFERENCE_ONLY)
                and name != "ultralytics.nn.modules.conv.Concat" for name in names)
    return stock and not any(name.startswith(_REFERENCE_ONLY) for name in names)


def ultralytics_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ultralytics DetectionModel keys (``model.<i>.*``) -> :class:`~spikeyolo.nn.yolov8.YOLOv8` keys.

    Raises:
        Refusal: a key outside ``model.<i>.*`` or a Detect entry other than cv2/cv3/dfl.
    """
    indices = set()
    for key in state:
        match = re.fullmatch(r"model\.(\d+)\..+", key)
        if match is None:
            raise Refusal(f"refusing weight {key[:100]!r} (not model.<layer>.<name>)")
        indices.add(int(match.group(1)))
    detect = max(indices, default=-1)
    renamed = {}
    for key, value in state.items():
        _, index, rest = key.split(".", 2)
        if int(index) < detect:
            renamed[f"layers.{index}.{rest}"] = value
            continue
        branch, _, tail = rest.partition(".")
        target = {"cv2": "head.box_branches", "cv3": "head.cls_branches", "dfl": "head.dfl"}.get(branch)
        if target is None:
            raise Refusal(f"refusing Detect weight {key[:100]!r} (a YOLOv8 Detect has cv2, cv3 and dfl)")
        renamed[f"{target}.{tail}"] = value
    return renamed


def _model_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The spikeyolo ``yolov8`` description the weights' shapes say (scale, classes, input channels)."""
    stem, cls_out, box_out = (state.get(key) for key in ("layers.0.conv.weight", "head.cls_branches.0.2.weight",
                                                         "head.box_branches.0.2.weight"))
    if any(t is None or t.dim() != 4 for t in (stem, cls_out, box_out)):
        raise Refusal("refusing weights that are not a YOLOv8 detection model (no stem conv or Detect branches)")
    scale = _SCALE_BY_STEM.get(int(stem.shape[0]))
    if scale is None:
        raise Refusal(f"refusing a stem of {int(stem.shape[0])} channels (YOLOv8 n/s/m/l/x have 16/32/48/64/80)")
    if int(box_out.shape[0]) != 64:
        raise Refusal(f"refusing a Detect with {int(box_out.shape[0])} box channels (spikeyolo's YOLOv8 has "
                      "reg_max 16: 64)")
    return {"model": {"family": "yolov8", "scale": scale, "num_classes": int(cls_out.shape[0]),
                      "in_chs": int(stem.shape[1])}, "neuron": {"kind": "relu"}}


def ultralytics_payload(path: str | Path, model: Any = None, time_steps: int | None = None,
                        max_level: int | None = None) -> dict[str, Any]:
    """A stock ultralytics checkpoint in the in-memory form of a spikeyolo checkpoint (without format/version).

    ``model_config`` is the ``yolov8`` family at the inferred scale, ``model`` the renamed float32 weights
    (the EMA if the file has one, as ultralytics prefers), ``names`` the pickled class names and
    ``train_config`` the image size it trained at.

    Raises:
        CheckpointError: one line: a refused global or structure, weights that are not a YOLOv8, or a
            model / T / D override (they apply to reference checkpoints only).
    """
    given = [name for name, value in (("model", model), ("neuron.time_steps", time_steps),
                                      ("neuron.max_level", max_level)) if value is not None]
    if given:
        raise CheckpointError(f"{', '.join(given)} apply to reference checkpoints only: {path} is an ultralytics "
                              "YOLOv8 checkpoint and its weights give the model")
    obj = read_torch_zip(path, _CLASSES, CheckpointError, WHAT)
    try:
        if type(obj) is not dict:
            raise Refusal(f"refusing a top-level {type(obj).__name__} (an ultralytics checkpoint is a dict)")
        entry = "ema" if obj.get("ema") is not None else "model"
        module = obj.get(entry)
        if not isinstance(module, StandIn) or module.pickled_name != "ultralytics.nn.tasks.DetectionModel":
            raise Refusal(f"refusing a {entry} entry that is not a DetectionModel")
        state = ultralytics_state_dict(collect_state_dict(module))
        config = _model_config(state)
        num_classes = config["model"]["num_classes"]
        names = class_names(module.state.get("names"))
        args = obj.get("train_args")
        imgsz = args.get("imgsz") if type(args) is dict else None
        version = obj.get("version")
    except Refusal as refusal:
        raise CheckpointError(f"{refusal} in an {WHAT}: {path}") from None
    except (TypeError, ValueError, AttributeError, KeyError, RecursionError) as exc:
        raise read_error(path, exc, CheckpointError, WHAT) from None
    return {"model_config": config, "model": state, "ema": None,
            "names": names if len(names) == num_classes else [str(i) for i in range(num_classes)], "epoch": -1,
            "source": f"ultralytics {str(version)[:20] if type(version) is str else '8.x'} ({entry} weights)",
            "train_config": yaml.safe_dump({"data": {"imgsz": imgsz}}) if type(imgsz) is int else None}
