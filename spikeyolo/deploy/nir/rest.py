"""The rest of the network: what runs between and after the NIR stages, as a weights-only program beside them.

A program holds a **schedule**, the per-step order of the stages and of the glue between them, and a **finish**,
what turns the per-step values into the model's ``(decoded, maps)``:

- SpikeYOLO: glue ``concat`` (channel concatenation), ``upsample`` (nearest) and ``sppf_pool`` (SPPF's three
  chained max-pools of real values and their concatenation), each on one step's [B, C, H, W] values; the finish
  concatenates each head level's box and class maps, takes the mean over T and decodes (DFL, anchor points).
- Spiking-YOLO: glue ``gated_pool``, the gated spiking max-pool (stateful: it counts the spikes it has seen); the
  finish runs the output layer's neuron over the T currents of the last stage and decodes (vmem or spike, then the
  anchor boxes).

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
from spikeyolo.errors import ExportError
from spikeyolo.nn.anchor_head import AnchorHead
from spikeyolo.nn.heads import AnchorFreeHead
from spikeyolo.nn.neurons import ReLUNeuron, SpikeCoding

__all__ = ["FORMAT", "RestOfNetwork", "spiking_yolo_program", "spikeyolo_program"]

FORMAT = "spikeyolo-nir-rest"
VERSION = 1
_PADS = {"ReplicationPad2d": nn.ReplicationPad2d, "ZeroPad2d": nn.ZeroPad2d, "ConstantPad2d": nn.ConstantPad2d,
         "ReflectionPad2d": nn.ReflectionPad2d}


def spikeyolo_program(spike_model: nn.Module, plan: Any) -> dict[str, Any]:
    """The rest-of-network program of a spike-driven SpikeYOLO for ``plan`` (a spikeyolo_stages.StagePlan)."""
    head = spike_model.layers[-1]
    in_chs = [int(spike_model.channels[s]) for s in spike_model.sources[-1]]
    if isinstance(head, AnchorFreeHead):
        decode = {"kind": "anchor_free", "in_chs": in_chs, "num_classes": int(head.num_classes),
                  "reg_max": int(head.reg_max)}
    else:
        decode = _anchor_decode(head, in_chs)
    decode["strides"] = [float(s) for s in head.stride.tolist()]
    return {"format": FORMAT, "version": VERSION, "family": "spikeyolo", "schedule": plan.schedule(),
            "finish": {"maps": plan.head}, "decode": decode, "tensors": {}}


def _anchor_decode(head: AnchorHead, in_chs: list[int]) -> dict[str, Any]:
    anchors = head.anchors.detach().view(len(in_chs), -1).tolist()
    return {"kind": "anchor", "in_chs": in_chs, "num_classes": int(head.num_classes), "anchors": anchors}


def spiking_yolo_program(network: SpikingNetwork, head: AnchorHead, stage_layers: list[list[int]]) -> dict:
    """The glue (gated max-pools after each stage) and the output decoding of a converted Spiking-YOLO."""
    schedule: list[dict[str, Any]] = []
    pools: list[dict[str, Any]] = []
    value = "images"
    for number, stage in enumerate(stage_layers):
        schedule.append({"stage": number, "input": value, "output": f"stage{number}"})
        value = f"stage{number}"
        for layer in network.layers[stage[-1] + 1:]:
            if isinstance(layer, SpikingConv):
                break
            pool, pad = layer.pool, layer.pad
            pad_spec = None if isinstance(pad, nn.Identity) else {
                "type": type(pad).__name__, "padding": [int(p) for p in pad.padding],
                **({"value": float(pad.value)} if hasattr(pad, "value") else {})}
            pools.append({"kernel": _pair(pool.kernel_size), "stride": _pair(pool.stride),
                          "padding": _pair(pool.padding), "pad": pad_spec})
            schedule.append({"op": "gated_pool", "index": len(pools) - 1, "inputs": [value],
                             "output": f"pool{len(pools) - 1}"})
            value = f"pool{len(pools) - 1}"
    neuron = network.output_neuron
    decode = _anchor_decode(head, [int(network.layers[-1].conv.out_channels)])
    decode["strides"] = [float(s) for s in head.stride.tolist()]
    return {"format": FORMAT, "version": VERSION, "family": "spiking_yolo", "schedule": schedule, "pools": pools,
            "finish": {"current": value, "decoding": network.decoding,
                       "v_threshold": neuron.v_threshold, "v_threshold_neg": neuron.v_threshold_neg},
            "decode": decode, "tensors": {"output_scale": network.output_scale.detach().clone()}}


def _pair(value: Any) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (tuple, list)) else [int(value), int(value)]


class RestOfNetwork:
    """Runs a rest-of-network program (see the module docstring).

    Args:
        program: the dict :func:`spikeyolo_program` / :func:`spiking_yolo_program` made (or read back).
    """

    def __init__(self, program: dict[str, Any]) -> None:
        if program.get("format") != FORMAT or int(program.get("version", 0)) != VERSION:
            raise ExportError(f"not a {FORMAT} v{VERSION} program")
        self.program = program
        self.family = program["family"]
        self.tensors = program["tensors"]
        self._pools: list[SpikingMaxPool] = []
        self.reset()

    @property
    def schedule(self) -> list[dict[str, Any]]:
        """Per step, in order: ``{"stage": k, "input", "output"}`` (run stage k) or a glue op."""
        return self.program["schedule"]

    @property
    def kept(self) -> list[str]:
        """The values :meth:`finish` reads at every step."""
        finish = self.program["finish"]
        return [name for level in finish["maps"] for name in level] if "maps" in finish else [finish["current"]]

    def reset(self) -> None:
        """Forget the gated max-pools' spike counts (Spiking-YOLO); ``NirBundle.run`` calls it for each input."""
        self._pools = [self._pool(spec) for spec in self.program.get("pools", [])]

    @staticmethod
    def _pool(spec: dict[str, Any]) -> SpikingMaxPool:
        pad = None
        if spec["pad"] is not None:
            args = [tuple(spec["pad"]["padding"])] + ([spec["pad"]["value"]] if "value" in spec["pad"] else [])
            pad = _PADS[spec["pad"]["type"]](*args)
        return SpikingMaxPool(nn.MaxPool2d(tuple(spec["kernel"]), tuple(spec["stride"]), tuple(spec["padding"])), pad)

    @torch.no_grad()
    def glue(self, op: dict[str, Any], inputs: list[torch.Tensor]) -> torch.Tensor:
        """One step of a glue op on [B, C, H, W] values."""
        kind, x = op["op"], inputs[0]
        if kind == "concat":
            return torch.cat(inputs, 1)
        if kind == "upsample":
            return F.interpolate(x, scale_factor=op["scale_factor"], mode="nearest")
        if kind == "sppf_pool":
            pooled = [x]
            for _ in range(3):
                pooled.append(F.max_pool2d(pooled[-1], op["kernel"], op["stride"], op["padding"]))
            return torch.cat(pooled, 1)
        if kind == "gated_pool":
            return self._pools[op["index"]](x.unsqueeze(0))[0]  # [B, C, H, W] -> [1, B, C, H, W] -> [B, C', H', W']
        raise ExportError(f"unknown rest-of-network operation {kind!r}")

    def _decoder(self) -> nn.Module:
        spec = self.program["decode"]
        if spec["kind"] == "anchor_free":
            head = AnchorFreeHead(spec["in_chs"], spec["num_classes"], ReLUNeuron, SpikeCoding(1, 0), spec["reg_max"])
        else:
            head = AnchorHead(spec["in_chs"], spec["num_classes"], spec["anchors"])
        head.stride.copy_(torch.tensor(spec["strides"]))
        return head.eval()

    @torch.no_grad()
    def finish(self, steps: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Detections from the kept values of every step (``kept``); returns (decoded [B, 4 + C, A], raw maps)."""
        finish = self.program["finish"]
        if self.family == "spiking_yolo":
            neuron = ConversionNeuron(finish["v_threshold"], finish["v_threshold_neg"])
            neuron(torch.stack([step[finish["current"]] for step in steps]))  # [T, B, C, H, W]: the output neuron
            rate = neuron.vmem_rate() if finish["decoding"] == "vmem" else neuron.rate()
            maps = [rate * self.tensors["output_scale"].to(rate.dtype).view(1, -1, 1, 1)]
        else:
            # per level: T steps of cat(box, cls) [B, no, H, W] -> [T, B, no, H, W] -> mean over T
            maps = [torch.stack([torch.cat([step[name] for name in level], 1) for step in steps]).mean(0)
                    for level in finish["maps"]]
        return self._decoder().decode(maps), maps
