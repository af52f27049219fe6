"""Meta Transformer-based SNN block (Meta-SpikeFormer style), the ``late_block=transformer`` ablation.

SpikeYOLO's Table 5 replaces the high-stage SNN-Block-2 by a Transformer-based meta block:

    x = x + SepConv(x)                 token mixer 1 (Eq. 2, as in the conv blocks)
    x = x + SDSA(x)                    spike-driven self-attention (linear, no softmax)
    x = x + MLP(x)                     channel mixer: spiking 1x1 C -> rC -> C

SDSA: Q, K, V = BN(Conv1x1(N(x))) each followed by a neuron (spikes); per head
out = Q (K^T V) * scale (spike-driven: K^T V of spikes is an integer count matrix),
then a neuron, a 1x1 projection and BN.
"""

from __future__ import annotations

import torch
from torch import nn

from spikeyolo.nn.blocks import Scale
from spikeyolo.nn.layers import NeuronFactory, SepConv, SpikeConv

__all__ = ["SpikeSelfAttention", "TransformerBlock"]


class SpikeSelfAttention(nn.Module):
    """Spike-driven linear self-attention over the H*W positions.

    Args:
        chs: channels C (divisible by num_heads).
        neuron: neuron factory.
        num_heads: attention heads.
    """

    def __init__(self, chs: int, neuron: NeuronFactory, num_heads: int = 8) -> None:
        super().__init__()
        self.num_heads = max(1, min(num_heads, chs))
        while chs % self.num_heads:
            self.num_heads -= 1
        self.scale = (chs // self.num_heads) ** -0.5
        self.query = SpikeConv(chs, chs, neuron, 1)
        self.key = SpikeConv(chs, chs, neuron, 1)
        self.value = SpikeConv(chs, chs, neuron, 1)
        self.q_neuron, self.k_neuron, self.v_neuron = neuron(), neuron(), neuron()
        self.attn_neuron = neuron()
        self.proj = SpikeConv(chs, chs, neuron, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, chs, height, width = x.shape
        heads = self.num_heads

        def split(t: torch.Tensor) -> torch.Tensor:
            # [TB, C, H, W] -> [TB, heads, H*W, C/heads]
            return t.view(batch, heads, chs // heads, height * width).transpose(2, 3)

        q = split(self.q_neuron(self.query(x)))
        k = split(self.k_neuron(self.key(x)))
        v = split(self.v_neuron(self.value(x)))
        context = k.transpose(2, 3) @ v                     # [TB, heads, C/h, C/h]
        out = (q @ context) * self.scale                    # [TB, heads, H*W, C/h]
        out = out.transpose(2, 3).reshape(batch, chs, height, width)
        return self.proj(self.attn_neuron(out))


class TransformerBlock(nn.Module):
    """Meta Transformer-based SNN block (SepConv, spike-driven self-attention, spiking MLP).

    Args:
        chs: channels C.
        neuron: neuron factory.
        mlp_ratio: MLP expansion r.
        kernel_size: SepConv depthwise kernel.
        num_heads: attention heads.
        reparam: passed to the SepConv (Table 5 ablation).
    """

    def __init__(self, chs: int, neuron: NeuronFactory, mlp_ratio: float = 4, kernel_size: int = 7,
                 num_heads: int = 8, reparam: bool = True) -> None:
        super().__init__()
        hidden = int(chs * mlp_ratio)
        self.token_mixer = SepConv(chs, neuron, kernel_size, reparam=reparam)
        self.attention = SpikeSelfAttention(chs, neuron, num_heads)
        self.mlp_in = SpikeConv(chs, hidden, neuron, 1)
        self.mlp_out = SpikeConv(hidden, chs, neuron, 1)

    @classmethod
    def build(cls, in_chs: list[int], scale: Scale, neuron: NeuronFactory, mlp_ratio: float = 4,
              kernel_size: int = 7, num_heads: int = 8, reparam: bool = True):
        return cls(in_chs[0], neuron, mlp_ratio, kernel_size, num_heads, reparam), in_chs[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token_mixer(x)
        x = x + self.attention(x)
        return x + self.mlp_out(self.mlp_in(x))
