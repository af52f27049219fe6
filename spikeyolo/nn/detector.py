"""SpikeYOLO detector assembled from a layer list (configs/model/*.yaml).

A layer spec is ``[from, repeats, kind, args]`` as in YOLOv8 yamls, where
``kind`` is a name of :data:`LAYER_KINDS` (or a role of :data:`ROLE_CHOICES`) whose class has a
``build(in_chs, scale, neuron, **args)`` classmethod (spikeyolo.nn.blocks / heads / attention). The
names are the package's own table: a layer list (a file's too) never names a Python path. Layer indices
equal the reference model's (layer 0 is the time expansion), so checkpoint keys line up 1:1.

Forward contract:
    input  [B, 3, H, W] float in [0, 1] (repeated over T) or [T, B, C, H, W] (event frames)
    train  -> list of raw head maps [B, 4*reg_max + num_classes, H_l, W_l] (mean over T)
    eval   -> (decoded [B, 4 + num_classes, A], raw maps)

T and D live once, in the model's :class:`~spikeyolo.nn.neurons.SpikeCoding` (``model.coding``), which the
time expansion, the head and every neuron hold by reference: ``model.time_steps = 4`` changes T everywhere.
Every forward starts the neurons from a zero membrane, unless the model is streaming
(``model.streaming()``, :mod:`spikeyolo.nn.protocol`), when it continues from the previous forward's.
"""

from __future__ import annotations

import inspect
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from spikeyolo.nn.attention import TransformerBlock
from spikeyolo.nn.blocks import (SPPF, AllConvBlock, Concat, ConvBlock, DownSampling, Scale, StandardConv, TimeExpand,
                                 Upsample)
from spikeyolo.nn.heads import AnchorFreeHead, SpikingAnchorHead
from spikeyolo.nn.layers import NeuronFactory
from spikeyolo.nn.neurons import SpikeCoding, SpikingNeuron
from spikeyolo.nn.protocol import DetectorMixin

__all__ = ["SpikeYOLO", "LayerSpec", "LAYER_KINDS", "ROLE_CHOICES"]

# The layer kinds a layer list may name (spikeyolo.config.names.LAYER_KINDS: the same names)
LAYER_KINDS: dict[str, type] = {
    "time_expand": TimeExpand, "down_sampling": DownSampling, "standard_conv": StandardConv,
    "all_conv_block": AllConvBlock, "conv_block": ConvBlock, "transformer_block": TransformerBlock, "sppf": SPPF,
    "upsample": Upsample, "concat": Concat, "anchor_free_head": AnchorFreeHead, "anchor_head": SpikingAnchorHead,
}

# Layer roles whose class is a model-level choice (the paper's ablations, Table 5)
ROLE_CHOICES: dict[str, dict[str, type]] = {
    "early_block": {"block1": AllConvBlock, "block2": ConvBlock},
    "late_block": {"conv": ConvBlock, "transformer": TransformerBlock},
    "head": {"anchor_free": AnchorFreeHead, "anchor_based": SpikingAnchorHead},
}


def _sharing(neuron: NeuronFactory, coding: SpikeCoding) -> NeuronFactory:
    """``neuron`` whose every product reads T and D from ``coding`` (the model's one copy)."""
    def build() -> nn.Module:
        made = neuron()
        made.coding = coding
        return made
    return build


class LayerSpec:
    """One parsed entry of the layer list.

    The kind column is a name of :data:`LAYER_KINDS`, or a role name (``early_block``, ``late_block``,
    ``head``) resolved through ``choices`` {role: chosen class}.
    """

    def __init__(self, index: int, spec: Iterable[Any], overrides: Mapping[str, Any] | None = None,
                 choices: Mapping[str, type] | None = None) -> None:
        source, repeats, kind, args = list(spec)
        self.index = index
        self.sources = [int(source)] if isinstance(source, int) else [int(s) for s in source]
        self.repeats = int(repeats)
        choices = choices or {}
        if kind in choices:
            self.cls = choices[kind]
        elif kind in LAYER_KINDS:
            self.cls = LAYER_KINDS[kind]
        else:
            raise ValueError(f"layer {index}: unknown layer kind {str(kind)[:60]!r} (known: {', '.join(LAYER_KINDS)})")
        self.args = dict(args or {})
        if overrides:
            self.args.update(dict(overrides))

    def absolute_sources(self) -> list[int]:
        return [s if s >= 0 else self.index + s for s in self.sources]


class SpikeYOLO(DetectorMixin, nn.Module):
    """SpikeYOLO detector (YOLOv8 macro design, meta SNN blocks, I-LIF neurons, DFL head).

    Implements :class:`~spikeyolo.nn.protocol.DetectorModel`.

    Args:
        layers: the layer list ([from, repeats, class_path, args] per layer); the last layer is the head.
        depth_multiple, width_multiple, max_channels: YOLOv8 scale.
        num_classes: number of classes.
        neuron: zero-argument factory of the spiking neuron (e.g. a partial ILIF); T and D come from it
            (into ``coding``, which every neuron built here then reads).
        block_overrides: per-layer argument overrides {layer index: {arg: value}} (the per-scale
            differences of the reference, e.g. layer 25's mlp_ratio 2 for m and l).
        reg_max: DFL bins.
        in_chs: input channels.
        early_block: ``block1`` (SNN-Block-1, SpikeYOLO) or ``block2`` for the layers of role
            ``early_block`` (Table 5 ablation).
        late_block: ``conv`` (SNN-Block-2) or ``transformer`` (meta Transformer block) for the
            layers of role ``late_block`` (Table 5).
        reparam: False adds neurons inside the separable convs (no re-parameterisation, Table 5).
        head: ``anchor_free`` (DFL, SpikeYOLO) or ``anchor_based`` (Table 5; needs ``anchors``).
        anchors: per output level [w0, h0, w1, h1, ...] in input pixels (anchor-based head).
    """

    def __init__(self, layers: list, depth_multiple: float, width_multiple: float, max_channels: int,
                 num_classes: int, neuron: NeuronFactory, block_overrides: Mapping[Any, Any] | None = None,
                 reg_max: int = 16, in_chs: int = 3, early_block: str = "block1", late_block: str = "conv",
                 reparam: bool = True, head: str = "anchor_free", anchors: list | None = None) -> None:
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        probe = neuron()
        if not isinstance(probe, SpikingNeuron):
            raise TypeError(f"neuron factory must build a SpikingNeuron, got {type(probe).__name__}")
        self.coding = probe.coding  # T and D, shared by reference with every layer that needs them
        neuron = _sharing(neuron, self.coding)
        self.num_classes = int(num_classes)
        self.in_chs = int(in_chs)
        self.scale = Scale(float(depth_multiple), float(width_multiple), int(max_channels))
        overrides = {int(k): v for k, v in (block_overrides or {}).items()}
        context = {"num_classes": self.num_classes, "coding": self.coding, "reg_max": reg_max,
                   "reparam": bool(reparam), "anchors": anchors}
        picked = {"early_block": early_block, "late_block": late_block, "head": head}
        for role, choice in picked.items():
            if choice not in ROLE_CHOICES[role]:
                raise ValueError(f"model.{role}={choice!r} is not one of {', '.join(ROLE_CHOICES[role])}")
        if head == "anchor_based" and not anchors:
            raise ValueError("model.head=anchor_based needs model.anchors (per level [w0, h0, ...] in pixels)")
        choices = {role: ROLE_CHOICES[role][choice] for role, choice in picked.items()}
        self.variant = {**picked, "reparam": bool(reparam)}

        specs = [LayerSpec(i, spec, overrides.get(i), choices) for i, spec in enumerate(layers)]
        channels: list[int] = []
        modules = []
        for spec in specs:
            in_list = [in_chs] if spec.index == 0 else [channels[s] for s in spec.absolute_sources()]
            wanted = inspect.signature(spec.cls.build).parameters
            args = {**{k: v for k, v in context.items() if k in wanted}, **spec.args}
            repeats = self.scale.repeats(spec.repeats)
            built = []
            for _ in range(repeats):
                module, out_chs = spec.cls.build(in_list, self.scale, neuron, **args)
                built.append(module)
            modules.append(built[0] if repeats == 1 else nn.Sequential(*built))
            channels.append(out_chs if out_chs is not None else 0)
        self.layers = nn.ModuleList(modules)
        self.sources = [spec.absolute_sources() for spec in specs]
        # outputs read by a later layer other than through the plain "previous layer" edge
        self.keep = sorted({s for i, srcs in enumerate(self.sources)
                            if i > 0 and (len(srcs) > 1 or srcs[0] != i - 1) for s in srcs})
        self.channels = channels
        self._initialise()

    # ------------------------------------------------------------------ setup

    def _initialise(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eps = 1e-3
                module.momentum = 0.03
        was_training = self.training
        # on the meta device (spikeyolo.models' size check: shapes only) the train-mode forward, which returns the
        # maps without decoding them (decoding reads values); else eval mode, which leaves the BN statistics alone
        meta = any(p.is_meta for p in self.parameters())
        self.train(meta)
        with torch.no_grad():
            out = self.forward(torch.zeros(1, self.in_chs, 64, 64))
        maps = out if meta else out[1]
        self.train(was_training)
        self.head.stride.copy_(torch.tensor([64.0 / m.shape[-2] for m in maps]))
        self.head.init_biases()

    @property
    def head(self) -> nn.Module:
        """The detection head (the last layer)."""
        return self.layers[-1]

    @property
    def time_steps(self) -> int:
        """T (``coding.time_steps``); setting it changes T of the time expansion, the head and every neuron."""
        return self.coding.time_steps

    @time_steps.setter
    def time_steps(self, value: int) -> None:
        self.coding.time_steps = value

    @property
    def max_level(self) -> int:
        """D (``coding.max_level``): the largest integer a neuron emits; 0 for the ReLU twin."""
        return self.coding.max_level

    # ------------------------------------------------------------------ forward

    def forward(self, images: torch.Tensor):
        """Run the detector; see the module docstring for the contract."""
        kept: dict[int, torch.Tensor] = {}
        x = images
        keep = set(self.keep)
        for index, layer in enumerate(self.layers):
            sources = self.sources[index]
            if index > 0 and (len(sources) > 1 or sources[0] != index - 1):
                inputs = [x if s == index - 1 else kept[s] for s in sources]
                x = inputs if len(inputs) > 1 else inputs[0]
            x = layer(x)
            if index in keep:
                kept[index] = x
        return x

    def build_loss(self, **gains: float):
        """The training loss of this detector's head: ``loss(raw_maps, batch) -> {..., total}``.

        ``gains`` are the trainer's loss settings (box/cls/dfl/tal_topk for the anchor-free head,
        anchor_box/anchor_obj/anchor_cls for the anchor-based one); each head takes its own.
        """
        return self.head.build_loss(**gains)

    # ------------------------------------------------------------------ info

    def neurons(self) -> list[tuple[str, SpikingNeuron]]:
        """All spiking neurons with their qualified names."""
        return [(name, m) for name, m in self.named_modules() if isinstance(m, SpikingNeuron)]
