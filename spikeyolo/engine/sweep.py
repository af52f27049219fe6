"""The summary of a training sweep (``spikeyolo-train -m neuron.max_level=1,2,4``): one row per point.

Hydra runs each point in its own run folder, ``SWEEP_DIR/<number>_<swept overrides>``
(:func:`spikeyolo.cli.common.hydra_app`). After each point :class:`SweepSummary` (a Hydra callback, configs/train.yaml)
adds the point's row to SWEEP_DIR/summary.csv and rewrites SWEEP_DIR/summary.md from it: the swept values as given
on the command line, the final map50 / map50_95 of the point's best.pt (its metrics.json), the epochs it trained and
its run folder. A point that failed has no metrics (blank cells); a sweep stopped early keeps the rows of the points
that ran. Both files are written atomically.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from pathlib import Path
from typing import Any, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.errors import OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig

from spikeyolo.errors import UserError
from spikeyolo.io import write_text

__all__ = ["SweepSummary", "sweep_points", "point_row", "write_summary"]

def sweep_points(overrides: Sequence[str]) -> tuple[list[list[str]], list[str]]:
    """The points of a sweep (``-m``) as Hydra's basic sweeper expands them, and the swept keys.

    ``["neuron.max_level=1,2", "trainer.epochs=1"]`` -> ``([["neuron.max_level=1", "trainer.epochs=1"],
    ["neuron.max_level=2", "trainer.epochs=1"]], ["neuron.max_level"])``. ``hydra.*`` overrides are left out.

    Raises:
        UserError: an override that does not parse, or a sweep the basic sweeper does not run (``interval(...)``).
    """
    try:
        parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("hydra.")])
    except OverrideParseException as err:
        raise UserError(f"cannot parse override {err.override!r}: {str(err).strip().splitlines()[0]}") from None
    # the basic sweeper's expansion (hydra/_internal/core_plugins/basic_sweeper.py, split_arguments) through the
    # public Override API: one list of "key=value" per key (a later override of a key replaces it), then their
    # Cartesian product in command-line order
    choices: dict[str, list[str]] = {}
    for override in parsed:
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            raise UserError(f"BasicSweeper does not support sweep type : {override.value_type.name}")
    points = [list(point) for point in itertools.product(*choices.values())]
    return points, [override.get_key_element() for override in parsed if override.is_sweep_override()]


def point_row(number: int, overrides: list[str], swept: list[str], run_dir: Path) -> dict[str, Any]:
    """The summary row of one point: its number, the swept values as given, and its final metrics.

    Args:
        overrides: the point's command line (``key=value``, one value each).
        swept: the swept keys, in the sweep's order.
        run_dir: the point's run folder (metrics.json: ``map50``, ``map50_95``, ``epochs_trained``).
    """
    given = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        given[override.get_key_element()] = override.get_value_element_as_str()
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return {"point": number, **{key: given.get(key, "") for key in swept},
            "map50": metrics.get("map50", ""), "map50_95": metrics.get("map50_95", ""),
            "epochs": metrics.get("epochs_trained", ""), "run_dir": str(run_dir)}


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_summary(sweep_dir: Path, row: dict[str, Any]) -> list[dict[str, Any]]:
    """Add (or replace, by point number) ``row`` in SWEEP_DIR/summary.csv and rewrite summary.md; returns the rows."""
    rows = [r for r in _read_rows(sweep_dir / "summary.csv") if str(r.get("point")) != str(row["point"])]
    rows = sorted([*rows, {k: str(v) for k, v in row.items()}], key=lambda r: int(r["point"]))
    columns = list(row)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(sweep_dir / "summary.csv", buffer.getvalue())

    def cell(column: str, value: str) -> str:
        if column in ("map50", "map50_95") and value:
            return f"{float(value):.4f}"
        return value.replace("|", "\\|") if value else "-"

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c, r.get(c, "")) for c in columns) + " |" for r in rows]
    write_text(sweep_dir / "summary.md", "\n".join(lines) + "\n")
    return rows


class SweepSummary(Callback):
    """Hydra callback: after each point of a multirun, its row in SWEEP_DIR/summary.{csv,md}; nothing in a single run.

    The swept keys are the point's overrides that ``hydra.job.config.override_dirname.exclude_keys`` does not list
    (hydra_app excludes every key given with one value).
    """

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        hydra_cfg = config.hydra
        if hydra_cfg.mode != RunMode.MULTIRUN:
            return
        overrides = [str(o) for o in hydra_cfg.overrides.task]
        fixed = set(hydra_cfg.job.config.override_dirname.exclude_keys)
        swept = [key for key in (OverridesParser.create().parse_override(o).get_key_element() for o in overrides)
                 if key not in fixed]
        sweep_dir = Path(str(hydra_cfg.sweep.dir))
        run_dir = sweep_dir / str(hydra_cfg.sweep.subdir)
        write_summary(sweep_dir, point_row(int(hydra_cfg.job.num), overrides, swept, run_dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        summary = Path(str(config.hydra.sweep.dir)) / "summary.md"
        if summary.is_file():
            print(summary.read_text(), end="")
            print(f"sweep summary: {summary} (and summary.csv)")
