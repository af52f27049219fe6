"""spikeyolo's only door to ultralytics (pinned to the 8.4 series); private.

Every use of ultralytics in spikeyolo goes through this package, so an upgrade of ultralytics touches
only these files. Importing any part of it first runs :mod:`~spikeyolo._ultralytics.env`, which puts
ultralytics in offline mode with a writable config directory and a local font before ultralytics is
imported (the one import-time side effect the project allows, docs/design), so nothing is ever
downloaded at run time.

    env    offline environment, version check, thread count, ultralytics' hyper-parameter namespace
    loss   the YOLOv8 detection loss for spikeyolo heads
    ops    NMS, box IoU, prediction matching and per-class AP, anchors and box decoding
    data   YOLO-layout detection datasets, augmentation, loaders and their resume state
    peer   a stock YOLOv8 model and loss (benchmarks, ANN comparison)
"""

from spikeyolo._ultralytics import env as env  # noqa: F401  (before any submodule imports ultralytics)
