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
           "resolve_imgsz", "checked_imgsz", "MAX_IMGSZ", "resolve_time_steps", "checked_time_steps",
           "register_schemas", "resume_config", "saved_run_config",
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


def resolve_time_steps(cfg: DictConfig, model: torch.nn.Module, trained: Mapping[str, Any] | None = None) -> int:
    """T of a command's event clips (the slices each sample is cut into), the one place it is settled.

    Returned, never written into ``cfg``: pass it to the loader (``dataloader_from_config(..., time_steps=T)``).
    A ``data.time_steps`` given as a value is a request (:func:`checked_time_steps` has the rule); the event data
    configs' default, ``${oc.select:neuron.time_steps,null}``, is not: it follows the neuron group, which the
    model was built from or which a checkpoint's T replaces, so the model's T stands.

    Raises:
        UserError: ``data.time_steps`` differs from the model's T, or is not a positive integer.
    """
    data = OmegaConf.select(cfg, "data", default=None)
    requested = None
    if isinstance(data, DictConfig) and "time_steps" in data and not OmegaConf.is_interpolation(data, "time_steps"):
        requested = data.time_steps
    return checked_time_steps(requested, model, trained)


def checked_time_steps(time_steps: Any, model: torch.nn.Module, trained: Mapping[str, Any] | None = None,
                       key: str = "data.time_steps") -> int:
    """T of the event clips a model is given: the model's own T (``model.time_steps``; a checkpoint's, or the
    neuron group's when training) when it has one, and ``time_steps`` (the requested T, None: not requested) must
    then equal it; a model without T (an ANN) takes ``time_steps``, else the T its checkpoint was trained with
    (``trained['time_steps']``, the run's data config), else 1.

    Raises:
        UserError: naming ``key``: ``time_steps`` differs from the model's T, or is not a positive integer.
    """
    if time_steps is not None and (isinstance(time_steps, bool) or not isinstance(time_steps, int) or time_steps < 1):
        raise UserError(f"{key} must be a positive integer (T, the slices of an event sample), got {time_steps!r}")
    own = getattr(model, "time_steps", None)
    if own is not None:
        if time_steps is not None and time_steps != int(own):
            raise UserError(f"{key}={time_steps} but the model runs T={int(own)} time steps (leave {key} unset, or "
                            f"give neuron.time_steps={time_steps} to change the model's T)")
        return int(own)
    if time_steps is not None:
        return time_steps
    recorded = (trained or {}).get("time_steps")
    return int(recorded) if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded >= 1 else 1


def model_config(cfg: DictConfig, num_classes: int | None = None) -> dict[str, Any]:
    """The self-contained description of a model (stored in checkpoints): the model and neuron nodes, names and
    plain values only (``family``, ``kind``; :mod:`spikeyolo.models` checks and builds it)."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    # run options, not the network: model.weights (where training starts from), model.name (the config's name)
    model.pop("weights", None)
    model.pop("name", None)
    model["num_classes"] = int(num_classes if num_classes is not None else resolve_num_classes(cfg))
    return {"model": model, "neuron": OmegaConf.to_container(cfg.neuron, resolve=True)}

