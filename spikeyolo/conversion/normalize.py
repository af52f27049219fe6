"""Weight normalisation for ANN-to-SNN conversion (Spiking-YOLO, seed 001 Eq. 4-5).

The converted network is a chain of *units* (see :mod:`spikeyolo.conversion.converter`):
``ConvUnit`` (a conv with BN folded in, then a leaky-ReLU / ReLU / nothing) and ``PoolUnit``
(optional padding, then max-pooling). Normalisation rescales each ConvUnit so that its
activations are at most ~1 (= Vth), which is what a spiking neuron can express as a rate:

    layer-wise   (Eq. 4)  W^l -> W^l * lambda^{l-1} / lambda^l,        b^l -> b^l / lambda^l
    channel-wise (Eq. 5)  W^l_{:,:,i,j} -> W^l_{:,:,i,j} * lambda^{l-1}_i / lambda^l_j,
                          b^l_j -> b^l_j / lambda^l_j

lambda^l is the p-th percentile of |activation| over calibration data: over the whole layer
(layer-wise; p = 100, the maximum, by default) or per output channel j (channel-wise;
p = 99.9 by default). Pooling and padding keep the per-channel factors (max commutes with a
positive per-channel scale), so lambda^{l-1} is the factor of the last ConvUnit before l;
for the first layer it is 1 (the analog image is fed as current). Absolute values are used
so that the negative (leaky) side and the linear output layer are covered too; for a ReLU
layer this is the paper's max activation.

The percentile is computed without storing all activations: the p-th percentile of n values
is among the ceil((1 - p/100) n) + 1 largest, so each channel keeps only its running top-k
(k grows with the count, with a 4x margin). It is exact for one batch and for the maximum
(p = 100); over many batches a value can be dropped before k grows to include it (only when
the calibration set grows more than 4x after that value's batch and later batches are much
smaller), so the result may then sit a few order statistics low.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batchnorm", "PercentileTracker", "activation_scales", "normalize_units", "NORM_MODES"]

NORM_MODES = ("channel", "layer")
DEFAULT_PERCENTILE = {"channel": 99.9, "layer": 100.0}


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> nn.Conv2d:
    """A new conv (with bias) equal to ``bn(conv(x))`` under BN running statistics."""
    conv = conv.eval()
    if bn is None:
        folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                           conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
        with torch.no_grad():
            folded.weight.copy_(conv.weight)
            folded.bias.copy_(conv.bias if conv.bias is not None else torch.zeros(conv.out_channels))
        return folded
    folded = fuse_conv_bn_eval(conv, bn.eval())
    return folded


class PercentileTracker:
    """Exact running p-th percentile of |x| per channel (or over all channels).

    Args:
        percentile: p in (0, 100].
        per_channel: one value per channel (dim 1 of [B, C, ...] inputs) or one for the layer.
    """

    def __init__(self, percentile: float, per_channel: bool) -> None:
        if not 0.0 < float(percentile) <= 100.0:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        self.percentile = float(percentile)
        self.per_channel = per_channel
        self.count = 0                    # values seen per row
        self.top: torch.Tensor | None = None  # [rows, k] largest |x| seen, descending

    def _keep(self, count: int) -> int:
        # the needed ceil(q n) + 1, with a 4x margin for the values later batches will add
        return min(count, 4 * math.ceil((1.0 - self.percentile / 100.0) * count) + 16)

    def update(self, x: torch.Tensor) -> None:
        """Add a batch of activations [B, C, H, W] (or [B, C])."""
        values = x.detach().abs().float().transpose(0, 1).reshape(x.shape[1], -1)  # [B, C, ...] -> [C, N]
        if not self.per_channel:
            values = values.reshape(1, -1)  # [C, N] -> [1, C*N]
        self.count += values.shape[1]
        keep = self._keep(self.count)
        pool = values if self.top is None else torch.cat((self.top, values), 1)
        self.top = pool.topk(min(keep, pool.shape[1]), dim=1).values

    def compute(self) -> torch.Tensor:
        """[C] (or [1]) the percentile; linear interpolation between order statistics like numpy."""
        if self.top is None:
            raise RuntimeError("no calibration data was seen")
        # numpy 'linear': position (n - 1) * p / 100 in ascending order = (n - 1) * (1 - p/100) from the top
        from_top = (self.count - 1) * (1.0 - self.percentile / 100.0)
        low = int(math.floor(from_top))
        frac = from_top - low
        upper = self.top[:, low]
        lower = self.top[:, min(low + 1, self.top.shape[1] - 1)]
        return upper - frac * (upper - lower)


@torch.no_grad()
def activation_scales(units: nn.Sequential, batches: Iterable[torch.Tensor], mode: str = "channel",
                      percentile: float | None = None) -> list[torch.Tensor]:
    """lambda^l for every ConvUnit of ``units`` from calibration images.

    Args:
        units: the analog (BN-folded, not yet normalised) unit chain.
        batches: calibration images [B, 3, H, W] in [0, 1].
        mode: ``channel`` (Eq. 5) or ``layer`` (Eq. 4).
        percentile: p; default 99.9 for channel, 100 (max) for layer.

    Returns:
        per ConvUnit, in order, a [C_out] tensor (layer mode: the same value repeated). Channels that
        never activate get lambda = 1 (they stay silent either way).
    """
    if mode not in NORM_MODES:
        raise ValueError(f"norm must be one of {NORM_MODES}, got {mode!r}")
    percentile = DEFAULT_PERCENTILE[mode] if percentile is None else float(percentile)
    conv_units = [u for u in units if hasattr(u, "conv")]
    trackers = [PercentileTracker(percentile, per_channel=mode == "channel") for _ in conv_units]
    hooks = [u.register_forward_hook(lambda _m, _i, out, tr=tr: tr.update(out))
             for u, tr in zip(conv_units, trackers)]
    seen = 0
    try:
        for images in batches:
            units(images)
            seen += images.shape[0]
    finally:
        for hook in hooks:
            hook.remove()
    if seen == 0:
        raise ValueError("calibration needs at least one image")
    scales = []
    for unit, tracker in zip(conv_units, trackers):
        value = tracker.compute().expand(unit.conv.out_channels).clone()
        scales.append(torch.where(value > 0, value, torch.ones_like(value)))
    return scales


@torch.no_grad()
def normalize_units(units: nn.Sequential, scales: list[torch.Tensor],
                    input_gain: Iterable[float] | None = None) -> None:
    """Apply Eq. 5 (Eq. 4 when every scale is a repeated value) in place to the ConvUnits of ``units``.

    Args:
        units: the BN-folded unit chain.
        scales: lambda^l per ConvUnit ([C_out] each), from :func:`activation_scales`.
        input_gain: per ConvUnit, the value one incoming spike stands for (the previous neuron's
            Vth; 1 for the first layer, which sees the analog image). Default all 1.
    """
    conv_units = [u for u in units if hasattr(u, "conv")]
    if len(scales) != len(conv_units):
        raise ValueError(f"{len(scales)} scales for {len(conv_units)} conv units")
    gains = list(input_gain) if input_gain is not None else [1.0] * len(conv_units)
    previous = None  # lambda^{l-1}: None for the image input (lambda^0 = 1)
    for unit, scale, gain in zip(conv_units, scales, gains):
        conv = unit.conv
        in_factor = torch.ones(conv.in_channels) if previous is None else previous
        if conv.groups != 1:
            raise ValueError("grouped convolutions are not supported by the converter")
        # W [C_out j, C_in i, k, k] * lambda^{l-1}_i * gain / lambda^l_j  (Eq. 5)
        conv.weight.mul_(in_factor.view(1, -1, 1, 1) * float(gain) / scale.view(-1, 1, 1, 1))
        conv.bias.div_(scale)  # b_j / lambda^l_j
        previous = scale
