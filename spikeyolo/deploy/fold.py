"""Folding for the spike-driven path: BN into convs, RepConv and SepRepConv into one 3x3 conv.

Every function returns a ``(weight, bias)`` pair of an equivalent single conv in eval mode
(running BN statistics): ``module(x) == conv2d(x, weight, padding=...) + bias``. The bias is the
additive part that the spike-driven conv adds ONCE per original time step, after summing its
D binary sub-steps (reference section 5, "derived equivalence rules").

The algebra is done in float64 and cast back to the conv's dtype, so folding itself adds
no more than one float32 rounding per weight.
"""

from __future__ import annotations

import torch
from torch import nn

from spikeyolo.nn.layers import BNAndPad, RepConv, SepRepConv

__all__ = ["fold_bn", "fold_conv_bn", "fuse_repconv", "fuse_seprepconv"]

Folded = tuple[torch.Tensor, torch.Tensor]


def _bn64(bn: nn.BatchNorm2d) -> Folded:
    """(scale [C], shift [C]) of an eval-mode BN in float64: bn(y) = scale * y + shift."""
    with torch.no_grad():
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        shift = bn.bias.double() - bn.running_mean.double() * scale
    return scale, shift


def fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, *bns: nn.BatchNorm2d) -> Folded:
    """Fold BNs that follow a conv: bn_n(...bn_1(conv(x) + bias)) == conv(x; weight') + bias'.

    Args:
        weight: conv weight [Cout, Cin/groups, k, k] (float64 or any float).
        bias: conv bias [Cout] or None.
        bns: BatchNorm2d modules applied in order after the conv.

    Returns:
        (weight' [Cout, Cin/groups, k, k], bias' [Cout]) in float64.
    """
    weight = weight.detach().double()
    bias = torch.zeros(weight.shape[0], dtype=torch.float64, device=weight.device) if bias is None \
        else bias.detach().double()
    for bn in bns:
        scale, shift = _bn64(bn)
        weight = weight * scale.view(-1, 1, 1, 1)
        bias = bias * scale + shift
    return weight, bias


def fold_conv_bn(conv: nn.Conv2d, *bns: nn.BatchNorm2d) -> Folded:
    """``fold_bn`` for an ``nn.Conv2d`` (its weight and optional bias)."""
    return fold_bn(conv.weight, conv.bias, *bns)


def _pad_bn_affine(pad_bn: BNAndPad) -> Folded:
    """BNAndPad(y) == scale * zero_pad(y) + shift everywhere, border included (its border is BN(0))."""
    return _bn64(pad_bn.bn)


def fuse_repconv(rep: RepConv, *bns: nn.BatchNorm2d) -> Folded:
    """RepConv (1x1 -> BNAndPad -> dw3x3 -> 1x1 -> BN) [-> more BNs] as one 3x3 conv, padding 1.

    With z = zero_pad(x): pw_in(z) is 0 on the border, so BNAndPad(pw_in(x)) == a * pw_in(z) + b
    (a, b: the pad BN's scale and shift). Hence, Eq. 6-7 of the paper:

        K[o, i, u, v] = sum_c W_out[o, c] * dw[c, u, v] * a[c] * W_in[c, i]
        bias[o]       = sum_c W_out[o, c] * b[c] * sum_{u,v} dw[c, u, v]

    then the trailing BN(s) are folded.

    Returns:
        (weight [Cout, Cin, 3, 3], bias [Cout]) in float64; use with padding 1.
    """
    w_in = rep.pw_in.weight.detach().double()[:, :, 0, 0]  # [C, Cin]
    scale, shift = _pad_bn_affine(rep.pad_bn)  # [C]
    dw = rep.dw.weight.detach().double()[:, 0]  # [C, 3, 3]
    w_out = rep.pw_out.weight.detach().double()[:, :, 0, 0]  # [Cout, C]
    # [Cout, C] x [C, 3, 3] x [C, Cin] -> [Cout, Cin, 3, 3]
    kernel = torch.einsum("oc,cuv,ci->oiuv", w_out, dw * scale.view(-1, 1, 1), w_in)
    bias = w_out @ (shift * dw.sum(dim=(1, 2)))
    return fold_bn(kernel, bias, rep.bn, *bns)


def fuse_seprepconv(sep: SepRepConv, *bns: nn.BatchNorm2d) -> Folded:
    """SepRepConv (BNAndPad -> 1x1 -> dw3x3, padding 0) [-> BNs] as one dense 3x3 conv, padding 1.

    BNAndPad(x) == a * zero_pad(x) + b, so

        K[o, i, u, v] = dw[o, u, v] * W[o, i] * a[i]
        bias[o]       = (W @ b)[o] * sum_{u,v} dw[o, u, v]

    This is the dense 3x3 2C -> C conv that the reference energy sheet counts.

    Returns:
        (weight [Cout, Cin, 3, 3], bias [Cout]) in float64; use with padding 1.
    """
    scale, shift = _pad_bn_affine(sep.pad_bn)  # [Cin]
    w_pw = sep.pw.weight.detach().double()[:, :, 0, 0]  # [Cout, Cin]
    dw = sep.dw.weight.detach().double()[:, 0]  # [Cout, 3, 3]
    # [Cout, 3, 3] x [Cout, Cin] -> [Cout, Cin, 3, 3]
    kernel = dw.unsqueeze(1) * (w_pw * scale.view(1, -1)).unsqueeze(-1).unsqueeze(-1)
    bias = (w_pw @ shift) * dw.sum(dim=(1, 2))
    return fold_bn(kernel, bias, *bns)

