"""Shared helpers of the Hydra entry points: one-line errors, run directories, logging setup."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

EXIT_BAD_INPUT = 2

__all__ = ["EXIT_BAD_INPUT", "UserError", "friendly_errors", "prepare_run_dir", "write_json", "setup_logging"]


class UserError(ValueError):
    """Bad input detected by an entry point (printed as one line, exit code 2)."""


def _user_error_types() -> tuple[type[BaseException], ...]:
    from spikeyolo.data.errors import DatasetError
    from spikeyolo.engine.checkpoint import CheckpointError
    from spikeyolo.engine.trainer import TrainingError
    from spikeyolo.nn.reference import ReferenceKeyError

    return (UserError, DatasetError, CheckpointError, TrainingError, ReferenceKeyError, FileNotFoundError)


def friendly_errors(main: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the framework's bad-input errors into one line on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except _user_error_types() as err:
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            print(f"error: {message}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        except ValueError as err:  # configuration values rejected by constructors (T < 1, D < 1, ...)
            if os.environ.get("SPIKEYOLO_DEBUG"):
                raise
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            print(f"error: {message}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)

    return wrapper


def prepare_run_dir(cfg: DictConfig) -> Path:
    """Create RUN_DIR (checking it is writable) and save the resolved config as RUN_DIR/config.yaml."""
    run_dir = Path(cfg.run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise UserError(f"run_dir {run_dir} is not writable: {err.strerror or err}") from None
    config_path = run_dir / "config.yaml"
    tmp = config_path.with_suffix(".yaml.tmp")
    tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    os.replace(tmp, config_path)
    return run_dir


def write_json(path: str | Path, payload: Any) -> Path:
    """Write JSON atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    os.replace(tmp, path)
    return path


def setup_logging(run_dir: Path | None = None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if run_dir is not None:
        handlers.append(logging.FileHandler(run_dir / "train.log"))
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=handlers, force=True)
    for noisy in ("ultralytics", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
