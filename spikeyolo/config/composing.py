"""Composing the packaged Hydra configs (spikeyolo/configs): :func:`compose`, :func:`config_choices`, and the
``spikeyolo.*`` resolvers the configs use. Re-exported by :mod:`spikeyolo.config`."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

# ${spikeyolo.coalesce:a,b,...}: the first argument that is not null (the run name: data.name, else data.source)
if not OmegaConf.has_resolver("spikeyolo.coalesce"):
    OmegaConf.register_new_resolver("spikeyolo.coalesce",
                                    lambda *values: next((value for value in values if value is not None), None))
# ${spikeyolo.slices:T,step_us}: a window of T slices step_us apart (null while T is: spikeyolo-eval takes the
# checkpoint's T, and the window follows it)
if not OmegaConf.has_resolver("spikeyolo.slices"):
    OmegaConf.register_new_resolver("spikeyolo.slices",
                                    lambda steps, step_us: None if steps is None else int(steps) * int(step_us))
# ${spikeyolo.sweep_point:num,overrides}: the folder of a sweep point, "<num>_<overrides>" ("/" in a value -> "_")
if not OmegaConf.has_resolver("spikeyolo.sweep_point"):
    OmegaConf.register_new_resolver("spikeyolo.sweep_point",
                                    lambda num, overrides: f"{num}_{overrides}".replace("/", "_") if overrides
                                    else str(num))


def compose(overrides: Sequence[str] = (), config_name: str = "train", return_hydra_config: bool = False) -> DictConfig:
    """Compose a packaged config (``train``, ``eval``, ...) with command-line style overrides.

    Example: ``compose(["model=spikeyolo_s", "neuron.max_level=4"])``.
    """
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return hydra_compose(config_name=config_name, overrides=list(overrides),
                             return_hydra_config=return_hydra_config)


def config_choices(config_name: str = "train", overrides: Sequence[str] = ()) -> dict[str, str | None]:
    """The config groups a packaged config uses and the option chosen in each (``{"model": "spikeyolo_n", ...}``)."""
    cfg = compose(overrides, config_name, return_hydra_config=True)
    order = [str(key) for key in cfg.keys()]   # the defaults list's order; a group with no choice (null) last
    groups = [str(group) for group in cfg.hydra.runtime.choices if "/" not in str(group)]
    return {group: cfg.hydra.runtime.choices[group]
            for group in sorted(groups, key=lambda g: order.index(g) if g in order else len(order))}
