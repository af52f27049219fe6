"""Deployment: the spike-driven (T x D binary) inference path and its equivalence check."""

from spikeyolo.deploy.equivalence import EquivalenceReport, verify_equivalence
from spikeyolo.deploy.spike_driven import (SpikeDrivenConv, StemConv, set_binary_check, spike_driven_convs,
                                           thermometer_expand, to_spike_driven)

__all__ = ["EquivalenceReport", "verify_equivalence", "to_spike_driven", "SpikeDrivenConv", "StemConv",
           "thermometer_expand", "set_binary_check", "spike_driven_convs"]
