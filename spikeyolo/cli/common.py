"""Shared helpers of the entry points: the Hydra app of a command, one-line errors, run directories, logging.

``main = hydra_app("train", train, __doc__)`` makes a command's console entry. Bad input is one line on stderr and
exit code 2, before anything is written or trained:

* :func:`check_command_line` composes the command's config once before Hydra runs: an override that does not
  parse, an unknown config-group option or key (the valid ones are listed), a value of the wrong type (refused by
  the schema, :mod:`spikeyolo.config.schema`), a value left unset (``???``), a ``run_dir`` that cannot be created;
* :func:`friendly_errors` turns the framework's bad-input errors raised while running (DatasetError,
  CheckpointError, TrainingError, constructor ValueErrors such as D < 1, data-loader worker failures) into one line.

``SPIKEYOLO_DEBUG=1`` re-raises instead, with the full traceback.
"""

from __future__ import annotations

import errno
import functools
import logging
import logging.handlers
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import (ConfigCompositionException, HydraException, InstantiationException,
                          MissingConfigException, OverrideParseException)
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError
from omegaconf.nodes import BooleanNode, FloatNode, IntegerNode, StringNode

from spikeyolo.config import CONFIG_DIR, compose, config_choices, write_run_config
from spikeyolo.engine.sweep import sweep_points
from spikeyolo.errors import InputError, UserError
from spikeyolo.io import write_json

EXIT_BAD_INPUT = 2

__all__ = ["EXIT_BAD_INPUT", "UserError", "friendly_errors", "hydra_app", "check_command_line", "command_help",
           "one_line", "prepare_run_dir", "write_json", "setup_logging", "log_to_file"]


def one_line(err: BaseException) -> str:
    """The one line that describes ``err``.

    An exception re-raised by a torch DataLoader from a worker reads "Caught X in DataLoader worker process N.
    Original Traceback ..."; its last line (``module.X: message``) is the useful one.
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


MAX_MESSAGE = 300   # characters of an error line taken from a foreign exception (a repr of hostile input may not end)
MAX_INPUT_MESSAGE = 1000   # spikeyolo's own refusals (InputError): bounded where they are made, capped here again

# what torch's CPU allocator and numpy say when an allocation fails (a RuntimeError, not a MemoryError)
_ALLOCATION_FAILED = ("can't allocate memory", "not enough memory", "Cannot allocate memory",
                      "Unable to allocate")


def _report(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def _bounded(message: str, limit: int = MAX_MESSAGE) -> str:
    return message if len(message) <= limit else message[:limit] + "..."


def _resource_error(err: BaseException) -> str | None:
    """The one line of an error that says the input asked for more than this machine gives (memory, nesting),
    or None for any other error."""
    if isinstance(err, MemoryError) or (isinstance(err, RuntimeError) and not isinstance(err, RecursionError)
                                        and any(text in str(err)[:2000] for text in _ALLOCATION_FAILED)):
        asked = re.search(r"allocate (\d+) bytes", str(err)[:2000])
        size = f": {int(asked.group(1)) / 1e9:.1f} GB asked at once" if asked else ""
        return f"out of memory{size} (an input, a checkpoint or a config value, asks for more than this machine has)"
    if isinstance(err, RecursionError):
        return "input nested too deeply (RecursionError: maximum recursion depth exceeded)"
    return None


def friendly_errors(main: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the framework's bad-input errors into one line on stderr and exit code 2.

    Also an input that asks for more than the machine has: a failed allocation (MemoryError, or torch's
    "can't allocate memory" RuntimeError) and a structure nested too deep (RecursionError), directly or as the
    cause of a Hydra InstantiationException. A message taken from an exception is cut at MAX_MESSAGE characters.
    """

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(os.environ.get("SPIKEYOLO_DEBUG"))
        try:
            return main(*args, **kwargs)
        except (InputError, FileNotFoundError) as err:
            if debug:
                raise
            _report(_bounded(one_line(err), MAX_INPUT_MESSAGE if isinstance(err, InputError) else MAX_MESSAGE))
        except InstantiationException as err:  # a constructor rejected a config value (T < 1, D < 1, ...)
            cause = err.__cause__
            resource = _resource_error(cause) if cause is not None else None
            if debug or (resource is None and not isinstance(cause, (ValueError, TypeError))):
                raise
            _report(resource or _bounded(one_line(cause)))
        except OSError as err:  # a full disk while writing checkpoints or results
            if debug or err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                raise
            _report(f"{err.strerror or err}{f': {err.filename}' if err.filename else ''} "
                    "(files written before are intact; a training run resumes with trainer.resume=true)")
        except ValueError as err:  # configuration values rejected by constructors
            if debug:
                raise
            _report(_bounded(one_line(err)))
        except (MemoryError, RuntimeError) as err:  # an allocation that failed, a structure nested too deep
            message = _resource_error(err)
            if debug or message is None:
                raise
            _report(message)

    return wrapper


# --------------------------------------------------------------------------- the command line


def _group_options(group: str) -> list[str]:
    """The options of a config group: its yaml files (subfolders too: ``ablation/table1_td``), not ``_*``."""
    folder = CONFIG_DIR / group
    return sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml")
                  if not any(part.startswith("_") for part in p.relative_to(folder).parts))


def _kind(node: Any) -> str:
    """What a config node takes, in words ("an integer", "a number or null", ...)."""
    if isinstance(node, ListConfig):
        element = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(
            node._metadata.element_type, "values")
        kind = f"a list of {element}"
    elif isinstance(node, DictConfig):
        kind = "a mapping"
    else:
        kind = {BooleanNode: "a boolean (true/false)", IntegerNode: "an integer", FloatNode: "a number",
                StringNode: "a string"}.get(type(node), "a value")
    return f"{kind} or null" if node._is_optional() and kind != "a value" else kind


def _type_error(cause: ValidationError, texts: dict[str, str]) -> str:
    """``trainer.epochs must be an integer, got 'abc'`` from the schema's refusal of an override."""
    key = str(cause.full_key)
    parent = cause.parent_node
    if isinstance(parent, ListConfig):          # an element of a typed list: the list is what was given
        key = key.rsplit("[", 1)[0]
        kind = _kind(parent)
    else:
        kind = _kind(parent._get_node(cause.key)) if parent is not None else "a value of another type"
    given = texts.get(key, repr(cause.value))
    return f"{key} must be {kind}, got {given}"


def _unknown_key(cause: ConfigKeyError | ConfigAttributeError, texts: dict[str, str]) -> str:
    """``unknown config key 'trainer.epochz' ...; valid keys of trainer: ...`` (``+key=value`` adds one where the
    config is not typed: model, data)."""
    key = str(cause.full_key)
    parent, node = key.rpartition(".")[0], cause.parent_node
    keys = ", ".join(sorted(str(k) for k in node.keys() if k != "hydra")) if isinstance(node, DictConfig) else ""
    where = f"valid keys of {parent}" if parent else "valid top-level keys"
    text = next((t for k, t in texts.items() if k == key or k.startswith(key + ".")), key)
    typed = isinstance(node, DictConfig) and OmegaConf.get_type(node) not in (dict, None)
    return (f"unknown config key {key!r} in {text!r}" + (f"; {where}: {keys}" if keys else "")
            + ("" if typed else f" (+{text} adds a new key)"))


def _unknown_group(group: str, text: str, config_name: str) -> str:
    groups = ", ".join(config_choices(config_name)) or "none"
    return f"{group!r} in {text!r} is not a config group of this command (its config groups: {groups})"


def check_command_line(config_name: str, overrides: Sequence[str]) -> DictConfig:
    """Compose a packaged config with command-line overrides; raise :class:`UserError` with one line if it fails.

    Checks: every override parses and is not a sweep; every config-group option exists (the valid options are
    listed); every ``key=value`` names an existing key (the valid keys of its parent are listed) and has the
    type the schema declares (``null`` where it is optional); no value is left unset (``???``); ``run_dir`` can be
    created (nothing is created here). Returns the composed config.
    """
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as err:
        raise UserError(f"cannot parse override {err.override!r}: {one_line(err)}") from None
    texts = {}
    for override, text in zip(parsed, overrides):
        if override.is_sweep_override():
            key, value = override.key_or_group, text.partition("=")[2]
            raise UserError(f"{text!r} is a sweep (several values): quote one string with commas ({key}='{value}'), "
                            f"or give a list where the key takes one ({key}=[{value}])")
        texts[override.key_or_group] = text
    try:
        cfg = compose(list(overrides), config_name=config_name)
    except MissingConfigException as err:
        group = Path(str(err.missing_cfg_file or "")).parent.name
        wanted = Path(str(err.missing_cfg_file or "")).name
        if group and (CONFIG_DIR / group).is_dir():
            raise UserError(f"unknown {group} option {wanted!r}; valid options: "
                            f"{', '.join(_group_options(group))}") from None
        raise UserError(one_line(err)) from None
    except ConfigCompositionException as err:
        cause = err.__cause__
        if isinstance(cause, ValidationError):
            raise UserError(_type_error(cause, {k: repr(v.partition("=")[2]) for k, v in texts.items()})) from None
        if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
            raise UserError(_unknown_key(cause, texts)) from None
        unmatched = next((key for key in texts if f"Could not override '{key}'" in str(err)), None)
        if unmatched is not None and "defaults list" in str(err):   # a group this command does not have
            raise UserError(_unknown_group(unmatched, texts[unmatched], config_name)) from None
        raise UserError(one_line(err)) from None
    except HydraException as err:
        raise UserError(one_line(err)) from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise UserError(f"{missing[0]} has no value (???): give {missing[0]}=...")
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


def command_help(prog: str, config_name: str, doc: str | None) -> str:
    """``--help`` of a command: its docstring and the config groups it uses, with their options."""
    lines = [(doc or prog).strip(), "", f"Usage: {prog} [KEY=VALUE ...] [GROUP=OPTION ...]", ""]
    choices = config_choices(config_name)
    if choices:
        lines.append("Config groups (GROUP=OPTION; the default in brackets):")
        for group, choice in choices.items():
            options = [f"[{o}]" if o == choice else o for o in _group_options(group)]
            lines.append(f"  {group}: {', '.join(options)}" + ("  (default: none)" if choice is None else ""))
    else:
        lines.append("Config groups: none")
    lines += ["", f"Every key and its value: {prog} --cfg job. Keys, types and defaults: spikeyolo/config/schema.py.",
              "A bad key, value or option is refused with one line on stderr (exit code 2). Hydra's flags: "
              "--hydra-help."]
    return "\n".join(lines)


_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--experimental-rerun"}
_INFO_VALUES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def _overrides(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """(overrides, Hydra flags) of a command line."""
    overrides, flags = [], []
    pending = False
    for arg in args:
        if pending or (flags and flags[-1] in ("--info", "-i") and arg in _INFO_VALUES):
            flags.append(arg)
            pending = False
        elif arg.startswith("-"):
            flags.append(arg)
            pending = arg in _FLAGS_WITH_VALUE
        else:
            overrides.append(arg)
    return overrides, flags


def _sweep_overrides(config_name: str, overrides: Sequence[str]) -> list[str]:
    """Check every point of a sweep as a command line of its own (bad input: UserError, before anything runs) and
    return the Hydra overrides that lay it out: the sweep in one folder (the ``run_dir`` of the command line without
    the swept values: ``runs/<name>/<time>``), each point in ``<number>_<its swept overrides>`` below it."""
    points, swept = sweep_points(overrides)
    for point in points:
        check_command_line(config_name, point)
    fixed = [o for o in overrides if not o.startswith("hydra.")
             and OverridesParser.create().parse_override(o).get_key_element() not in swept]
    extra = []
    given = {o.partition("=")[0] for o in overrides}
    run_dir = OmegaConf.select(check_command_line(config_name, fixed), "run_dir", default=None)
    if run_dir is not None and "hydra.sweep.dir" not in given:
        extra.append("hydra.sweep.dir='" + str(run_dir).replace("'", "\\'") + "'")
    keys = [OverridesParser.create().parse_override(o).get_key_element() for o in fixed]
    if keys and "hydra.job.config.override_dirname.exclude_keys" not in given:
        extra.append(f"hydra.job.config.override_dirname.exclude_keys=[{','.join(keys)}]")
    return extra


def _is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def hydra_app(config_name: str, task: Callable[[DictConfig], Any], doc: str | None = None) -> Callable[..., None]:
    """The console entry of a command: ``main = hydra_app("train", train, __doc__)``.

    ``main(argv=None)`` answers ``--help`` itself (``doc`` and the config groups the command uses), checks the
    command line (:func:`check_command_line`; bad input is one line and exit code 2), then runs ``task`` on the
    composed config as a Hydra app (``configs/<config_name>.yaml``; Hydra's flags, e.g. ``--cfg job``, work).

    A sweep (``-m KEY=A,B ...``) checks every point first; then each point runs with its ``run_dir`` set to its own
    folder, ``RUN_DIR/<number>_<swept overrides>`` (RUN_DIR: the sweep's, ``runs/<name>/<time>`` by default).
    """

    @hydra.main(config_path=str(CONFIG_DIR), config_name=config_name, version_base=None)
    def hydra_main(cfg: DictConfig) -> Any:
        if _is_multirun() and "run_dir" in cfg:
            sweep = HydraConfig.get().sweep
            cfg.run_dir = str(Path(str(sweep.dir)) / str(sweep.subdir))
        return task(cfg)

    def main(argv: Sequence[str] | None = None) -> None:
        args = list(sys.argv[1:] if argv is None else argv)
        prog = f"spikeyolo-{config_name}"
        if "--help" in args or "-h" in args:
            print(command_help(prog, config_name, doc))
            return
        overrides, flags = _overrides(args)
        debug = bool(os.environ.get("SPIKEYOLO_DEBUG"))
        try:
            if {"-m", "--multirun"} & set(flags):
                args += _sweep_overrides(config_name, overrides)
            elif not debug:
                check_command_line(config_name, overrides)
        except UserError as err:
            if debug:
                raise
            _report(one_line(err))
        saved = sys.argv
        sys.argv = [saved[0] if saved else prog, *args]
        try:
            hydra_main()
        finally:
            sys.argv = saved

    main.__doc__ = f"The console entry of spikeyolo-{config_name} (spikeyolo.cli.common.hydra_app)."
    return main


# --------------------------------------------------------------------------- run directory and logging


def prepare_run_dir(cfg: DictConfig, min_free_gb: float | None = None) -> Path:
    """Create RUN_DIR (checking it is writable and has free space) and save the resolved config there.

    Args:
        cfg: the composed config (``run_dir``; ``trainer.min_free_gb`` when present).
        min_free_gb: required free space on RUN_DIR's file system; default ``trainer.min_free_gb`` (0: no check).

    Raises:
        UserError: RUN_DIR cannot be created or written, or its file system has less free space than required.
    """
    run_dir = Path(cfg.run_dir)
    if min_free_gb is None:
        min_free_gb = OmegaConf.select(cfg, "trainer.min_free_gb", default=None)
    if min_free_gb:   # measured where run_dir is or will be, before it is created (a refusal leaves no folder)
        existing = run_dir.absolute()
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        free_gb = shutil.disk_usage(existing).free / 1e9
        if free_gb < float(min_free_gb):
            raise UserError(f"only {free_gb:.2f} GB free on the file system of run_dir {run_dir}; "
                            f"trainer.min_free_gb={min_free_gb} (checkpoints need room; lower it to run anyway)")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise UserError(f"run_dir {run_dir} is not writable: {err.strerror or err}") from None
    write_run_config(run_dir / "config.yaml", cfg)
    return run_dir


def setup_logging(keep_for_file: bool = False) -> None:
    """INFO records to stdout; with ``keep_for_file`` they are also kept until :func:`log_to_file` names the file
    (a run's train.log then starts with what was logged before its folder existed)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if keep_for_file:
        handlers.append(logging.handlers.MemoryHandler(capacity=1 << 20, flushLevel=logging.CRITICAL + 1))
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=handlers, force=True)
    for noisy in ("ultralytics", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def log_to_file(path: Path) -> None:
    """Also log to ``path``, starting with the records :func:`setup_logging` kept."""
    root = logging.getLogger()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for kept in [h for h in root.handlers if isinstance(h, logging.handlers.MemoryHandler)]:
        kept.setTarget(handler)
        kept.flush()
        root.removeHandler(kept)
    root.addHandler(handler)
