"""Resuming a training run: the run's own config (RUN_DIR/config.yaml), typed by the schema, plus the few overrides a
resume may change.

``spikeyolo-train run_dir=RUN trainer.resume=true`` continues RUN as it was started: the config is read from
RUN/config.yaml (the resolved config the run wrote when it started), not composed again from the packaged configs and
the command line. Overrides given with it are refused unless they are in :data:`ALLOWED_ON_RESUME` (where and how fast
the run goes on, never what it computes) or repeat the run's own value; ``trainer.epochs`` may only go up. The saved
config is checked against the schema (:mod:`spikeyolo.config.schema`) as a composed one is.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import yaml
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from spikeyolo.config.composing import CONFIG_DIR, compose
from spikeyolo.config.schema import TrainConfig
from spikeyolo.config.names import MAX_YAML_BYTES, refuse_hydra_keys, translate_run_config, yaml_data
from spikeyolo.errors import InputError, UserError
from spikeyolo.io import write_text

__all__ = ["ALLOWED_ON_RESUME", "SESSION_KEYS", "resume_config", "saved_run_config", "same_run_config",
           "write_run_config"]

# what a resume may change: where and how the run goes on, not what it computes (trainer.epochs: upward only; it sets
# the length of the lr schedule, so the epochs already trained follow another schedule than a longer run's)
ALLOWED_ON_RESUME = ("trainer.epochs", "trainer.device", "trainer.workers", "trainer.progress", "trainer.max_minutes",
                     "trainer.min_free_gb", "trainer.save_period", "trainer.log_images")
# where this session runs and whether it resumes: not part of what the run is
SESSION_KEYS = ("run_dir", "trainer.resume")
_TYPED_GROUPS = ("trainer", "optim", "logger", "neuron")
MAX_RUN_CONFIG_BYTES = 1 << 20      # a run's config.yaml is a few KB
MAX_RUN_CONFIG_NODES = 100_000  # the groups the schema types (data, model: yaml only)
_ABSENT = object()


def _group_schema(group: str, node: dict) -> DictConfig:
    """The schema of a typed group's node: the group's schema whose ``kind`` is the node's, else ``_schema``."""
    entries = ConfigStore.instance().repo[group]
    kind = node.get("kind")
    for entry in entries.values():
        schema = entry.node
        if "kind" in schema and not OmegaConf.is_missing(schema, "kind") and schema.kind == kind:
            return schema
    return entries["_schema.yaml"].node


def saved_run_config(run_dir: str | Path) -> DictConfig:
    """RUN_DIR/config.yaml as a config typed by the schema (unknown keys and wrong types refused), struct mode.

    Raises:
        UserError: no config.yaml in ``run_dir`` (not a run folder), or one the schema refuses.
    """
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise UserError(f"trainer.resume=true but {path} does not exist: run_dir must be the folder of a run "
                        "spikeyolo-train started")
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise UserError(f"{path}: {path.stat().st_size:,} bytes (a run's config.yaml is a few KB; at most "
                            f"{MAX_YAML_BYTES:,})")
        # older releases' Python paths as names; any other Hydra key refused
        plain = translate_run_config(yaml_data(path.read_text(encoding="utf-8"), str(path)), str(path))
        if not isinstance(plain, dict):
            raise UserError(f"{path}: not a run config (a mapping of config groups)")
        refuse_hydra_keys(plain, str(path))
        groups = {group: _group_schema(group, plain[group]) for group in _TYPED_GROUPS
                  if isinstance(plain.get(group), dict)}
        typed = OmegaConf.merge(OmegaConf.structured(TrainConfig), groups, OmegaConf.create(plain))
    except InputError as err:
        raise UserError(f"{err}") from None
    except UnicodeDecodeError as err:
        raise UserError(f"cannot read {path}: {type(err).__name__}") from None
    except OmegaConfBaseException as err:
        where = f"{err.full_key}: " if getattr(err, "full_key", None) else ""
        raise UserError(f"{path}: {where}{str(err).strip().splitlines()[0]} (written by another spikeyolo version?)"
                        ) from None
    except yaml.YAMLError as err:
        raise UserError(f"cannot read {path}: {str(err).splitlines()[0]}") from None
    OmegaConf.set_struct(typed, True)
    return typed


def _text(value: Any) -> str:
    """A value as it is written on the command line (null, true, 0.002, [1, 2])."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(OmegaConf.to_container(value) if OmegaConf.is_config(value) else value)


def resume_config(overrides: Sequence[str], composed: DictConfig | None = None) -> DictConfig:
    """The config a resumed run continues with: RUN_DIR/config.yaml plus the allowed overrides.

    Args:
        overrides: the command line (``run_dir=RUN`` is required; ``trainer.resume=true`` is implied).
        composed: the packaged config composed with ``overrides`` (it has the override values with the schema's
            types); default: composed here.

    Returns:
        the saved config, with the allowed overrides applied, ``run_dir`` as given and ``trainer.resume`` true.

    Raises:
        UserError: no ``run_dir=`` given, no config.yaml in it, or overrides a resume may not change (each named,
            with the run's value, and the keys that may change).
    """
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as err:
        raise UserError(f"cannot parse override {err.override!r}") from None
    keys = [override.key_or_group for override in parsed]
    if "run_dir" not in keys:
        raise UserError("trainer.resume=true needs run_dir=RUN, the folder of the run to continue")
    if composed is None:
        composed = compose(list(overrides))
    run_dir = str(composed.run_dir)
    cfg = saved_run_config(run_dir)
    refused = []
    for key, text in zip(keys, overrides):
        if key in SESSION_KEYS or key.startswith("hydra."):
            continue
        new = OmegaConf.select(composed, key, default=None)
        if (CONFIG_DIR / key).is_dir() or isinstance(new, DictConfig):  # model=..., experiment=..., a mapping
            # the run's own choice (the original command line repeated) changes nothing: its node, or for a group
            # that sets keys all over (experiment), the whole config, is what the run has
            if isinstance(new, DictConfig):
                same = _plain(new) == _plain(OmegaConf.select(cfg, key, default={}))
            else:
                same = same_run_config(composed, cfg, ignore=(*SESSION_KEYS, *ALLOWED_ON_RESUME))
            if not same:
                refused.append(f"{text} (a config group that changes the run)")
            continue
        old = OmegaConf.select(cfg, key, default=_ABSENT)
        if old is _ABSENT:
            refused.append(f"{text} (the run has no {key})")
        elif new == old:
            continue                      # repeats the run's own value: nothing changes
        elif key not in ALLOWED_ON_RESUME:
            refused.append(f"{text} (the run has {_text(old)})")
        elif key == "trainer.epochs" and new < old:
            refused.append(f"{text} (below the run's {old}: epochs may only go up)")
        else:
            OmegaConf.update(cfg, key, new)
    if refused:
        allowed = ", ".join(f"{key} (upward)" if key == "trainer.epochs" else key for key in ALLOWED_ON_RESUME)
        raise UserError(f"trainer.resume=true continues {run_dir} as its config.yaml says; refused: "
                        f"{', '.join(refused)}; a resume may change only {allowed}")
    cfg.run_dir = run_dir
    cfg.trainer.resume = True
    return cfg


def _plain(cfg: Any, ignore: Sequence[str] = ()) -> Any:
    """A resolved config as plain containers, without the dotted keys in ``ignore``."""
    container = OmegaConf.to_container(cfg if OmegaConf.is_config(cfg) else OmegaConf.create(cfg), resolve=True)
    for key in ignore:
        parent, _, leaf = key.rpartition(".")
        node = container
        for part in filter(None, parent.split(".")):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return container


def same_run_config(first: DictConfig | dict, second: DictConfig | dict,
                    ignore: Sequence[str] = SESSION_KEYS) -> bool:
    """Whether two resolved configs describe the same run: equal but for the keys in ``ignore`` (where this session
    runs and whether it resumes)."""
    return _plain(first, ignore) == _plain(second, ignore)


def write_run_config(path: str | Path, cfg: DictConfig) -> None:
    """Save the resolved ``cfg`` as ``path`` (RUN_DIR/config.yaml) without losing the one it replaces.

    A config.yaml that describes the same run (:func:`same_run_config`: ``run_dir`` and
    ``trainer.resume`` aside) is left as it is; a different one is first copied to ``config.<N>.yaml`` (N = 1, 2, ...
    in the order they were replaced), so config.yaml is always the config the run goes on with and the earlier ones
    are its history.
    """
    path = Path(path)
    text = OmegaConf.to_yaml(cfg, resolve=True)
    if path.is_file():
        previous = path.read_text()
        if same_run_config(OmegaConf.create(previous), cfg):
            return
        numbers = [int(p.suffixes[0][1:]) for p in path.parent.glob(f"{path.stem}.*{path.suffix}")
                   if len(p.suffixes) == 2 and p.suffixes[0][1:].isdigit()]
        kept = path.with_name(f"{path.stem}.{max(numbers, default=0) + 1}{path.suffix}")
        write_text(kept, previous)
        logging.getLogger("spikeyolo").info("%s changed; the previous one is kept as %s", path, kept.name)
    write_text(path, text)
