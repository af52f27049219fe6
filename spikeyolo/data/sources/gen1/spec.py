"""A Gen1 data config (``source: gen1``, ``spikeyolo/configs/data/gen1.yaml``) read: the dataset folder and its
splits (:func:`gen1_spec`) and the event representation (:func:`representation_from_config`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spikeyolo.data.sources.gen1.cache import Representation
from spikeyolo.data.sources.gen1.synthetic import ensure_synthetic_dataset
from spikeyolo.data.spec import DatasetSpec
from spikeyolo.errors import DatasetError
from spikeyolo.io import plain

__all__ = ["GEN1_NAMES", "gen1_spec", "representation_from_config"]

GEN1_NAMES = ("car", "pedestrian")


def gen1_spec(cfg: Mapping[str, Any]) -> DatasetSpec:
    """Resolve a Gen1 data config (``source: gen1``) into a :class:`DatasetSpec`.

    Reads ``root`` (or ``synthetic``: generate a synthetic dataset into the cache first), ``train_split`` and
    ``val_split`` (folder names; the reference validates on ``test``), ``names``.

    Raises:
        DatasetError: the root or the validation split folder does not exist.
    """
    cfg = plain(cfg)
    if cfg.get("synthetic"):
        root = ensure_synthetic_dataset(**cfg["synthetic"])
    elif cfg.get("root"):
        root = Path(str(cfg["root"])).expanduser().resolve()
    else:
        raise DatasetError("data.root: the Gen1 folder (with train/ val/ test/) is required for source 'gen1'")
    if not root.is_dir():
        raise DatasetError(f"{root}: Gen1 dataset folder does not exist (lay it out as in docs/events.md)")
    train_dir = root / str(cfg.get("train_split") or "train")
    val_dir = root / str(cfg.get("val_split") or "test")
    if not val_dir.is_dir():
        raise DatasetError(f"{val_dir}: Gen1 validation split folder does not exist (data.val_split)")
    names = [str(n) for n in (cfg.get("names") or GEN1_NAMES)]
    return DatasetSpec(name=str(cfg.get("name") or "gen1"), source="gen1", root=root,
                       train=[train_dir] if train_dir.is_dir() else [], val=[val_dir], names=names)


def representation_from_config(cfg: Mapping[str, Any], window_us: int | None = None) -> Representation:
    """The :class:`Representation` of a data config (``representation``, ``time_steps``, ``window_us``, ...)."""
    cfg = plain(cfg)
    if cfg.get("time_steps") is None:
        raise DatasetError("data.time_steps is not set (it follows neuron.time_steps when training and the "
                           "checkpoint's T when evaluating)")
    rep = Representation(kind=str(cfg.get("representation") or "spikeyolo"), time_steps=int(cfg["time_steps"]),
                         window_us=int(window_us or cfg.get("window_us") or 250_000),
                         voxel_bins=int(cfg.get("voxel_bins") or 3), voxel_clip=float(cfg.get("voxel_clip") or 4.0),
                         clamp_start=bool(cfg.get("clamp_start", False)))
    if cfg.get("in_chs") is not None and int(cfg["in_chs"]) != rep.channels:
        raise DatasetError(f"data.in_chs={cfg['in_chs']} but representation {rep.kind!r} has {rep.channels} "
                           f"channels: set data.in_chs={rep.channels} (and model.in_chs to match)")
    return rep
