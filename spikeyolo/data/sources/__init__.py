"""The data sources by name (``data.source``), and the dispatch from a data config to a spec and a loader.

Built in:
    ``embedded``   the demo set shipped in ``spikeyolo/assets/trees`` (:mod:`~spikeyolo.data.sources.embedded`).
    ``yolo``       an Ultralytics dataset yaml (:mod:`~spikeyolo.data.sources.yolo`).
    ``coco_json``  an images folder plus COCO jsons, converted once into a cached YOLO label set
                   (:mod:`~spikeyolo.data.sources.coco_json`).
    ``gen1``       a Prophesee Gen1 folder of ``*_td.dat`` / ``*_bbox.npy`` recordings
                   (:mod:`~spikeyolo.data.sources.gen1`).
    ``gen4``       a folder of the Prophesee 1 Megapixel dataset, same layout (:mod:`~spikeyolo.data.sources.gen4`);
                   both are cameras of the Prophesee family (:mod:`~spikeyolo.data.sources.prophesee`).

A new kind of dataset is a :class:`~spikeyolo.data.sources.base.DataSource` subclass passed to
:func:`register_source`; :func:`spec_from_config` and :func:`dataloader_from_config` then serve ``data.source``
set to its name, and nothing else changes. Nothing here writes beside a dataset.
"""

from __future__ import annotations

import os
import types
from collections.abc import Mapping
from typing import Any

import torch

from spikeyolo.data.sources.base import DataSource
from spikeyolo.data.sources.coco_json import CocoJsonSource
from spikeyolo.data.sources.embedded import EmbeddedSource
from spikeyolo.data.sources.gen1 import Gen1Source
from spikeyolo.data.sources.gen4 import Gen4Source
from spikeyolo.data.sources.yolo import YoloSource
from spikeyolo.data.spec import DatasetSpec
from spikeyolo.errors import DatasetError
from spikeyolo.io import plain

__all__ = ["DataSource", "SOURCES", "register_source", "get_source", "load_dataset_spec", "spec_from_config",
           "dataloader_from_config"]

_REGISTRY: dict[str, DataSource] = {}
#: name -> source, in registration order (a read-only view of the registry).
SOURCES: Mapping[str, DataSource] = types.MappingProxyType(_REGISTRY)


def register_source(source: DataSource, replace: bool = False) -> DataSource:
    """Make ``source`` the one that serves ``data.source: <source.name>``; returns it.

    Raises:
        ValueError: no name, or the name is taken (and ``replace`` is false).
    """
    if not source.name:
        raise ValueError(f"{source!r} has no name")
    if source.name in _REGISTRY and not replace:
        raise ValueError(f"data source {source.name!r} is already registered ({_REGISTRY[source.name]!r})")
    _REGISTRY[source.name] = source
    return source


def get_source(name: str) -> DataSource:
    """The source registered as ``name``.

    Raises:
        DatasetError: no such source (the message names the registered ones).
    """
    if name not in _REGISTRY:
        raise DatasetError(f"unknown dataset source {name!r}; expected one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


for _source in (EmbeddedSource(), YoloSource(), CocoJsonSource(), Gen1Source(), Gen4Source()):
    register_source(_source)


def load_dataset_spec(source: str = "embedded", *, yaml: str | os.PathLike | None = None,
                      images: str | os.PathLike | None = None, train_json: str | os.PathLike | None = None,
                      val_json: str | os.PathLike | None = None) -> DatasetSpec:
    """Resolve a dataset from paths (:func:`spec_from_config` for a whole data config).

    Args:
        source: ``embedded`` (default), ``yolo`` or ``coco_json``.
        yaml: the Ultralytics dataset yaml (``yolo``).
        images: the folder the jsons' ``file_name`` entries are relative to (``coco_json``).
        train_json, val_json: COCO detection jsons (``coco_json``; ``train_json`` may be None for eval only).

    Raises:
        DatasetError: an unknown source, a missing yaml / json / folder, a malformed yaml or json, inconsistent
            class names.
    """
    return get_source(source).spec({"source": source, "yaml": yaml, "images": images, "train_json": train_json,
                                    "val_json": val_json})


def spec_from_config(cfg: Mapping[str, Any]) -> DatasetSpec:
    """Resolve the ``data`` config group (``spikeyolo/configs/data/*.yaml``) into a :class:`DatasetSpec`.

    Reads ``source`` (default ``embedded``) and hands the config to that source, which reads the keys it needs;
    ``num_classes``, when not null, must equal the dataset's class count; ``name`` renames the spec; ``hint`` is
    appended to errors (e.g. how to prepare COCO).
    """
    cfg = plain(cfg)  # resolves interpolations such as ${oc.env:...}
    hint = cfg.get("hint")
    try:
        spec = get_source(cfg.get("source") or "embedded").spec(cfg)
    except DatasetError as err:
        if hint:
            raise DatasetError(f"{err} ({hint})") from None
        raise
    expected = cfg.get("num_classes")
    if expected is not None and int(expected) != spec.num_classes:
        raise DatasetError(f"{spec.root}: data.num_classes={expected} but the dataset has {spec.num_classes} "
                           f"classes {spec.names[:5]}{'...' if spec.num_classes > 5 else ''}")
    if cfg.get("name"):
        spec.name = str(cfg["name"])
    return spec


def dataloader_from_config(spec: DatasetSpec, data_cfg: Mapping[str, Any], split: str, batch_size: int,
                           workers: int, rank: int = -1, stride: int = 32, device: torch.device | str | None = None,
                           **overrides: Any) -> torch.utils.data.DataLoader:
    """The loader of one split of ``spec``, built by its source (``spec.source``) from the data config's values.

    Training splits are shuffled (and augmented where the source augments), validation splits are not.
    ``overrides`` are data config keys that replace the config's values for this loader only, e.g.
    ``window_us=100_000`` or ``progress=False`` for ``gen1`` / ``gen4``.
    See :meth:`DataSource.loader` for the arguments.
    """
    return get_source(spec.source).loader(spec, data_cfg, split, batch_size, workers, rank=rank, stride=stride,
                                          device=device, **overrides)
