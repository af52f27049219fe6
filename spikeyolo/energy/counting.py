"""Per-conv operation and spike counting on the spike-driven (re-parameterised) model.

Forward hooks sit on every conv that costs energy: the stem (:class:`StemConv`, real pixels,
MACs) and the bias-free conv inside every :class:`SpikeDrivenConv` (binary input, additions).
Counting on the re-parameterised model gives the reference sheet's convention for free: a
RepConv is one dense 3x3 Cin -> Cout conv, a SepRepConv one dense 3x3 2C -> C conv, the SepConv
depthwise 7x7 keeps its groups; BN, adds, pooling, upsample, concat and DFL are not convs
here and are not counted (reference section 7).

Per conv and per image:

- ``dense_ops`` (MACs of one original time step) = Cout * Cin/groups * k^2 * Hout * Wout
- ``mean_spikes``: mean integer value (0..D) of the spikes entering the conv, averaged over T,
  batch, channels and positions (the sheet's "fr": includes D, not T)
- ``firing_rate`` = mean_spikes / D: probability of a 1 on one virtual (binary) time step
- ``sops_reference`` = dense_ops * mean_spikes * T (the sheet, and Eq. 17 as fr * T * D)
- ``sops_exact``: sum over the T*D binary maps of (number of 1s x their true fan-out), the fan-out
  of an input element being how many (output channel, output position) pairs read it:
  Cout/groups for every kernel tap that lands on a valid output. Computed by convolving the
  group-summed binary input with an all-ones kernel of the conv's geometry.
- ``valid_ops``: MACs that touch a real input element (padding taps excluded).
- ``sops_reference_valid`` = valid_ops * mean_spikes * T: the reference rule without padding credit.

The two SOP counts differ only where the dense formula credits taps that read zero padding
(``dense_ops - valid_ops``, charged at the mean rate) and where the rate correlates with the
fan-out (border elements have fewer taps; with stride 2 even and odd rows differ).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from spikeyolo.deploy.spike_driven import SpikeDrivenConv, StemConv
from spikeyolo.nn.blocks import TimeExpand

__all__ = ["ConvGeometry", "ConvCount", "OpCounter", "count_dense_ops"]


@dataclass
class ConvGeometry:
    """Which conv and its shape (shared by the counts and the report rows).

    Attributes:
        name: qualified module name in the spike-driven model (the conv's owner).
        kind: "stem" (real-valued MAC conv) or "spike" (binary input, additions).
        in_chs, out_chs, kernel_size, stride, groups: conv geometry.
    """

    name: str
    kind: str
    in_chs: int
    out_chs: int
    kernel_size: int
    stride: int
    groups: int

    def geometry(self) -> dict[str, object]:
        """The :class:`ConvGeometry` fields of this record, by name."""
        return {item.name: getattr(self, item.name) for item in fields(ConvGeometry)}


@dataclass
class ConvCount(ConvGeometry):
    """Accumulated counts of one conv (sums over all images seen; see ``per_image`` values).

    Attributes (after those of :class:`ConvGeometry`):
        padding: conv padding.
        time_steps, max_level: T and D of the neuron feeding the conv (1, 1 for the stem).
        in_hw, out_hw: spatial input and output sizes of the last call.
    """

    padding: int
    time_steps: int = 1
    max_level: int = 1
    in_hw: tuple[int, int] = (0, 0)
    out_hw: tuple[int, int] = (0, 0)
    images: int = 0
    dense_ops_sum: float = 0.0  # MACs of one original step, summed over images
    valid_ops_sum: float = 0.0
    ones_sum: float = 0.0  # number of binary 1s entering the conv = sum of integer spikes
    elements_sum: float = 0.0  # T * B * C * H * W input elements (integer view)
    sops_exact_sum: float = 0.0
    channel_ones: torch.Tensor | None = field(default=None, repr=False)  # [Cin] summed 1s
    channel_elements: float = 0.0  # T * B * H * W per channel

    @property
    def dense_ops(self) -> float:
        return self.dense_ops_sum / max(self.images, 1)

    @property
    def valid_ops(self) -> float:
        return self.valid_ops_sum / max(self.images, 1)

    @property
    def mean_spikes(self) -> float | None:
        """Mean integer spike value per input element (0..D), None for the stem."""
        if self.kind == "stem" or self.elements_sum == 0:
            return None
        return self.ones_sum / self.elements_sum

    @property
    def firing_rate(self) -> float | None:
        """Firing rate per virtual (binary) time step = mean_spikes / D."""
        mean = self.mean_spikes
        return None if mean is None else mean / self.max_level

    @property
    def sops_reference(self) -> float:
        mean = self.mean_spikes
        return 0.0 if mean is None else self.dense_ops * mean * self.time_steps

    @property
    def sops_reference_valid(self) -> float:
        """The reference rule on in-bounds taps only: valid_ops * mean_spikes * T (no padding credit)."""
        mean = self.mean_spikes
        return 0.0 if mean is None else self.valid_ops * mean * self.time_steps

    @property
    def sops_exact(self) -> float:
        return self.sops_exact_sum / max(self.images, 1)

    def channel_firing_rates(self) -> torch.Tensor | None:
        """[Cin] firing rate per virtual step of each input channel."""
        if self.channel_ones is None or self.channel_elements == 0:
            return None
        return self.channel_ones / (self.channel_elements * self.max_level)


def _fan_out_sum(maps: torch.Tensor, conv: nn.Conv2d) -> float:
    """sum over elements of maps[n, c, y, x] * fan-out(c, y, x) for ``conv``.

    Args:
        maps: [N, Cin, H, W] non-negative counts (binary maps, or all ones for valid taps).
    """
    groups = conv.groups
    kernel, stride, padding = conv.kernel_size, conv.stride, conv.padding
    # [N, Cin, H, W] -> [g, Cin/g, H, W] summed over N and the channels of each group -> [1, g, H, W]
    per_group = maps.sum(0).view(groups, -1, *maps.shape[2:]).sum(1).unsqueeze(0)
    ones = torch.ones(groups, 1, *kernel, dtype=per_group.dtype, device=per_group.device)
    reach = F.conv2d(per_group, ones, stride=stride, padding=padding, groups=groups)
    return float(reach.sum()) * (conv.out_channels // groups)


class OpCounter:
    """Forward hooks on every energy-relevant conv of a spike-driven model.

    Use as a context manager around forwards; ``counts`` holds one :class:`ConvCount` per conv in
    execution order. With ``spikes=False`` only shapes are read (works on meta tensors).

    Args:
        model: output of ``spikeyolo.deploy.to_spike_driven``.
        spikes: count spikes and exact SOPs (needs real tensors).
        channel_stats: also keep per-channel spike sums (for distribution plots).
    """

    def __init__(self, model: nn.Module, spikes: bool = True, channel_stats: bool = True) -> None:
        self.model = model
        self.spikes = spikes
        self.channel_stats = channel_stats
        self.counts: list[ConvCount] = []
        self._by_conv: dict[int, ConvCount] = {}
        self._handles: list = []
        self._targets: list[tuple[nn.Conv2d, ConvCount]] = []
        # the stem's input is [T*B, ...]: T copies of an image (its MACs counted once, as the reference sheet) or
        # T distinct event frames (counted T times); a hook on TimeExpand sees which input it was given
        self._time_expand = next((m for m in model.modules() if isinstance(m, TimeExpand)), None)
        self._distinct_frames = 1
        for name, module in model.named_modules():
            if isinstance(module, StemConv):
                self._targets.append((module, self._new(name, "stem", module, 1, 1)))
            elif isinstance(module, SpikeDrivenConv):
                self._targets.append((module.conv, self._new(name, "spike", module.conv, module.neuron.time_steps,
                                                             module.neuron.max_level)))
        if not self._targets:
            raise ValueError("no StemConv / SpikeDrivenConv found: pass a model from to_spike_driven()")

    @staticmethod
    def _new(name: str, kind: str, conv: nn.Conv2d, time_steps: int, max_level: int) -> ConvCount:
        return ConvCount(name=name, kind=kind, in_chs=conv.in_channels, out_chs=conv.out_channels,
                         kernel_size=conv.kernel_size[0], stride=conv.stride[0], padding=conv.padding[0],
                         groups=conv.groups, time_steps=time_steps, max_level=max_level)

    def __enter__(self) -> "OpCounter":
        for conv, count in self._targets:
            self._handles.append(conv.register_forward_hook(self._hook(count)))
        if self._time_expand is not None:
            self._handles.append(self._time_expand.register_forward_hook(self._input_hook))
        return self

    def _input_hook(self, module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        self._distinct_frames = module.time_steps if inputs[0].dim() == 5 else 1   # clip [T, B, ...] or image

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, count: ConvCount):
        def hook(conv: nn.Conv2d, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
            x = inputs[0]  # stem: [T*B, 3, H, W] real; spike: [T*D*B, Cin, H, W] binary
            if id(conv) not in self._by_conv:
                self._by_conv[id(conv)] = count
                self.counts.append(count)
            steps = count.time_steps * (count.max_level if count.kind == "spike" else 1)
            frames = 1
            if count.kind == "stem" and self._time_expand is not None:
                steps, frames = self._time_expand.time_steps, self._distinct_frames
            batch = x.shape[0] // steps
            count.in_hw = (int(x.shape[-2]), int(x.shape[-1]))
            count.out_hw = (int(output.shape[-2]), int(output.shape[-1]))
            dense = count.out_chs * (count.in_chs // count.groups) * count.kernel_size ** 2 \
                * count.out_hw[0] * count.out_hw[1]
            count.images += batch
            count.dense_ops_sum += float(dense) * batch * frames
            if not self.spikes:
                return
            with torch.no_grad():
                ones_map = torch.ones(1, count.in_chs, *count.in_hw, dtype=torch.float64, device=x.device)
                # sum of fan-outs of all-ones input = Cout * Cin/groups * (in-bounds taps) = valid MACs
                count.valid_ops_sum += _fan_out_sum(ones_map, conv) * batch * frames
                if count.kind == "stem":
                    return
                binary = x.detach().double()
                count.ones_sum += float(binary.sum())
                count.elements_sum += binary.numel() / count.max_level
                count.sops_exact_sum += _fan_out_sum(binary, conv)
                if self.channel_stats:
                    per_channel = binary.sum(dim=(0, 2, 3)).cpu()  # [Cin]
                    count.channel_ones = per_channel if count.channel_ones is None \
                        else count.channel_ones + per_channel
                    count.channel_elements += binary.shape[0] / count.max_level * count.in_hw[0] * count.in_hw[1]

        return hook


@torch.no_grad()
def count_dense_ops(spike_model: nn.Module, imgsz: int | tuple[int, int], in_chs: int = 3) -> list[ConvCount]:
    """Dense op counts (MACs per image and original step) of every conv, from shapes only.

    Runs one forward on the ``meta`` device (no memory, no arithmetic), so a full-width model at
    640 costs well under a second. The forward is made in training mode only so the head skips
    box decoding (which needs values); a spike-driven model has no BN, so the mode changes nothing else.

    Args:
        spike_model: output of ``to_spike_driven`` (it is copied to meta, not modified).
        imgsz: input size (square int or (H, W)).
    """
    height, width = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    meta = copy.deepcopy(spike_model).to("meta").train()
    with OpCounter(meta, spikes=False) as counter:
        meta(torch.zeros(1, in_chs, height, width, device="meta"))
    return counter.counts
