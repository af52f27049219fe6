"""The rest of the network: what runs after the NIR stages, as a small weights-only program beside the .nir files.

SpikeYOLO: the layers from the cut on (SPPF's max-pooling, the neck, the head, the mean over T, the DFL decoding),
compiled from the spike-driven model into a list of operations on named tensors (neuron, conv, add, max-pool,
upsample, concat, mean over T, decode) and the tensors they read. Each neuron runs on the folded integer path,
conv(S) + bias, which equals the spike-driven binary path bit for bit on fixed-point weights (docs/spike-driven.md).

Spiking-YOLO: the gated spiking max-pools between the NIR stages (:meth:`RestOfNetwork.glue`, one step at a time)
and the output neuron with its decoding (vmem or spike) and the anchor head's box decoding.

The file is ``torch.save`` of plain dicts, lists, numbers, strings and tensors, read back with
``torch.load(weights_only=True)``: nothing in it is executed.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spikeyolo.conversion.converter import SpikingConv, SpikingMaxPool, SpikingNetwork
from spikeyolo.conversion.neurons import ConversionNeuron
from spikeyolo.deploy.export import OnnxILIF
from spikeyolo.deploy.spike_driven import SpikeDrivenConv, SpikeDrivenMetaBlock
from spikeyolo.errors import ExportError
from spikeyolo.nn.anchor_head import AnchorHead
from spikeyolo.nn.blocks import SPPF, Concat, Upsample
from spikeyolo.nn.heads import AnchorFreeHead, SpikingAnchorHead
from spikeyolo.nn.neurons import ReLUNeuron, SpikeCoding

__all__ = ["FORMAT", "RestOfNetwork", "compile_spikeyolo_rest", "compile_spiking_yolo_rest"]

FORMAT = "spikeyolo-nir-rest"
VERSION = 1
_PADS = {"ReplicationPad2d": nn.ReplicationPad2d, "ZeroPad2d": nn.ZeroPad2d, "ConstantPad2d": nn.ConstantPad2d,
         "ReflectionPad2d": nn.ReflectionPad2d}


class _Compiler:
    """Emits the operations of the spike-driven modules after the cut."""

    def __init__(self) -> None:
        self.ops: list[dict[str, Any]] = []
        self.tensors: dict[str, torch.Tensor] = {}

    def name(self, what: str) -> str:
        return f"t{len(self.ops)}_{what}"

    def op(self, kind: str, inputs: list[str], **args: Any) -> str:
        out = self.name(kind)
        self.ops.append({"op": kind, "inputs": list(inputs), "output": out, **args})
        return out

    def emit(self, module: nn.Module, x: str) -> str:
        if isinstance(module, SpikeDrivenConv):
            neuron = module.neuron
            spikes = self.op("neuron", [x], time_steps=neuron.time_steps, max_level=neuron.max_level,
                             decay=float(neuron.step_decay), charge=neuron.charge,
                             tau=None if neuron.lif_tau is None else float(neuron.lif_tau))
            key = f"w{len(self.tensors)}"
            self.tensors[f"{key}.weight"] = module.conv.weight.detach().clone()
            self.tensors[f"{key}.bias"] = module.bias.detach().clone()
            conv = module.conv
            return self.op("conv", [spikes], key=key, stride=conv.stride[0], padding=conv.padding[0], groups=conv.groups)
        if isinstance(module, SpikeDrivenMetaBlock):
            mixed = self.op("add", [x, self.emit(module.token_mixer, x)])  # Eq. 2
            return self.op("add", [mixed, self.emit(module.channel_mixer, mixed)])  # Eq. 3
        if isinstance(module, nn.Sequential):
            for child in module.children():
                x = self.emit(child, x)
            return x
        if isinstance(module, SPPF):
            return self.sppf_tail(module, self.emit(module.reduce, x))
        if isinstance(module, Upsample):
            return self.op("upsample", [x], scale_factor=int(module.scale_factor))
        raise ExportError(f"the rest of the network has no mapping for {type(module).__name__}")

    def sppf_tail(self, sppf: SPPF, reduced: str) -> str:
        pool = sppf.pool
        pooled = [reduced]
        for _ in range(3):
            pooled.append(self.op("maxpool", [pooled[-1]], kernel=int(pool.kernel_size), stride=int(pool.stride),
                                  padding=int(pool.padding)))
        return self.emit(sppf.fuse, self.op("concat", pooled))


def compile_spikeyolo_rest(spike_model: nn.Module, plan: Any) -> dict[str, Any]:
    """The rest-of-network program of a spike-driven SpikeYOLO after ``plan.cut`` (a StagePlan)."""
    compiler = _Compiler()
    layers, sources = list(spike_model.layers), spike_model.sources
    values: dict[int, str] = {}
    inputs = []
    for stage, output in zip(plan.stages, plan.outputs):
        name = f"stage{len(inputs)}"
        inputs.append(name)
        values[stage[-1] if stage else -1] = name
    start = plan.cut
    if plan.sppf_partial:
        values[plan.cut] = compiler.sppf_tail(layers[plan.cut], inputs[-1])
        start += 1
    for index in range(start, len(layers) - 1):
        layer = layers[index]
        names = [values[s] for s in sources[index]]
        values[index] = (compiler.op("concat", names) if isinstance(layer, Concat)
                         else compiler.emit(layer, names[0]))
    head = layers[-1]
    feats = [values[s] for s in sources[-1]]
    maps = []
    if isinstance(head, AnchorFreeHead):
        for level, x in enumerate(feats):
            both = compiler.op("concat", [compiler.emit(head.box_branches[level], x),
                                          compiler.emit(head.cls_branches[level], x)])
            maps.append(compiler.op("mean_steps", [both], time_steps=spike_model.time_steps))
        decode = {"kind": "anchor_free", "in_chs": [int(spike_model.channels[s]) for s in sources[-1]],
                  "num_classes": int(head.num_classes), "reg_max": int(head.reg_max)}
    elif isinstance(head, SpikingAnchorHead):
        for level, x in enumerate(feats):
            maps.append(compiler.op("mean_steps", [compiler.emit(head.pred[level], x)],
                                    time_steps=spike_model.time_steps))
        decode = _anchor_decode(head, [int(spike_model.channels[s]) for s in sources[-1]])
    else:
        raise ExportError(f"the rest of the network has no mapping for the head {type(head).__name__}")
    decode["strides"] = [float(s) for s in head.stride.tolist()]
    return {"format": FORMAT, "version": VERSION, "family": "spikeyolo", "inputs": inputs, "ops": compiler.ops,
            "maps": maps, "decode": decode, "tensors": compiler.tensors}


def _anchor_decode(head: AnchorHead, in_chs: list[int]) -> dict[str, Any]:
    anchors = head.anchors.detach().view(len(in_chs), -1).tolist()
    return {"kind": "anchor", "in_chs": in_chs, "num_classes": int(head.num_classes), "anchors": anchors}


def compile_spiking_yolo_rest(network: SpikingNetwork, head: AnchorHead, stage_layers: list[list[int]]) -> dict:
    """The glue (gated max-pools after each stage) and the output decoding of a converted Spiking-YOLO."""
    glue = []
    for stage in stage_layers:
        pools = []
        for layer in network.layers[stage[-1] + 1:]:
            if isinstance(layer, SpikingConv):
                break
            pool, pad = layer.pool, layer.pad
            pad_spec = None if isinstance(pad, nn.Identity) else {
                "type": type(pad).__name__, "padding": [int(p) for p in pad.padding],
                **({"value": float(pad.value)} if hasattr(pad, "value") else {})}
            pools.append({"kernel": _pair(pool.kernel_size), "stride": _pair(pool.stride),
                          "padding": _pair(pool.padding), "pad": pad_spec})
        glue.append(pools)
    neuron = network.output_neuron
    decode = _anchor_decode(head, [int(network.layers[-1].conv.out_channels)])
    decode["strides"] = [float(s) for s in head.stride.tolist()]
    return {"format": FORMAT, "version": VERSION, "family": "spiking_yolo", "glue": glue,
            "output_neuron": {"v_threshold": neuron.v_threshold, "v_threshold_neg": neuron.v_threshold_neg},
            "decoding": network.decoding, "decode": decode,
            "tensors": {"output_scale": network.output_scale.detach().clone()}}


def _pair(value: Any) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (tuple, list)) else [int(value), int(value)]


class RestOfNetwork:
    """Runs a compiled rest-of-network program (see the module docstring).

    Args:
        program: the dict :func:`compile_spikeyolo_rest` / :func:`compile_spiking_yolo_rest` made (or read back).
    """

    def __init__(self, program: dict[str, Any]) -> None:
        if program.get("format") != FORMAT or int(program.get("version", 0)) != VERSION:
            raise ExportError(f"not a {FORMAT} v{VERSION} program")
        self.program = program
        self.family = program["family"]
        self.tensors = program["tensors"]
        self._pools: list[list[SpikingMaxPool]] = []
        self.reset()

    def reset(self) -> None:
        """Forget the gated max-pools' spike counts (Spiking-YOLO; call before each new input)."""
        self._pools = [[self._pool(spec) for spec in pools] for pools in self.program.get("glue", [])]

    @staticmethod
    def _pool(spec: dict[str, Any]) -> SpikingMaxPool:
        pad = None
        if spec["pad"] is not None:
            pad_type = _PADS[spec["pad"]["type"]]
            args = [tuple(spec["pad"]["padding"])] + ([spec["pad"]["value"]] if "value" in spec["pad"] else [])
            pad = pad_type(*args)
        return SpikingMaxPool(nn.MaxPool2d(tuple(spec["kernel"]), tuple(spec["stride"]), tuple(spec["padding"])), pad)

    def glue(self, stage: int, x: torch.Tensor) -> torch.Tensor:
        """One step of what sits between stage ``stage`` and the next: the identity (SpikeYOLO) or the gated
        spiking max-pools (Spiking-YOLO), x [B, C, H, W]."""
        for pool in self._pools[stage] if self._pools else []:
            x = pool(x.unsqueeze(0))[0]  # [B, C, H, W] -> [1, B, C, H, W] -> [B, C', H', W']
        return x

    def _decoder(self) -> nn.Module:
        spec = self.program["decode"]
        if spec["kind"] == "anchor_free":
            head = AnchorFreeHead(spec["in_chs"], spec["num_classes"], ReLUNeuron, SpikeCoding(1, 0), spec["reg_max"])
        else:
            head = AnchorHead(spec["in_chs"], spec["num_classes"], spec["anchors"])
        head.stride.copy_(torch.tensor(spec["strides"]))
        return head.eval()

    @torch.no_grad()
    def __call__(self, outputs: list[list[torch.Tensor]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Detections from the NIR stages' outputs.

        Args:
            outputs: per stage, its output at each consumer step, [B, C, H, W] each (T steps).

        Returns:
            (decoded [B, 4 + num_classes, A], raw maps), the model's eval contract.
        """
        if self.family == "spiking_yolo":
            return self._spiking_yolo(outputs[-1])
        # T steps of [B, C, H, W] -> [T*B, C, H, W] (time-major)
        values = {name: torch.cat(steps) for name, steps in zip(self.program["inputs"], outputs)}
        for op in self.program["ops"]:
            values[op["output"]] = self._run(op, [values[name] for name in op["inputs"]])
        maps = [values[name] for name in self.program["maps"]]
        return self._decoder().decode(maps), maps

    def _run(self, op: dict[str, Any], inputs: list[torch.Tensor]) -> torch.Tensor:
        kind, x = op["op"], inputs[0]
        if kind == "neuron":
            neuron = OnnxILIF(op["time_steps"], op["max_level"], op["decay"], op["charge"], op["tau"])
            return neuron(x)
        if kind == "conv":
            weight = self.tensors[f"{op['key']}.weight"].to(x.dtype)
            bias = self.tensors[f"{op['key']}.bias"].to(x.dtype)
            return F.conv2d(x, weight, None, op["stride"], op["padding"], 1, op["groups"]) + bias.view(1, -1, 1, 1)
        if kind == "add":
            return inputs[0] + inputs[1]
        if kind == "concat":
            return torch.cat(inputs, 1)
        if kind == "maxpool":
            return F.max_pool2d(x, op["kernel"], op["stride"], op["padding"])
        if kind == "upsample":
            return F.interpolate(x, scale_factor=op["scale_factor"], mode="nearest")
        if kind == "mean_steps":
            # [T*B, C, H, W] -> [T, B, C, H, W] -> mean over T
            return x.view(op["time_steps"], -1, *x.shape[1:]).mean(0)
        raise ExportError(f"unknown rest-of-network operation {kind!r}")

    def _spiking_yolo(self, currents: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        spec = self.program["output_neuron"]
        neuron = ConversionNeuron(spec["v_threshold"], spec["v_threshold_neg"])
        neuron(torch.stack(currents))  # [T, B, C, H, W]: the output layer's neuron over the T steps
        rate = neuron.vmem_rate() if self.program["decoding"] == "vmem" else neuron.rate()
        raw = rate * self.tensors["output_scale"].to(rate.dtype).view(1, -1, 1, 1)
        return self._decoder().decode([raw]), [raw]
