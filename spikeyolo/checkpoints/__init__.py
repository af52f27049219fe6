"""The foreign checkpoint formats spikeyolo reads, each through the bounded reader of :mod:`spikeyolo.torchfile`.

* :mod:`spikeyolo.checkpoints.reference`: BICLab/SpikeYOLO checkpoints (the allow-list of inert stand-ins, the
  weights, class names and neuron type they hold, ``load_reference_weights``).
* :mod:`spikeyolo.checkpoints.ultralytics`: stock ultralytics YOLOv8 checkpoints as spikeyolo ``yolov8`` weights.
* :mod:`spikeyolo.checkpoints.module_tree`: what both share, the state_dict and class names of a pickled module
  tree of stand-ins.

spikeyolo's own checkpoint format (save, resume, the payload every reader returns) is
:mod:`spikeyolo.engine.checkpoint`; translating reference keys onto spikeyolo modules is network code,
:mod:`spikeyolo.nn.reference`.
"""
