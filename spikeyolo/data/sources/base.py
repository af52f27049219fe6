"""What a data source is: a kind of dataset that turns its data config into a spec and a split into a loader.

A source reads the keys of its ``data`` config group (``spikeyolo/configs/data/*.yaml``) that concern it and ignores
the others. Its loaders yield ultralytics-style batch dicts, so the trainer and the validator use them unchanged:
``img`` uint8 [B, 3, H, W] (images) or [B, T, C, S, S] (event clips), ``batch_idx`` [N], ``cls`` [N, 1], ``bboxes``
[N, 4] (normalised cx cy w h), ``im_file``, ``ori_shape``, ``resized_shape``, ``ratio_pad`` (tuples of length B).
``loader.dataset`` has ``labels`` (per sample a dict with ``cls`` [M, 1] and ``bboxes`` [M, 4]), ``im_files``,
``num_corrupt``, ``augment``, ``mosaic_closed`` and ``hyp.close_mosaic`` (read by the trainer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from spikeyolo.data.spec import DatasetSpec


class DataSource:
    """One kind of dataset (``data.source``); subclasses set :attr:`name` and implement :meth:`spec` and
    :meth:`loader`, and :func:`~spikeyolo.data.sources.register_source` makes them known by name.

    Attributes:
        name: the ``data.source`` value that selects this source.
        is_event_data: its batches are event clips ``img`` [B, T, C, S, S] (T from ``data.time_steps``).
    """

    name: str = ""
    is_event_data: bool = False

    def spec(self, data_cfg: Mapping[str, Any]) -> DatasetSpec:
        """Resolve a data config (a plain mapping) into a :class:`DatasetSpec`.

        Raises:
            DatasetError: missing or malformed files and folders, missing config keys.
        """
        raise NotImplementedError

    def loader(self, spec: DatasetSpec, data_cfg: Mapping[str, Any], split: str, batch_size: int, workers: int,
               rank: int = -1, stride: int = 32, device: torch.device | str | None = None,
               **overrides: Any) -> torch.utils.data.DataLoader:
        """The loader of one split of ``spec`` with the data config's values; training splits are shuffled.

        Args:
            spec: what :meth:`spec` returned.
            data_cfg: the data config (a plain mapping).
            split: ``train`` or ``val``.
            batch_size: samples per batch (per process under DDP).
            workers: loader worker processes.
            rank: DDP rank (-1 single process).
            stride: the model's largest stride (rectangular batch shapes are multiples of it).
            device: where batches go (pinned memory on CUDA); default CUDA if available.
            overrides: data config keys replacing the config's values for this loader only.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def count_boxes(dataset: Any) -> int:
    """Number of boxes in a loader's dataset (after the scan)."""
    return int(sum(len(label["cls"]) for label in dataset.labels))
