"""Reference-format checkpoints made without the reference code (test support for tests/test_reference_*.py).

The reference trainer (BICLab/SpikeYOLO, ultralytics 8.0.197) saves pickled ``DetectionModel`` objects.
This module rebuilds that object graph from our own classes, named and registered under the
reference's module paths (``ultralytics.nn.tasks.DetectionModel``, ...) only while ``torch.save`` runs
(:func:`reference_modules` puts fake modules into ``sys.modules`` and restores every entry afterwards,
so the installed ultralytics and spikingjelly are untouched), and writes it in the reference's forms:

    train       save_model: model and ema fp16 deepcopies, SGD state (numpy float64 momentum, as the
                warmup's np.interp leaves it), train_args, metrics, date, version
    published   strip_optimizer applied to the train form: model = ema, optimizer/ema/updates/best_fitness
                None, epoch -1, fp16, requires_grad False, train_args reduced to the default-config keys
    old_torch   published, with the module attributes newer torch added removed from every module
    legacy      published, written with torch's pre-1.6 (non-zip) serialization

The module tree mirrors the real one: every class, its plain attributes, the neurons (``mem_update`` +
``MultiSpike4`` for COCO; spikingjelly ``MultiStepLIFNode`` sharing one ``Sigmoid`` for Gen1) and the
non-module attributes (``args``, ``criterion``). tests/test_reference_checkpoint.py checks the result
against tests/fixtures/reference/real_checkpoint_inventory.json, measured from files the real reference
code wrote (globals named, class counts, neuron positions, attribute names).
"""

from __future__ import annotations

import copy
import re
import sys
import types
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spikeyolo.nn.reference import reference_to_spikeyolo_key

FIXTURES = Path(__file__).parent / "fixtures" / "reference"
YOLO = "ultralytics.nn.modules.yolo_spikformer"
_FAKE_MODULES = ("ultralytics", "ultralytics.nn", "ultralytics.nn.tasks", "ultralytics.nn.modules",
                 "ultralytics.nn.modules.conv", YOLO, "ultralytics.utils", "ultralytics.utils.loss",
                 "ultralytics.utils.tal", "spikingjelly", "spikingjelly.clock_driven",
                 "spikingjelly.clock_driven.neuron", "spikingjelly.clock_driven.surrogate")
_MISSING = object()


def _module_class(module: str, name: str) -> type:
    return type(name, (nn.Module,), {"__module__": module, "__qualname__": name})


_CLASSES: dict[str, type] = {name: _module_class(YOLO, name) for name in (
    "MS_GetT", "MS_DownSampling", "MS_AllConvBlock", "MS_ConvBlock", "SepConv", "SepRepConv", "RepConv",
    "BNAndPadLayer", "MS_StandardConv", "SpikeSPPF", "SpikeConv", "SpikeConvWithoutBN", "SpikeDetect", "SpikeDFL",
    "mem_update", "MultiSpike4")}
_CLASSES["DetectionModel"] = _module_class("ultralytics.nn.tasks", "DetectionModel")
_CLASSES["Concat"] = _module_class("ultralytics.nn.modules.conv", "Concat")
_CLASSES["BboxLoss"] = _module_class("ultralytics.utils.loss", "BboxLoss")
_CLASSES["TaskAlignedAssigner"] = _module_class("ultralytics.utils.tal", "TaskAlignedAssigner")
_CLASSES["MultiStepLIFNode"] = _module_class("spikingjelly.clock_driven.neuron", "MultiStepLIFNode")
_CLASSES["Sigmoid"] = _module_class("spikingjelly.clock_driven.surrogate", "Sigmoid")
IterableSimpleNamespace = type("IterableSimpleNamespace", (types.SimpleNamespace,),
                               {"__module__": "ultralytics.utils", "__qualname__": "IterableSimpleNamespace"})
v8DetectionLoss = type("v8DetectionLoss", (), {"__module__": "ultralytics.utils.loss",
                                                "__qualname__": "v8DetectionLoss"})
_ALL = [*_CLASSES.values(), IterableSimpleNamespace, v8DetectionLoss]


@contextmanager
def reference_modules() -> Iterator[None]:
    """Fake ``ultralytics.*`` / ``spikingjelly.clock_driven.*`` modules in sys.modules; every entry restored after."""
    saved = {name: sys.modules.get(name, _MISSING) for name in _FAKE_MODULES}
    try:
        for name in _FAKE_MODULES:
            sys.modules[name] = types.ModuleType(name)
        for cls in _ALL:
            setattr(sys.modules[cls.__module__], cls.__qualname__, cls)
        yield
    finally:
        for name, module in saved.items():
            if module is _MISSING:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def lively(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convs x3 and class biases 0, so that spikes flow and every class responds (outputs are not constants)."""
    state = dict(state)
    for key, value in state.items():
        if key.endswith("conv.weight") and value.dim() == 4 and key != "model.26.dfl.conv.weight" or \
                key.endswith(("pwconv1.weight", "dwconv2.weight")) or ".body." in key and key.endswith("weight") \
                and value.dim() == 4:
            state[key] = value * 3
        if re.fullmatch(r"model\.26\.cv3\.\d\.2\.conv\.bias", key):
            state[key] = torch.zeros_like(value)
    return state


def fp16(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the reference stores: floating tensors in fp16 (read back as float32)."""
    return {k: v.half().float() if v.is_floating_point() else v for k, v in state.items()}


# --------------------------------------------------------------------------- the reference module tree

LAYERS = {0: "MS_GetT", 1: "MS_DownSampling", 2: "MS_AllConvBlock", 3: "MS_DownSampling", 4: "MS_AllConvBlock",
          5: "MS_DownSampling", 6: "MS_ConvBlock", 7: "MS_DownSampling", 8: "MS_ConvBlock", 9: "SpikeSPPF",
          10: "MS_StandardConv", 11: "Upsample", 12: "MS_ConvBlock", 13: "Concat", 14: "MS_StandardConv",
          15: "Upsample", 16: "MS_AllConvBlock", 17: "Concat", 18: "MS_StandardConv", 19: "MS_AllConvBlock",
          20: "MS_StandardConv", 21: "Concat", 22: "MS_ConvBlock", 23: "MS_StandardConv", 24: "Concat",
          25: "MS_ConvBlock", 26: "SpikeDetect"}
SOURCES = {13: [-1, 6], 17: [-1, 4], 21: [-1, 14], 24: [-1, 10], 26: [19, 22, 25]}
# (parent class, child name) -> child class; numbered children of these containers follow _numbered
_CHILDREN = {("MS_AllConvBlock", "Conv"): "SepConv", ("MS_ConvBlock", "Conv"): "SepConv",
             ("SepConv", "pwconv3"): "SepRepConv", ("MS_ConvBlock", "conv1"): "RepConv",
             ("MS_ConvBlock", "conv2"): "RepConv", ("MS_AllConvBlock", "conv1"): "MS_StandardConv",
             ("MS_AllConvBlock", "conv2"): "MS_StandardConv", ("SpikeSPPF", "cv1"): "SpikeConv",
             ("SpikeSPPF", "cv2"): "SpikeConv", ("SpikeDetect", "dfl"): "SpikeDFL"}
_NUMBERED = {("RepConv", "body"): ["Conv2d", "BNAndPadLayer", ["Conv2d", "Conv2d", "BatchNorm2d"]],
             ("SepRepConv", "body"): ["BNAndPadLayer", ["Conv2d", "Conv2d"]],
             ("SpikeDetect", "cv2"): "branches", ("SpikeDetect", "cv3"): "branches"}
# where the reference has a neuron (measured: 89 in n/s), in its attribute order
_NEURONS = {"MS_DownSampling": ["encode_lif"], "SepConv": ["lif1", "lif2", "lif3"], "MS_ConvBlock": ["lif1", "lif2"],
            "MS_StandardConv": ["lif"], "SpikeConv": ["lif"], "SpikeConvWithoutBN": ["lif"], "SpikeDFL": ["lif"]}


def reference_keys() -> list[str]:
    """The reference's state_dict keys for n and s (755; tests/fixtures/reference/*.tsv)."""
    lines = (FIXTURES / "spikeyolo_s_state_dict.tsv").read_text().splitlines()[1:]
    return [line.split("\t")[0] for line in lines]


def reference_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s weights (a spikeyolo n/s-topology model of any width) under the reference's keys."""
    ours = model.state_dict()
    return {key: ours[reference_to_spikeyolo_key(model, key)].detach().clone() for key in reference_keys()}


def _tree(state: Mapping[str, torch.Tensor]) -> dict:
    root: dict = {}
    for key in state:
        node = root
        *path, leaf = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node.setdefault("", {})[leaf] = state[key]
    return root


class _Maker:
    def __init__(self, kind: str, num_classes: int) -> None:
        self.kind, self.num_classes = kind, num_classes
        self.surrogate = _CLASSES["Sigmoid"]()  # spikingjelly's default argument: one object in every neuron
        self.surrogate.spiking, self.surrogate.alpha = True, 4.0

    def neuron(self) -> nn.Module:
        if self.kind == "gen1":
            lif = _CLASSES["MultiStepLIFNode"]()
            memories = {"v": 0.0, "v_threshold": 1.0, "v_reset": None, "v_seq": None}
            lif._memories, lif._memories_rv = dict(memories), dict(memories)
            lif.surrogate_function = self.surrogate
            lif.detach_reset, lif.tau, lif.decay_input, lif.cupy_fp32_inference = True, 2.0, True, False
            lif.backend, lif.lava_s_cale, lif.lava_neuron = "torch", 64, None
            return lif
        neuron = _CLASSES["mem_update"]()
        neuron.act = False
        neuron.qtrick = _CLASSES["MultiSpike4"]()
        return neuron

    def leaf(self, tensors: dict) -> nn.Module:
        if "running_mean" in tensors:
            return nn.BatchNorm2d(tensors["weight"].shape[0], eps=1e-3, momentum=0.03)
        out_chs, in_per_group, kernel, _ = tensors["weight"].shape
        groups = out_chs if in_per_group == 1 and kernel > 1 else 1
        conv = nn.Conv2d(in_per_group * groups, out_chs, kernel, padding=kernel // 2, groups=groups,
                         bias="bias" in tensors)
        if out_chs == 1 and in_per_group == 16:  # SpikeDFL's fixed 0..15 conv
            conv.requires_grad_(False)
        return conv

    def numbered(self, spec, node: dict) -> nn.Module:
        container = nn.ModuleList() if spec == "branches" else nn.Sequential()
        for index in sorted((k for k in node if k), key=int):
            child = node[index]
            if spec == "branches":
                made = nn.Sequential(*[self.make("SpikeConvWithoutBN" if j == "2" else "SpikeConv", child[j])
                                       for j in sorted((k for k in child if k), key=int)])
            elif isinstance(spec[int(index)], list):
                made = self.numbered(spec[int(index)], child)
            elif spec[int(index)] in ("Conv2d", "BatchNorm2d"):
                made = self.leaf(child[""])
            else:
                made = self.make(spec[int(index)], child)
            container.add_module(index, made)
        return container

    def make(self, cls_name: str, node: dict, first: bool = False) -> nn.Module:
        module = _CLASSES[cls_name]()
        for name, child in node.items():
            if not name:
                continue
            if (cls_name, name) in _NUMBERED:
                module.add_module(name, self.numbered(_NUMBERED[(cls_name, name)], child))
            elif (cls_name, name) in _CHILDREN:
                module.add_module(name, self.make(_CHILDREN[(cls_name, name)], child))
            else:
                module.add_module(name, self.leaf(child[""]))
        for name in _NEURONS.get(cls_name, []):
            if not (first and name == "encode_lif"):
                module.add_module(name, self.neuron())
        if cls_name == "SpikeSPPF":
            module.m = nn.MaxPool2d(kernel_size=5, stride=1, padding=2)
        self.attributes(cls_name, module, node)
        return module

    def attributes(self, cls_name: str, module: nn.Module, node: dict) -> None:
        """The plain attributes the reference classes set (measured attribute names)."""
        if cls_name == "BNAndPadLayer":
            module.pad_pixels = 1
        elif cls_name in ("MS_AllConvBlock", "MS_ConvBlock"):
            module.mlp_ratio = 4
            if cls_name == "MS_ConvBlock":
                module.full = False
        elif cls_name == "MS_StandardConv":
            module.c1, module.c2, module.s = 8, 8, 1
        elif cls_name in ("SpikeConv", "SpikeConvWithoutBN"):
            module.s = 1
        elif cls_name == "SpikeDFL":
            module.c1 = 16
        elif cls_name == "SpikeDetect":
            module.nc, module.nl, module.reg_max, module.no = self.num_classes, 3, 16, self.num_classes + 64
            module.stride, module.inplace = torch.tensor([8.0, 16.0, 32.0]), True
            module.anchors, module.strides = torch.zeros(2, 84), torch.ones(1, 84)
            if self.kind == "coco":
                module.shape = torch.Size([1, self.num_classes + 64, 8, 8])


def build_detection_model(state: Mapping[str, torch.Tensor], kind: str = "coco",
                          names: Mapping[int, str] | None = None) -> nn.Module:
    """A DetectionModel-shaped module tree holding ``state`` (reference keys), as the reference pickles it."""
    num_classes = int(state["model.26.cv3.0.2.conv.weight"].shape[0])
    maker = _Maker(kind, num_classes)
    tree = _tree(state)["model"]
    layers = nn.Sequential()
    for index, cls_name in LAYERS.items():
        node = tree.get(str(index), {})
        if cls_name == "Upsample":
            layer: nn.Module = nn.Upsample(scale_factor=(1, 2, 2), mode="nearest")
        elif any(k.isdigit() for k in node):  # repeats > 1: a Sequential of blocks
            layer = nn.Sequential(*[maker.make(cls_name, node[j]) for j in sorted(node, key=int)])
        else:
            layer = maker.make(cls_name, node, first=index == 1)
        if cls_name == "MS_GetT":
            layer.T, layer.in_channels = 1, 3
        if cls_name == "Concat":
            layer.d = 2
        module = "torch.nn.modules.upsampling" if cls_name == "Upsample" else \
            "ultralytics.nn.modules.conv" if cls_name == "Concat" else YOLO
        layer.i, layer.f, layer.type = index, SOURCES.get(index, -1), f"{module}.{cls_name}"
        layers.add_module(str(index), layer)
    model = _CLASSES["DetectionModel"]()
    model.model = layers
    model.yaml = {"nc": num_classes, "scale": "s", "yaml_file": "snn_yolov8s.yaml", "ch": 3}
    model.save, model.names, model.inplace = [4, 6, 10, 14, 19, 22, 25], dict(names or {}), True
    model.stride = torch.tensor([8.0, 16.0, 32.0])
    if kind == "coco":  # set by the trainer: args (IterableSimpleNamespace) and the loss
        model.nc = num_classes
        model.args = IterableSimpleNamespace(imgsz=64, epochs=1, batch=2, lr0=0.01, momentum=0.937)
        criterion = v8DetectionLoss()
        criterion.bce, criterion.hyp = nn.BCEWithLogitsLoss(reduction="none"), model.args
        criterion.stride, criterion.nc, criterion.no = model.stride, num_classes, num_classes + 64
        criterion.reg_max = 16
        criterion.device, criterion.use_dfl = torch.device("cpu"), True
        criterion.assigner, criterion.bbox_loss = _CLASSES["TaskAlignedAssigner"](), _CLASSES["BboxLoss"]()
        criterion.proj = torch.arange(16, dtype=torch.float)
        model.criterion = criterion
    model.load_state_dict(dict(state), strict=True)  # the tree reproduces the reference's keys exactly
    return model.eval()


# --------------------------------------------------------------------------- the reference's checkpoint forms

_OLD_TORCH_MISSING = ("_state_dict_pre_hooks", "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs",
                      "_forward_hooks_always_called", "_state_dict_hooks", "_load_state_dict_pre_hooks",
                      "_load_state_dict_post_hooks", "_non_persistent_buffers_set", "_backward_pre_hooks",
                      "_is_full_backward_hook")


def training_form(ema: nn.Module, model: nn.Module | None = None, kind: str = "coco") -> dict:
    """What ``save_model`` writes: fp16 deepcopies of the training model and the EMA, SGD state, args, metadata."""
    model = model if model is not None else ema
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if kind == "coco":  # one step gives momentum buffers; the warmup leaves numpy float64 momenta (np.interp)
        for parameter in model.parameters():
            parameter.grad = torch.zeros_like(parameter)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        for group in optimizer.param_groups:
            group["momentum"] = np.float64(0.9)
    return {"epoch": 0, "best_fitness": 0.125, "model": copy.deepcopy(model).half(), "ema": copy.deepcopy(ema).half(),
            "updates": 2, "optimizer": optimizer.state_dict(),
            "train_args": {"model": "snn_yolov8s.yaml", "data": "coco.yaml", "imgsz": 64, "epochs": 1,
                           "save_dir": "runs/detect/train", "tracker": "botsort.yaml"},
            "train_metrics": {"metrics/mAP50(B)": 0.0, "fitness": 0.125},
            "train_results": {"epoch": [1], "metrics/mAP50(B)": [0.0]}, "date": "2024-10-21T12:00:00.000000",
            "version": "8.0.197"}


def published_form(checkpoint: dict) -> dict:
    """``strip_optimizer`` applied to a training-form dict (model = ema, optimizer etc. None, fp16, frozen)."""
    stripped = dict(checkpoint)
    if stripped.get("ema"):
        stripped["model"] = stripped["ema"]
    for key in ("optimizer", "best_fitness", "ema", "updates"):
        stripped[key] = None
    stripped["epoch"] = -1
    stripped["model"].half()
    for parameter in stripped["model"].parameters():
        parameter.requires_grad = False
    stripped["train_args"] = {k: v for k, v in stripped["train_args"].items() if k not in ("save_dir",)}
    return stripped


def old_torch_form(checkpoint: dict) -> dict:
    """A checkpoint as an older torch pickled it: module attributes newer torch added are absent."""
    old = dict(checkpoint)
    old["model"] = copy.deepcopy(checkpoint["model"])
    for module in old["model"].modules():
        for name in _OLD_TORCH_MISSING:
            module.__dict__.pop(name, None)
    return old


def save_reference(obj: object, path: Path, legacy: bool = False) -> Path:
    """``torch.save`` with the reference's classes importable under their names (zip, or the pre-1.6 format)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with reference_modules(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy format warns that it cannot store the classes' source
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def make_reference_checkpoint(path: Path, weights: Mapping[str, torch.Tensor], form: str = "published",
                              kind: str = "coco", names: Mapping[int, str] | None = None,
                              training_weights: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write ``weights`` (reference keys) as a reference checkpoint of ``form`` (see the module docstring).

    ``training_weights`` (train form): the non-EMA training model's weights, to tell the entries apart.
    """
    ema = build_detection_model(weights, kind, names)
    model = build_detection_model(training_weights, kind, names) if training_weights is not None else None
    checkpoint = training_form(ema, model, kind)
    if form != "train":
        checkpoint = published_form(checkpoint)
    if form == "old_torch":
        checkpoint = old_torch_form(checkpoint)
    return save_reference(checkpoint, path, legacy=form == "legacy")
