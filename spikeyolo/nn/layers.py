"""Convolution units of SpikeYOLO: BN-and-pad, RepConv, SepRepConv, SepConv, spiking convs.

All modules take flat [T*B, C, H, W] tensors (see neurons.py). A ``neuron``
argument is a zero-argument factory returning a fresh spiking neuron.
Residual additions happen on real-valued (post-BN) tensors; only neurons turn
them into spikes, so every conv that follows a neuron sees integer input in
{0..D} (binary after the spike-driven expansion).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

NeuronFactory = Callable[[], nn.Module]

__all__ = ["NeuronFactory", "BNAndPad", "DepthwiseConv2d", "RepConv", "SepRepConv", "SepConv", "SpikeConv",
           "SpikeConvOut", "bn_fold"]


class _DepthwiseCPU(torch.autograd.Function):
    """Stride-1 depthwise conv whose backward is two more *forward* convs (fast on CPU).

    PyTorch's CPU backward of a depthwise conv on NCHW tensors is 10-60x slower than its forward
    (scripts/profile_train_step.py: 13 % of a SpikeYOLO-s training step at 640). Both gradients are
    convolutions themselves:

        dL/dx = conv(dL/dy, flip(W), padding k - 1 - p, groups C)        (transposed stride-1 conv)
        dL/dW[c] = sum_b conv(x_pad[b, c], dL/dy[b, c])                   (one group per (c, b) pair)

    computed as a depthwise conv with flipped kernels and one with B*C groups whose "kernels" are the
    output gradients. Same values as autograd's up to float summation order (tested).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return F.conv2d(x, weight, None, 1, padding, 1, weight.shape[0])

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        pad, chs, kernel = ctx.padding, weight.shape[0], weight.shape[-1]
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv2d(grad_out, weight.flip(-1, -2), None, 1, kernel - 1 - pad, 1, chs)
        if ctx.needs_input_grad[1]:
            batch, height, width = x.shape[0], x.shape[2], x.shape[3]
            inputs = x.transpose(0, 1).reshape(1, chs * batch, height, width)              # [1, C*B, H, W]
            kernels = grad_out.transpose(0, 1).reshape(chs * batch, 1, *grad_out.shape[2:])  # [C*B, 1, H', W']
            grad_w = F.conv2d(inputs, kernels, None, 1, pad, 1, chs * batch)             # [1, C*B, k, k]
            grad_w = grad_w.view(chs, batch, kernel, kernel).sum(1, keepdim=True)
        return grad_x, grad_w, None


class DepthwiseConv2d(nn.Conv2d):
    """nn.Conv2d with groups = channels, stride 1, no bias, square kernel: the token mixers' dw convs.

    Same parameters and state_dict keys as nn.Conv2d (and it is one, for folding, counting and export);
    when training on CPU its backward runs as forward convolutions (:class:`_DepthwiseCPU`).
    """

    def __init__(self, chs: int, kernel_size: int, padding: int) -> None:
        super().__init__(chs, chs, kernel_size, padding=padding, groups=chs, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type == "cpu" and torch.is_grad_enabled() and not torch.jit.is_tracing()
                and x.dtype in (torch.float32, torch.float64) and x.is_contiguous()):
            return _DepthwiseCPU.apply(x, self.weight, self.padding[0])
        return super().forward(x)


def bn_fold(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, shift) of a BatchNorm under its running statistics: y = scale * x + shift."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    return scale, shift


class BNAndPad(nn.Module):
    """BatchNorm, then a 1-pixel border whose value per channel is BN(0) under running stats.

    The border equals beta - mu * gamma / sqrt(var + eps) with gamma and beta detached,
    in training mode too (reference facts, section 3). With it, 1x1 -> BNAndPad ->
    depthwise 3x3 (padding 0) equals one zero-padded 3x3 conv plus a constant.
    The output is BN(x) unchanged inside a ring of border values (no arithmetic on the interior),
    so float32 results equal the reference's pad-then-overwrite bit for bit
    (tests/test_reference_parity.py).

    Args:
        num_chs: channels.
        pad: border width (1).
    """

    def __init__(self, num_chs: int, pad: int = 1) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(num_chs)
        self.pad = pad

    def pad_values(self) -> torch.Tensor:
        """[C] the border value BN(0) under running statistics (detached)."""
        bn = self.bn
        return (bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(x)
        if self.pad == 0:
            return out
        batch, chs, height, width = out.shape
        pad = self.pad
        border = self.pad_values().to(out.dtype).view(1, chs, 1, 1)
        # The interior is BN(x) bit for bit and the ring is the border value, as the reference's
        # pad-then-overwrite gives. (pad(out - border) + border would move about a quarter of the
        # interior values by one float32 ulp: (a - b) + b != a.) Two concatenations of copies, no
        # arithmetic and no in-place write, so autograd and ONNX export see plain Concat ops.
        side = border.expand(batch, chs, height, pad)                      # [B, C, H, p]
        cap = border.expand(batch, chs, pad, width + 2 * pad)              # [B, C, p, W + 2p]
        middle = torch.cat((side, out, side), dim=3)                       # [B, C, H, W + 2p]
        return torch.cat((cap, middle, cap), dim=2)                        # [B, C, H + 2p, W + 2p]


class RepConv(nn.Module):
    """Re-parameterisable conv (no neuron inside): 1x1 -> BNAndPad -> dw 3x3 -> 1x1 -> BN.

    Equals one 3x3 conv plus BN at inference (Eq. 6-7 of the SpikeYOLO paper). Spatial size kept.

    Args:
        in_chs: input channels.
        out_chs: output channels.
    """

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.pw_in = nn.Conv2d(in_chs, in_chs, 1, bias=False)
        self.pad_bn = BNAndPad(in_chs)
        self.dw = DepthwiseConv2d(in_chs, 3, padding=0)
        self.pw_out = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)

    reference_key_map = (("body.0.", "pw_in."), ("body.1.", "pad_bn."), ("body.2.0.", "dw."),
                         ("body.2.1.", "pw_out."), ("body.2.2.", "bn."))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pw_out(self.dw(self.pad_bn(self.pw_in(x)))))


class SepRepConv(nn.Module):
    """BNAndPad -> 1x1 (in -> out) -> depthwise 3x3 on out (padding 0): the last stage of SepConv.

    Args:
        in_chs: input channels.
        out_chs: output channels.
        neuron: with ``reparam=False``, the neuron inserted between the 1x1 and the depthwise conv.
        reparam: True (SpikeYOLO): no neuron inside, re-parameterisable into one 3x3 conv.
            False: the paper's "remove re-parameterisation" ablation (Table 5), a neuron inside.
    """

    def __init__(self, in_chs: int, out_chs: int, neuron: NeuronFactory | None = None, reparam: bool = True) -> None:
        super().__init__()
        if not reparam and neuron is None:
            raise ValueError("SepRepConv(reparam=False) needs a neuron factory")
        self.reparam = reparam
        self.pad_bn = BNAndPad(in_chs)
        self.pw = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.inner_neuron = nn.Identity() if reparam else neuron()
        self.dw = DepthwiseConv2d(out_chs, 3, padding=0)

    reference_key_map = (("body.0.", "pad_bn."), ("body.1.0.", "pw."), ("body.1.1.", "dw."))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw(self.inner_neuron(self.pw(self.pad_bn(x))))


class SepConv(nn.Module):
    """Inverted separable conv, the token mixer of the meta SNN block (Eq. 4).

    neuron -> 1x1 C->2C -> BN -> neuron -> depthwise kxk -> BN -> neuron -> SepRepConv(2C->C) -> BN.

    Args:
        chs: input and output channels C.
        neuron: neuron factory.
        kernel_size: depthwise kernel (7).
        expansion: hidden expansion (2).
        reparam: False puts a neuron inside the last stage (Table 5 ablation).
    """

    def __init__(self, chs: int, neuron: NeuronFactory, kernel_size: int = 7, expansion: int = 2,
                 reparam: bool = True) -> None:
        super().__init__()
        hidden = int(expansion * chs)
        self.neuron1 = neuron()
        self.pw_expand = nn.Conv2d(chs, hidden, 1, bias=False)
        self.bn_expand = nn.BatchNorm2d(hidden)
        self.neuron2 = neuron()
        self.dw = DepthwiseConv2d(hidden, kernel_size, padding=kernel_size // 2)
        self.bn_dw = nn.BatchNorm2d(hidden)
        self.neuron3 = neuron()
        self.pw_project = SepRepConv(hidden, chs, neuron, reparam)
        self.bn_project = nn.BatchNorm2d(chs)

    reference_key_map = (("pwconv1.", "pw_expand."), ("bn1.", "bn_expand."), ("dwconv2.", "dw."),
                         ("bn2.", "bn_dw."), ("pwconv3.body.0.", "pw_project.pad_bn."),
                         ("pwconv3.body.1.0.", "pw_project.pw."), ("pwconv3.body.1.1.", "pw_project.dw."),
                         ("bn3.", "bn_project."))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn_expand(self.pw_expand(self.neuron1(x)))
        x = self.bn_dw(self.dw(self.neuron2(x)))
        return self.bn_project(self.pw_project(self.neuron3(x)))


class SpikeConv(nn.Module):
    """neuron -> kxk conv (stride s, padding k//2, no bias) -> BN.

    The reference's MS_StandardConv and SpikeConv are this unit.

    Args:
        in_chs, out_chs: channels.
        neuron: neuron factory.
        kernel_size, stride: conv geometry.
    """

    def __init__(self, in_chs: int, out_chs: int, neuron: NeuronFactory, kernel_size: int = 1,
                 stride: int = 1) -> None:
        super().__init__()
        self.neuron = neuron()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.neuron(x)))


class SpikeConvOut(nn.Module):
    """neuron -> 1x1 conv with bias (no BN): the last conv of each head branch.

    Args:
        in_chs, out_chs: channels.
        neuron: neuron factory.
    """

    def __init__(self, in_chs: int, out_chs: int, neuron: NeuronFactory) -> None:
        super().__init__()
        self.neuron = neuron()
        self.conv = nn.Conv2d(in_chs, out_chs, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.neuron(x))
