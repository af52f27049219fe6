"""Deployment: the spike-driven (T x D binary) inference path and its equivalence check.

``DEPLOY_PATHS`` names the forms one trained model runs in (spikeyolo-eval ``deploy=``, spikeyolo-export ``path=``,
``Detector.eval_path``): ``integer`` the trained network (activations in {0..D}), ``spike_driven`` binary T x D
spikes with BN and RepConv folded, ``fixed_point`` the spike-driven path on power-of-two weight grids (what the
ONNX export writes by default).
"""

from types import MappingProxyType
from typing import Callable, Mapping

from torch import nn

from spikeyolo.deploy.equivalence import EquivalenceReport, verify_equivalence
from spikeyolo.deploy.fixed_point import to_fixed_point
from spikeyolo.deploy.spike_driven import (SpikeDrivenConv, StemConv, set_binary_check, spike_driven_convs,
                                           thermometer_expand, to_spike_driven)

__all__ = ["DEPLOY_PATHS", "integer_path", "EquivalenceReport", "verify_equivalence", "to_spike_driven",
           "to_fixed_point", "SpikeDrivenConv", "StemConv", "thermometer_expand", "set_binary_check",
           "spike_driven_convs"]


def integer_path(model: nn.Module) -> nn.Module:
    """The trained network as it is (integer activations in {0..D})."""
    return model


#: deploy path name -> the function that builds that form of a model (a new module; the integer path: the model)
DEPLOY_PATHS: Mapping[str, Callable[[nn.Module], nn.Module]] = MappingProxyType(
    {"integer": integer_path, "spike_driven": to_spike_driven, "fixed_point": to_fixed_point})
