"""A dataset resolved to absolute paths and class names (:class:`DatasetSpec`), whatever its source.

Each data source (:mod:`spikeyolo.data.sources`) turns its data config into one; the loaders, the trainer and the
validators read only this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "val")


@dataclass
class DatasetSpec:
    """A dataset resolved to absolute paths and class names.

    Attributes:
        name: short name (for logs and run directories).
        source: the name of the :class:`~spikeyolo.data.sources.DataSource` that resolved it.
        root: the dataset folder (the yaml's ``path``; the conversion cache for ``coco_json``; the Gen1 folder).
        train, val: image folders or image-list ``.txt`` files of each split (a split may be empty).
        names: class names; the class index is the position in this list.
        category_ids: class index -> original COCO category id (for pycocotools), or None.
        val_json: COCO ground-truth json of the val split, or None.
        label_roots: split -> folder holding that split's label files, mirroring the image paths relative to
            ``image_root``; empty when labels sit in the ``labels/`` sibling of ``images/`` (Ultralytics rule).
        image_root: the folder image paths are relative to when ``label_roots`` is used.
    """

    name: str
    source: str
    root: Path
    train: list[Path]
    val: list[Path]
    names: list[str]
    category_ids: list[int] | None = None
    val_json: Path | None = None
    label_roots: dict[str, Path] = field(default_factory=dict)
    image_root: Path | None = None

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def split_paths(self, split: str) -> list[Path]:
        """The image folders / list files of ``split`` (``train`` or ``val``)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self.train if split == "train" else self.val
