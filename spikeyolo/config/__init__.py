"""Composing the packaged Hydra configs (spikeyolo/configs, typed by :mod:`spikeyolo.config.schema`) and the model
description a composed config gives (:func:`model_config`; :func:`spikeyolo.models.build_model` builds it)."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from omegaconf import DictConfig, OmegaConf

from spikeyolo.config.composing import CONFIG_DIR, compose, config_choices
from spikeyolo.config.resume import resume_config, same_run_config, saved_run_config, write_run_config
from spikeyolo.config.schema import register_schemas
from spikeyolo.errors import UserError

__all__ = ["CONFIG_DIR", "compose", "config_choices", "model_config", "resolve_num_classes",
           "resolve_imgsz", "checked_imgsz", "MAX_IMGSZ", "register_schemas", "resume_config", "saved_run_config",
           "same_run_config", "write_run_config"]

MAX_IMGSZ = 8192   # the largest square input size (data.imgsz, a checkpoint's trained size)


def resolve_num_classes(cfg: DictConfig) -> int:
    """``model.num_classes`` when set, else the data's class count, else 80 (COCO)."""
    explicit = OmegaConf.select(cfg, "model.num_classes")
    if explicit is not None:
        return int(explicit)
    from_data = OmegaConf.select(cfg, "data.num_classes", default=None)
    if from_data is None:
        names = OmegaConf.select(cfg, "data.names", default=None)
        from_data = len(names) if names else None
    return int(from_data) if from_data is not None else 80


def resolve_imgsz(cfg: DictConfig, model: torch.nn.Module, trained: Mapping[str, Any] | None = None) -> int:
    """The square input size of a command, checked against the model's strides, and set as ``cfg.data.imgsz``.

    ``data.imgsz`` when it is set; when it is null, the size the checkpoint was trained at (``trained``: the data
    config stored in the checkpoint, :func:`spikeyolo.engine.checkpoint.trained_data_config`).

    Raises:
        UserError: no size is known, or it is not a positive multiple of the model's largest stride.
    """
    cfg.data.imgsz = checked_imgsz(cfg.data.imgsz, model, trained)
    return cfg.data.imgsz


def checked_imgsz(imgsz: Any, model: torch.nn.Module, trained: Mapping[str, Any] | None = None,
                  key: str = "data.imgsz") -> int:
    """``imgsz``, or when None the checkpoint's trained size (``trained['imgsz']``), checked against the strides.

    Raises:
        UserError: naming ``key``: no size is known, or it is not a positive multiple of the largest stride.
    """
    stride = max(model.strides)
    if imgsz is None:
        imgsz = (trained or {}).get("imgsz")
    if imgsz is None:
        raise UserError(f"the checkpoint does not record the image size it was trained at: give {key}=N "
                        f"(an integer multiple of {stride})")
    if isinstance(imgsz, bool) or not isinstance(imgsz, int):
        raise UserError(f"{key} must be an integer multiple of {stride}, got {imgsz!r}")
    if imgsz > MAX_IMGSZ:
        raise UserError(f"{key}={imgsz} is larger than {MAX_IMGSZ} (the largest input size spikeyolo accepts)")
    if imgsz <= 0 or imgsz % stride:
        below = imgsz // stride * stride
        choices = f"{below} or {below + stride}" if below > 0 else f"{stride}"
        raise UserError(f"{key}={imgsz} is not a multiple of the model's largest stride {stride} (use {choices})")
    return imgsz


def model_config(cfg: DictConfig, num_classes: int | None = None) -> dict[str, Any]:
    """The self-contained description of a model (stored in checkpoints): the model and neuron nodes, names and
    plain values only (``family``, ``kind``; :mod:`spikeyolo.models` checks and builds it)."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    # run options, not the network: model.weights (where training starts from), model.name (the config's name)
    model.pop("weights", None)
    model.pop("name", None)
    model["num_classes"] = int(num_classes if num_classes is not None else resolve_num_classes(cfg))
    return {"model": model, "neuron": OmegaConf.to_container(cfg.neuron, resolve=True)}

