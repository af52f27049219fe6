"""Shared helpers of the Hydra entry points: one-line errors, run directories, logging setup.

Bad input is one line on stderr and exit code 2, before anything is written or trained:

* ``run_hydra_app`` checks the command line before Hydra runs: an unknown key or config-group option
  (the valid ones are listed), an override that does not parse, a value of the wrong type
  (checked against the type of the default value);
* ``friendly_errors`` turns the framework's bad-input errors raised while running (DatasetError,
  CheckpointError, TrainingError, constructor ValueErrors such as D < 1, data-loader worker
  failures) into one line.

``SPIKEYOLO_DEBUG=1`` re-raises instead, with the full traceback.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from spikeyolo.errors import InputError, UserError
from spikeyolo.io import write_json, write_text

EXIT_BAD_INPUT = 2

__all__ = ["EXIT_BAD_INPUT", "UserError", "friendly_errors", "run_hydra_app", "check_command_line",
           "one_line", "prepare_run_dir", "write_json", "setup_logging"]


def one_line(err: BaseException) -> str:
    """The one line that describes ``err``.

    An exception re-raised by a torch DataLoader from a worker reads "Caught X in DataLoader worker
    process N. Original Traceback ..."; its last line (``module.X: message``) is the useful one.
    """
    text = str(err).strip()
    if not text:
        return type(err).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines[0].startswith("Caught ") and "DataLoader worker" in lines[0] and len(lines) > 1:
        name, sep, message = lines[-1].partition(": ")  # "package.module.ErrorType: message"
        return f"data loader worker failed: {name.rsplit('.', 1)[-1]}: {message}" if sep else \
            f"data loader worker failed: {lines[-1]}"
    return lines[0]


def _report(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def friendly_errors(main: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the framework's bad-input errors into one line on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from hydra.errors import InstantiationException

        debug = bool(os.environ.get("SPIKEYOLO_DEBUG"))
        try:
            return main(*args, **kwargs)
        except (InputError, FileNotFoundError) as err:
            if debug:
                raise
            _report(one_line(err))
        except InstantiationException as err:  # a constructor rejected a config value (T < 1, D < 1, ...)
            cause = err.__cause__
            if debug or not isinstance(cause, (ValueError, TypeError)):
                raise
            _report(one_line(cause))
        except OSError as err:  # a full disk while writing checkpoints or results
            if debug or err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                raise
            _report(f"{err.strerror or err}{f': {err.filename}' if err.filename else ''} "
                    "(files written before are intact; a training run resumes with trainer.resume=true)")
        except ValueError as err:  # configuration values rejected by constructors
            if debug:
                raise
            _report(one_line(err))

    return wrapper


# --------------------------------------------------------------------------- command line


def _is_group(key: str, config_dir: Path) -> bool:
    return (config_dir / key).is_dir() or key.startswith("hydra/")


def _valid_options(group: str, config_dir: Path) -> list[str]:
    folder = config_dir / group
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_"))


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean (true/false)"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, (list, ListConfig)):
        return "a list"
    if isinstance(value, (dict, DictConfig)):
        return "a mapping"
    return "a string"


def _type_fits(default: Any, value: Any) -> bool:
    """Whether an override value may replace a default of this type (null always may)."""
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, (list, ListConfig)):
        return isinstance(value, (list, ListConfig))
    if isinstance(default, (dict, DictConfig)):
        return isinstance(value, (dict, DictConfig))
    return not isinstance(value, (list, dict, ListConfig, DictConfig))  # strings take numbers (device=0)


_ABSENT = object()


def _default_value(base: DictConfig, key: str) -> Any:
    """The raw default at ``key`` (interpolations unresolved), or _ABSENT."""
    node: Any = base
    for part in key.split("."):
        if isinstance(node, DictConfig):
            if part not in node.keys():  # ``in`` is False for a key whose value is ??? (MISSING)
                return _ABSENT
            node = node._get_node(part)
            if node is not None and not isinstance(node, (DictConfig, ListConfig)):
                node = node._value()
        elif isinstance(node, ListConfig) and part.isdigit() and int(part) < len(node):
            node = node._get_node(int(part))
            if not isinstance(node, (DictConfig, ListConfig)):
                node = node._value()
        else:
            return _ABSENT
    return node


def _keys_of(base: DictConfig, parent: str) -> list[str]:
    node = _default_value(base, parent) if parent else base
    return sorted(str(k) for k in node.keys()) if isinstance(node, DictConfig) else []


def check_command_line(config_name: str, overrides: Sequence[str]) -> DictConfig:
    """Check Hydra overrides against the packaged configs; raise :class:`UserError` with one line.

    Checks, in order: the overrides parse; every config-group choice exists (the valid options are
    listed); every ``key=value`` names an existing key (the valid keys of its parent are listed;
    ``+key=value`` adds a new key on purpose); every value has the type of the default it replaces
    (an integer for ``trainer.epochs``, a number for ``optim.lr0``, ...; ``null`` is always allowed);
    ``run_dir`` can be created. Returns the composed config.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException

    from spikeyolo.config import CONFIG_DIR, compose

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as err:
        raise UserError(f"cannot parse override {err.override!r}: {one_line(err)}") from None
    groups, values = [], []
    for override, text in zip(parsed, overrides):
        if override.is_hydra_override():
            continue
        if override.is_sweep_override():
            raise UserError(f"{text!r} is a sweep (several values); quote a string with commas "
                            f"({override.key_or_group}='a,b') or give a list ({override.key_or_group}=[a,b])")
        if _is_group(override.key_or_group, CONFIG_DIR) or override.type != OverrideType.CHANGE:
            groups.append(text)
        else:
            values.append((override, text))

    try:
        base = compose(groups, config_name=config_name)
    except MissingConfigException as err:
        group = Path(str(err.missing_cfg_file or "")).parent.name
        wanted = Path(str(err.missing_cfg_file or "")).name
        options = [o for o in (err.options or _valid_options(group, CONFIG_DIR)) if not o.startswith("_")]
        if group and options:
            raise UserError(f"unknown {group} option {wanted!r}; valid options: {', '.join(options)}") from None
        raise UserError(one_line(err)) from None
    except HydraException as err:
        raise UserError(one_line(err)) from None

    for override, text in values:
        key = override.key_or_group
        default = _default_value(base, key)
        if default is _ABSENT:
            parent = key.rpartition(".")[0]
            keys = _keys_of(base, parent)
            where = f"valid keys of {parent}" if parent else "valid top-level keys"
            hint = f"; {where}: {', '.join(keys)}" if keys else ""
            raise UserError(f"unknown config key {key!r} in {text!r}{hint} (+{text} adds a new key)")
        value = override.value()
        if isinstance(default, str) and default.startswith("${"):
            continue  # an interpolation: the type is the referenced value's
        if not _type_fits(default, value):
            shown = "" if isinstance(default, (DictConfig, ListConfig)) else f" (default {default!r})"
            raise UserError(f"{text!r}: {key} must be {_type_name(default)}{shown}, got {_type_name(value)}")

    try:
        cfg = compose(list(overrides), config_name=config_name)
    except HydraException as err:
        raise UserError(one_line(err)) from None
    run_dir = OmegaConf.select(cfg, "run_dir", default=None)
    if run_dir is not None:
        _check_creatable(Path(str(run_dir)))
    return cfg


def _check_creatable(folder: Path) -> None:
    """UserError unless ``folder`` exists as a writable folder or can be created (nothing is created here)."""
    probe = folder.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"run_dir {folder} cannot be created: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"run_dir {folder} is not writable ({probe}: permission denied)")


def run_hydra_app(hydra_main: Callable[[], Any], config_name: str, argv: Sequence[str] | None = None) -> None:
    """Run a ``@hydra.main`` app after :func:`check_command_line`; bad input is one line and exit code 2.

    Hydra's own flags (``--help``, ``--cfg job``, ``--multirun``, ...) skip the check and go to Hydra.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not any(arg.startswith("-") for arg in args) and not os.environ.get("SPIKEYOLO_DEBUG"):
        try:
            check_command_line(config_name, args)
        except UserError as err:
            _report(one_line(err))
    hydra_main()


# --------------------------------------------------------------------------- run directory


def prepare_run_dir(cfg: DictConfig, min_free_gb: float | None = None) -> Path:
    """Create RUN_DIR (checking it is writable and has free space) and save the resolved config there.

    Args:
        cfg: the composed config (``run_dir``; ``trainer.min_free_gb`` when present).
        min_free_gb: required free space on RUN_DIR's file system; default ``trainer.min_free_gb`` (0: no check).

    Raises:
        UserError: RUN_DIR cannot be created or written, or its file system has less free space than required.
    """
    run_dir = Path(cfg.run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise UserError(f"run_dir {run_dir} is not writable: {err.strerror or err}") from None
    if min_free_gb is None:
        min_free_gb = OmegaConf.select(cfg, "trainer.min_free_gb", default=None)
    if min_free_gb:
        free_gb = shutil.disk_usage(run_dir).free / 1e9
        if free_gb < float(min_free_gb):
            raise UserError(f"only {free_gb:.2f} GB free on the file system of run_dir {run_dir}; "
                            f"trainer.min_free_gb={min_free_gb} (checkpoints need room; lower it to run anyway)")
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    return run_dir


def setup_logging(run_dir: Path | None = None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if run_dir is not None:
        handlers.append(logging.FileHandler(run_dir / "train.log"))
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=handlers, force=True)
    for noisy in ("ultralytics", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
