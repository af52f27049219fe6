"""Spiking-YOLO: ANN-to-SNN conversion with channel-wise normalisation and the signed IBT neuron.

    from spikeyolo.conversion import IBTNeuron, convert_detector
    snn = convert_detector(tiny_yolo, calibration_batches, norm="channel",
                           spiking_neuron=partial(IBTNeuron, alpha=0.1), time_steps=1000)
    decoded, maps = snn.eval()(images)

See docs/conversion.md.
"""

from spikeyolo.conversion.converter import (DECODINGS, ConvUnit, PoolUnit, SpikingConv, SpikingMaxPool,
                                            SpikingNetwork, ann_units, convert)
from spikeyolo.conversion.neurons import ConversionNeuron, IBTNeuron, IFNeuron, SignedNeuron
from spikeyolo.conversion.normalize import PercentileTracker, activation_scales, fold_batchnorm, normalize_units
from spikeyolo.conversion.spiking_yolo import (SpikingYOLO, build_spiking_yolo, convert_detector,
                                               spiking_model_config)

__all__ = ["IBTNeuron", "SignedNeuron", "IFNeuron", "ConversionNeuron", "fold_batchnorm", "PercentileTracker",
           "activation_scales", "normalize_units", "ConvUnit", "PoolUnit", "ann_units", "SpikingConv",
           "SpikingMaxPool", "SpikingNetwork", "convert", "DECODINGS", "SpikingYOLO", "build_spiking_yolo",
           "convert_detector", "spiking_model_config"]
