"""Proof by execution that the spike-driven path equals the integer path.

``verify_equivalence`` runs the integer model and its spike-driven copy on the same images and
compares decoded outputs, raw head maps and every neuron's integer output (in call order), while
the spike-driven convs check that their inputs are exactly 0 or 1.

Float note: sum_k conv(b_k) and conv(sum_k b_k) differ by float rounding only (~1e-7 relative in
float32). A neuron rounds, so a membrane within that distance of a .5 boundary can flip by one
level and the difference propagates. In float64 the margin is ~1e-16 and flips do not occur in
practice; that is the default here. ``spike_mismatches`` counts flips, so a float32 run shows
whether a difference is a rounding flip (mismatches > 0) or a real error.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from spikeyolo.deploy.spike_driven import set_binary_check, spike_driven_convs, to_spike_driven
from spikeyolo.nn.neurons import SpikingNeuron

__all__ = ["EquivalenceReport", "verify_equivalence"]


@dataclass
class EquivalenceReport:
    """Integer path vs spike-driven path on one batch.

    Attributes:
        max_abs_diff: max |decoded_int - decoded_spike| over [B, 4 + nc, A] (boxes in pixels, scores).
        max_abs_diff_maps: max abs difference of the raw head maps.
        all_binary: every spike-driven conv saw only 0/1 inputs that summed back to the neuron output.
        non_binary_layers: names of the convs that failed that check.
        num_convs_checked: spike-driven convs that ran (the stem is real-valued and not counted).
        spike_mismatches: neuron output elements that differ between the paths (rounding flips).
        num_spikes_compared: neuron output elements compared.
        dtype: the dtype both paths ran in.
    """

    max_abs_diff: float
    max_abs_diff_maps: float
    all_binary: bool
    non_binary_layers: list[str] = field(default_factory=list)
    num_convs_checked: int = 0
    spike_mismatches: int = 0
    num_spikes_compared: int = 0
    dtype: str = "float64"

    def passed(self, atol: float = 1e-4) -> bool:
        return self.all_binary and self.max_abs_diff <= atol and self.max_abs_diff_maps <= atol


def _record_neurons(model: nn.Module, store: list[torch.Tensor]) -> list:
    def hook(_module, _inputs, output):
        store.append(output.detach())

    return [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, SpikingNeuron)]


@torch.no_grad()
def verify_equivalence(model: nn.Module, images: torch.Tensor, dtype: torch.dtype = torch.float64
                       ) -> EquivalenceReport:
    """Run ``model`` (integer path) and ``to_spike_driven(model)`` on ``images`` and compare.

    Args:
        model: a SpikeYOLO; not modified (both paths run on copies cast to ``dtype``).
        images: [B, 3, H, W] in [0, 1] or [T, B, C, H, W].
        dtype: compute dtype of both paths (float64 rules out rounding flips; float32 is deployment).
    """
    integer_model = copy.deepcopy(model).to(dtype).eval()
    spike_model = to_spike_driven(integer_model)
    images = images.to(dtype)
    int_spikes: list[torch.Tensor] = []
    sd_spikes: list[torch.Tensor] = []
    handles = _record_neurons(integer_model, int_spikes) + _record_neurons(spike_model, sd_spikes)
    set_binary_check(spike_model, True)
    try:
        decoded_int, maps_int = integer_model(images)
        decoded_sd, maps_sd = spike_model(images)
    finally:
        for handle in handles:
            handle.remove()
    convs = spike_driven_convs(spike_model)
    ran = [(name, m.last_check) for name, m in convs if m.last_check is not None]
    failed = [name for name, check in ran if not check.ok]
    if len(int_spikes) != len(sd_spikes):
        raise RuntimeError(f"neuron call counts differ: integer {len(int_spikes)}, spike-driven {len(sd_spikes)}")
    mismatches = sum(int((a != b).sum()) for a, b in zip(int_spikes, sd_spikes))
    compared = sum(a.numel() for a in int_spikes)
    return EquivalenceReport(
        max_abs_diff=float((decoded_int - decoded_sd).abs().max()),
        max_abs_diff_maps=max(float((a - b).abs().max()) for a, b in zip(maps_int, maps_sd)),
        all_binary=not failed and len(ran) == len(convs),
        non_binary_layers=failed + [name for name, m in convs if m.last_check is None],
        num_convs_checked=len(ran),
        spike_mismatches=mismatches,
        num_spikes_compared=compared,
        dtype=str(dtype).replace("torch.", ""),
    )
