"""Experiment loggers (the logger config group). Every run also writes RUN_DIR/metrics.jsonl.

A logger receives flat metric dicts (``train/box``, ``metrics/map50``, ``lr/pg0``,
``firing/backbone`` ...) with the epoch as step, and PNG files to show.
wandb sits behind ``WandbLogger`` only (one adapter for its API).
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

from spikeyolo.config.names import shown
from spikeyolo.errors import UserError
from spikeyolo.io import atomic_path

__all__ = ["MetricsFile", "NullLogger", "CSVLogger", "WandbLogger", "LOGGERS", "build_logger"]


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsFile:
    """Appends one JSON object per line to RUN_DIR/metrics.jsonl (always on)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"

    def write(self, record: Mapping[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({k: _plain(v) for k, v in record.items()}) + "\n")

    def keep_epochs(self, last_epoch: int) -> None:
        """Drop the records of epochs after ``last_epoch`` (1-based; a resumed run redoes them) and a torn last line."""
        if not self.path.exists():
            return
        kept = [r for r in self.read() if not isinstance(r.get("epoch"), int) or r["epoch"] <= last_epoch]
        with atomic_path(self.path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record) + "\n" for record in kept)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        lines = [line for line in self.path.read_text().splitlines() if line.strip()]
        records = []
        for index, line in enumerate(lines):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if index < len(lines) - 1:
                    raise
                # a run killed while appending leaves a torn last line: that epoch is redone on resume
        return records


class NullLogger:
    """No dashboard."""

    def __init__(self, run_dir: str | Path | None = None, run_config: Mapping[str, Any] | None = None, **_: Any) -> None:
        self.run_dir = Path(run_dir) if run_dir else None

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        pass

    def log_image(self, name: str, path: str | Path, step: int) -> None:
        pass

    def finish(self) -> None:
        pass


class CSVLogger(NullLogger):
    """RUN_DIR/results.csv with one row per logged step (columns grow as new keys appear)."""

    def __init__(self, run_dir: str | Path, run_config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(run_dir, run_config, **kwargs)
        self.path = Path(run_dir) / "results.csv"
        self.rows: list[dict[str, Any]] = []
        if self.path.exists():  # resumed run: keep what was logged
            with open(self.path, newline="", encoding="utf-8") as handle:
                self.rows = list(csv.DictReader(handle))

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        # a resumed run re-logs the epochs after its checkpoint: the newest row of a step wins
        self.rows = [r for r in self.rows if str(r.get("step")) != str(step)] + [row]
        columns: list[str] = []
        for record in self.rows:
            columns.extend(k for k in record if k not in columns)
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)


class WandbLogger(NullLogger):
    """Weights & Biases; offline unless ``mode=online`` (or WANDB_MODE) is set.

    Args:
        run_dir: run directory (wandb writes RUN_DIR/wandb).
        config: resolved run config.
        project, entity, tags: wandb run fields.
        mode: offline | online | disabled.
    """

    def __init__(self, run_dir: str | Path, run_config: Mapping[str, Any] | None = None, project: str = "spikeyolo",
                 entity: str | None = None, mode: str = "offline", tags: list[str] | None = None,
                 **_: Any) -> None:
        super().__init__(run_dir, run_config)
        import wandb

        self._wandb = wandb
        mode = os.environ.get("WANDB_MODE", mode)
        self.run = wandb.init(project=project, entity=entity, mode=mode, dir=str(run_dir), config=dict(run_config or {}),
                              tags=list(tags or []), name=Path(run_dir).name, resume="allow", reinit=True)

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        self.run.log({k: _plain(v) for k, v in metrics.items()}, step=step)

    def log_image(self, name: str, path: str | Path, step: int) -> None:
        self.run.log({name: self._wandb.Image(str(path))}, step=step)

    def finish(self) -> None:
        self.run.finish()


# logger.kind -> class (spikeyolo.config.names.LOGGERS: the same names; a run's config.yaml names one of these)
LOGGERS: dict[str, type[NullLogger]] = {"csv": CSVLogger, "none": NullLogger, "wandb": WandbLogger}


def build_logger(node: Mapping[str, Any], run_dir: str | Path, run_config: Mapping[str, Any]) -> NullLogger:
    """The logger a ``logger`` config node names (``kind`` plus that logger's settings)."""
    settings = dict(node)
    kind = settings.pop("kind", None)
    if kind not in LOGGERS:
        raise UserError(f"logger.kind: unknown logger {shown(kind)} (known: {', '.join(LOGGERS)})")
    return LOGGERS[kind](run_dir=str(run_dir), run_config=run_config, **settings)
