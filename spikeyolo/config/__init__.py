"""Composing the packaged Hydra configs and building models from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

__all__ = ["CONFIG_DIR", "compose", "build_model", "model_config", "resolve_num_classes"]


def compose(overrides: Sequence[str] = (), config_name: str = "train") -> DictConfig:
    """Compose a packaged config (``train``, ``eval``, ...) with command-line style overrides.

    Example: ``compose(["model=spikeyolo_s", "neuron.max_level=4"])``.
    """
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return hydra_compose(config_name=config_name, overrides=list(overrides))


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


def model_config(cfg: DictConfig, num_classes: int | None = None) -> dict[str, Any]:
    """The self-contained description of a model (stored in checkpoints): model and neuron nodes."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    model.pop("weights", None)  # model.weights: where training starts from (a run option, not the network)
    model["num_classes"] = int(num_classes if num_classes is not None else resolve_num_classes(cfg))
    return {"model": model, "neuron": OmegaConf.to_container(cfg.neuron, resolve=True)}


def build_model(cfg: DictConfig | dict, num_classes: int | None = None) -> torch.nn.Module:
    """Build the detector of a composed config (or of a ``model_config`` dict from a checkpoint)."""
    if isinstance(cfg, DictConfig):
        description = model_config(cfg, num_classes)
    else:
        description = dict(cfg)
        if num_classes is not None:
            description["model"] = {**description["model"], "num_classes": int(num_classes)}
    try:
        neuron = instantiate(OmegaConf.create(description["neuron"]))
        return instantiate(OmegaConf.create(description["model"]), neuron=neuron, _convert_="all")
    except InstantiationException as err:
        # surface the constructor's own message (e.g. "time_steps (T) must be >= 1") instead of Hydra's wrapper
        cause = err.__cause__
        if isinstance(cause, (ValueError, TypeError)):
            raise type(cause)(str(cause)) from err
        raise
