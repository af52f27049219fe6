"""A Prophesee data config (``source: gen1`` / ``gen4``, ``spikeyolo/configs/data/gen1.yaml``, ``gen4.yaml``) read:
the dataset folder and its splits (:func:`prophesee_spec`) and the event representation
(:func:`representation_from_config`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spikeyolo.data.events.cameras import GEN1, Camera
from spikeyolo.data.sources.prophesee.encoding import Representation
from spikeyolo.data.spec import DatasetSpec
from spikeyolo.errors import DatasetError
from spikeyolo.io import plain

__all__ = ["prophesee_spec", "representation_from_config", "REPRESENTATION_KEYS"]


def prophesee_spec(cfg: Mapping[str, Any], camera: Camera = GEN1, root: str | os.PathLike | None = None) -> DatasetSpec:
    """Resolve a Prophesee data config into a :class:`DatasetSpec` (``source`` = the camera's name).

    Reads ``root`` (unless ``root`` is given: the synthetic stand-in the source generated for ``synthetic``),
    ``train_split`` and ``val_split`` (folder names; the SpikeYOLO reference validates Gen1 on ``test``), ``names``
    (default: the classes the field evaluates on this camera).

    Raises:
        DatasetError: the root or the validation split folder does not exist.
    """
    cfg = plain(cfg)
    if root is None and not cfg.get("root"):
        raise DatasetError(f"data.root: the {camera.title} folder (with train/ val/ test/) is required for source "
                           f"'{camera.name}'")
    root = Path(str(root if root is not None else cfg["root"])).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"{root}: {camera.title} dataset folder does not exist (lay it out as in docs/events.md)")
    train_dir = root / str(cfg.get("train_split") or "train")
    val_dir = root / str(cfg.get("val_split") or "test")
    if not val_dir.is_dir():
        raise DatasetError(f"{val_dir}: {camera.title} validation split folder does not exist (data.val_split)")
    names = [str(n) for n in (cfg.get("names") or camera.names)]
    return DatasetSpec(name=str(cfg.get("name") or camera.name), source=camera.name, root=root,
                       train=[train_dir] if train_dir.is_dir() else [], val=[val_dir], names=names)


#: the data config keys a :class:`Representation` is read from (a checkpoint's run config carries them to prediction)
REPRESENTATION_KEYS = ("representation", "time_steps", "window_us", "voxel_bins", "voxel_clip", "clamp_start",
                       "downsample", "downsample_mode", "stack_bins", "count_cutoff", "stack_slice_us")


def representation_from_config(cfg: Mapping[str, Any], window_us: int | None = None) -> Representation:
    """The :class:`Representation` of a data config (the :data:`REPRESENTATION_KEYS`; a missing or null key takes
    its default)."""
    cfg = plain(cfg)
    if cfg.get("time_steps") is None:
        raise DatasetError("data.time_steps is not set (it follows neuron.time_steps when training and the "
                           "checkpoint's T when evaluating)")
    rep = Representation(kind=str(cfg.get("representation") or "spikeyolo"), time_steps=int(cfg["time_steps"]),
                         window_us=int(window_us or cfg.get("window_us") or 250_000),
                         voxel_bins=int(cfg.get("voxel_bins") or 3), voxel_clip=float(cfg.get("voxel_clip") or 4.0),
                         clamp_start=bool(cfg.get("clamp_start", False)), downsample=int(cfg.get("downsample") or 1),
                         downsample_mode=str(cfg.get("downsample_mode") or "nearest"),
                         stack_bins=int(cfg.get("stack_bins") or 10), count_cutoff=int(cfg.get("count_cutoff") or 10),
                         stack_slice_us=int(cfg.get("stack_slice_us") or 0))
    if cfg.get("in_chs") is not None and int(cfg["in_chs"]) != rep.channels:
        raise DatasetError(f"data.in_chs={cfg['in_chs']} but representation {rep.kind!r} has {rep.channels} "
                           f"channels: set data.in_chs={rep.channels} (and model.in_chs to match)")
    return rep
