"""The converted Spiking-YOLO as NIR stages: one stage per conv, one consumer time step per simulation step.

A hidden layer of :class:`~spikeyolo.conversion.converter.SpikingConv` (conv, then an integrate-and-fire neuron
with reset by subtraction: IF, the symmetric signed neuron or IBT, Eq. 1, 3, 7 of seed 001):

    U[t] = conv(x[t]) + V[t-1]                          (V[-1] = 0)
    pos  = [U >= Vth],  neg = [U < -Vth_neg]            (no neg for the IF neuron)
    V[t] = U[t] - Vth * pos + Vth_neg * neg,  spike = pos - neg in {-1, 0, +1}

is written as (channel layout [C, 2]: c*2 + 0 positive, c*2 + 1 negative):

    conv       Conv2d, the normalised weights (a spike of the previous layer stands for its Vth, already inside)
    potential  Conv2d 1x1 identity, groups C: U = conv + itself one step earlier + reset   (two recurrent edges)
    membrane   Conv2d 1x1, groups C, C -> 2C: [U - Vth', -U - Vth_neg'], Vth' one float32 ulp below Vth and
               Vth_neg' one above Vth_neg, so "> 0" (NIR) and ">= 0" (sinabs) both give U >= Vth and U < -Vth_neg
               wherever U is not exactly one of those two floats
    fire       LIF (tau = DT, memoryless, v_threshold 0): [pos, neg]
    reset      Conv2d 1x1 from fire, 2C -> C: -Vth * pos + Vth_neg * neg   (recurrent into potential)
    spikes     Conv2d 1x1 from fire, 2C -> C: pos - neg   (the stage's Output)

``nir.IF`` would be the natural node, but no consumer runs it with reset by subtraction (graph.py). The integration
is explicit instead, so the membrane is exactly the project's at every step wherever the float sums are exact.

The gated spiking max-pool (Rueckauer et al. 2017: pass the spike of the input with the largest accumulated count)
has no NIR node: it ends a stage, and the rest of the network runs it between stages, one step at a time
(``RestOfNetwork.glue``). The last stage is the output layer's conv; its neuron and the decoding (vmem / spike,
then the anchor boxes) are in the rest of the network.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from spikeyolo.conversion.converter import SpikingConv, SpikingNetwork
from spikeyolo.conversion.neurons import ConversionNeuron
from spikeyolo.deploy.nir.graph import StageGraph

__all__ = ["spiking_stage_layers", "build_spiking_stages"]


def spiking_stage_layers(network: SpikingNetwork) -> list[list[int]]:
    """Layer indices of each stage: one SpikingConv each (the max-pools between them are glue)."""
    return [[index] for index, layer in enumerate(network.layers) if isinstance(layer, SpikingConv)]


def _record_shapes(network: SpikingNetwork, imgsz: int, in_chs: int) -> dict[int, tuple[tuple, tuple]]:
    """layer index -> ([C, H, W] in, [C, H, W] out) of every SpikingConv, from one simulated step."""
    shapes: dict[int, tuple[tuple, tuple]] = {}
    handles = [layer.conv.register_forward_hook(
        lambda _m, args, out, index=index: shapes.__setitem__(index, (tuple(args[0].shape[1:]), tuple(out.shape[1:]))))
        for index, layer in enumerate(network.layers) if isinstance(layer, SpikingConv)]
    try:
        network.simulate(torch.zeros(1, in_chs, imgsz, imgsz, dtype=network.output_scale.dtype), [1])
    finally:
        for handle in handles:
            handle.remove()
        network.reset()
    return shapes


def _neuron(graph: StageGraph, neuron: ConversionNeuron, shape: tuple[int, ...], current: str) -> str:
    chs, height, width = shape
    hw = (height, width)
    signed = neuron.v_threshold_neg is not None
    sides = 2 if signed else 1
    potential = graph.conv("potential", np.ones((chs, 1, 1, 1)), np.zeros(chs), chs, hw, [current])
    vth = np.nextafter(np.float32(neuron.v_threshold), np.float32(-np.inf))
    weight, bias = np.ones((chs, sides, 1, 1, 1)), np.full((chs, sides), -float(vth))
    if signed:
        weight[:, 1] = -1.0
        bias[:, 1] = -float(np.nextafter(np.float32(neuron.v_threshold_neg), np.float32(np.inf)))
    membrane = graph.conv("membrane", weight.reshape(chs * sides, 1, 1, 1), bias.reshape(-1), chs, hw, [potential])
    fire = graph.fire("fire", (chs * sides, height, width), 0.0, [membrane])
    reset_weight = np.full((chs, sides, 1, 1), -neuron.v_threshold)
    if signed:
        reset_weight[:, 1] = neuron.v_threshold_neg
    reset = graph.conv("reset", reset_weight, np.zeros(chs), chs, hw, [fire])
    graph.recurrent(potential, potential)
    graph.recurrent(reset, potential)
    if not signed:
        return fire
    return graph.conv("spikes", np.tile(np.array([[1.0], [-1.0]]), (chs, 1)).reshape(chs, 2, 1, 1), np.zeros(chs),
                      chs, hw, [fire])


def build_spiking_stages(network: SpikingNetwork, imgsz: int, in_chs: int, groups: str, typed: bool) -> list:
    """One :class:`StageGraph` per SpikingConv of ``network`` (see the module docstring)."""
    shapes = _record_shapes(network, imgsz, in_chs)
    graphs = []
    stages = spiking_stage_layers(network)
    for number, (index,) in enumerate(stages):
        layer = network.layers[index]
        in_shape, out_shape = shapes[index]
        graph = StageGraph(groups=groups, typed=typed)
        conv = layer.conv
        bias = conv.bias.detach().double().numpy() if conv.bias is not None else np.zeros(conv.out_channels)
        current = graph.conv("conv", conv.weight.detach().double().numpy(), bias, conv.groups, in_shape[1:],
                             [graph.input(in_shape)], conv.stride[0], conv.padding[0])
        last = number == len(stages) - 1
        out = current if last else _neuron(graph, layer.neuron, out_shape, current)
        graph.output(out_shape, out)
        graphs.append(graph)
    return graphs


def is_converted(module: nn.Module) -> bool:
    return isinstance(getattr(module, "network", None), SpikingNetwork)
