"""spikeyolo: spiking-neural-network object detection (SpikeYOLO and Spiking-YOLO).

The small public API:

    cfg = spikeyolo.compose(["model=spikeyolo_s", "neuron.max_level=4"])
    model = spikeyolo.build_model(cfg)
    model = spikeyolo.load_checkpoint("runs/demo_spikeyolo_n/RUN/weights/best.pt")
    model = spikeyolo.load_checkpoint("23M_best.pt")         # reference (BICLab) weights: scale from the file
    spikeyolo.load_reference_weights(model, "23M_best.pt")   # or into a model you built
    detector = spikeyolo.Detector.load("runs/demo_spikeyolo_n/RUN/weights/best.pt")   # pictures in, boxes out
    detector.predict(["a.jpg", frame_bgr])                    # [ImageDetections(boxes, scores, classes, ...)]

Reference checkpoints are read without running anything in them (spikeyolo.checkpoints.reference).
"""

from spikeyolo.api import Detector, ImageDetections
from spikeyolo.config import compose
from spikeyolo.models import build_model
from spikeyolo.engine.checkpoint import load_checkpoint
from spikeyolo.checkpoints.reference import load_reference_weights
from spikeyolo.errors import ReferenceCheckpointError
from spikeyolo.nn.reference import convert_reference_state_dict
from spikeyolo.version import __version__

__all__ = ["compose", "build_model", "load_checkpoint", "load_reference_weights", "convert_reference_state_dict",
           "ReferenceCheckpointError", "Detector", "ImageDetections", "__version__"]
