"""NIR export: SpikeYOLO's spike-driven path and the converted Spiking-YOLO as stage graphs that snnTorch, norse,
sinabs and nirtorch import as they are, plus the rest of the network that turns their outputs into detections.

    from spikeyolo.deploy.nir import NirBundle, export_nir
    report = export_nir(model, "model.nir", imgsz=640)         # model.stage0.nir ..., model.rest.pt
    exported = NirBundle.load("model.nir")                     # typed: nir.read(stage file) type-checks
    stages = [importer(file) for file in exported.files]       # or importer(graph) for exported.graphs
    decoded, maps = exported.run(stages, images)               # images [B, 3, imgsz, imgsz]
    detections = Detector.from_nir(exported, stages).predict("picture.jpg")   # spikeyolo.Detector: squares

graph.py: node conventions every importer needs; spikeyolo_stages.py / spiking_yolo_stages.py: the two families;
rest.py: the rest of the network; bundle.py: reading an export back and the run loop. docs/user-guide.md, "NIR".
"""

from spikeyolo.deploy.nir.bundle import DT, NirBundle, NirStages, bundle_paths, nirtorch_node_map, sinabs_ready
from spikeyolo.deploy.nir.export import NirExportReport, export_nir, to_nir
from spikeyolo.deploy.nir.graph import GROUP_MODES
from spikeyolo.deploy.nir.rest import RestOfNetwork

__all__ = ["DT", "GROUP_MODES", "NirBundle", "NirExportReport", "NirStages", "RestOfNetwork", "bundle_paths",
           "export_nir", "nirtorch_node_map", "sinabs_ready", "to_nir"]
