"""The ``embedded`` source: the demo set shipped in ``spikeyolo/assets/trees`` (44 train / 12 val aerial tiles of
400x400, 1 class ``tree``), a YOLO-layout set whose val split is also given as a COCO json (category id 1).

It is read in place (the package may be read-only): derived files go under :func:`~spikeyolo.data.cache.cache_root`.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from spikeyolo.data.sources.yolo import YoloSource, category_ids_from_json, spec_from_yaml
from spikeyolo.data.spec import DatasetSpec
from spikeyolo.errors import DatasetError


def embedded_root() -> Path:
    """The folder of the embedded trees dataset inside the installed package."""
    root = Path(str(resources.files("spikeyolo") / "assets" / "trees"))
    if not (root / "trees.yaml").is_file():
        raise DatasetError(f"{root / 'trees.yaml'}: embedded dataset not found (broken installation?)")
    return root


class EmbeddedSource(YoloSource):
    """``source: embedded``: no keys of its own; loaded as a ``yolo`` set."""

    name = "embedded"

    def spec(self, data_cfg: Mapping[str, Any]) -> DatasetSpec:
        root = embedded_root()
        spec = spec_from_yaml(root / "trees.yaml", source=self.name)
        spec.name = "trees"
        if spec.val_json is None:
            spec.val_json = root / "annotations" / "instances_val.json"
            spec.category_ids = category_ids_from_json(spec.val_json, spec.num_classes)
        return spec
