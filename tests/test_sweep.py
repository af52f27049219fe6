"""Sweeps as users run them: ``spikeyolo-train -m KEY=A,B ...`` (Hydra multirun), one run folder per point and a summary.

Layout (spikeyolo.cli.common.hydra_app): the sweep's folder is the run_dir of the command line without the swept values
(``runs/<name>/<time>``), each point runs in ``<number>_<swept overrides>`` below it, and the sweep's summary.md /
summary.csv list the swept values and each point's final mAP, epochs and folder (spikeyolo/engine/sweep.py).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
ENV = {**{k: v for k, v in os.environ.items() if k != "SPIKEYOLO_DEBUG"}, "OMP_NUM_THREADS": "1",
       "WANDB_MODE": "offline"}
TINY_RUN = ["model.width_multiple=0.0625", "data.imgsz=64", "trainer.batch_size=8", "trainer.workers=0",
            "trainer.device=cpu", "trainer.epochs=1", "trainer.max_minutes=null", "logger=none",
            "trainer.progress=false"]


def test_multirun_writes_a_run_folder_per_point_and_a_summary(tmp_path):
    result = subprocess.run([sys.executable, "-m", "spikeyolo.cli.train", "-m", "neuron.max_level=1,2", *TINY_RUN],
                            cwd=tmp_path, env={**ENV, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    # no run_dir given: the sweep is one folder, runs/<name>/<time>, as a single run would be
    (sweep,) = (tmp_path / "runs" / "spikeyolo_n_trees").iterdir()
    points = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert points == ["0_neuron.max_level-1", "1_neuron.max_level-2"]
    for level, name in ((1, points[0]), (2, points[1])):
        config = OmegaConf.load(sweep / name / "config.yaml")
        assert config.neuron.max_level == level and config.run_dir == str(Path("runs") / "spikeyolo_n_trees" /
                                                                           sweep.name / name)
        assert (sweep / name / "weights" / "best.pt").is_file()

    with open(sweep / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["neuron.max_level"] for row in rows] == ["1", "2"] and [row["point"] for row in rows] == ["0", "1"]
    for row, name in zip(rows, points):
        metrics = json.loads((sweep / name / "metrics.json").read_text())
        assert row["run_dir"] == str(Path("runs") / "spikeyolo_n_trees" / sweep.name / name)
        assert float(row["map50"]) == metrics["map50"] and float(row["map50_95"]) == metrics["map50_95"]
        assert row["epochs"] == "1"
    table = (sweep / "summary.md").read_text().splitlines()
    assert table[0] == "| point | neuron.max_level | map50 | map50_95 | epochs | run_dir |" and len(table) == 4
    assert table[2].startswith("| 0 | 1 | ") and table[3].startswith("| 1 | 2 | ")
    assert f"sweep summary: {sweep.relative_to(tmp_path) / 'summary.md'}" in result.stdout
    # a point's folder is a run folder that resumes as written (no quotes: its name has no '=' or ',')
    from spikeyolo.config import resume_config

    resumed = resume_config([f"run_dir={sweep / points[1]}", "trainer.resume=true", "trainer.epochs=2"])
    assert resumed.neuron.max_level == 2 and resumed.trainer.epochs == 2


def test_a_bad_point_is_one_line_before_any_point_runs(tmp_path, monkeypatch, capsys):
    from spikeyolo.cli import train

    for sweep, message in ((["neuron.max_level=1,abc"], "error: neuron.max_level must be an integer, got 'abc'"),
                           (["optim=sgd,lion"], "error: unknown optim option 'lion'; valid options: adamw, sgd"),
                           (["neuron.max_level=interval(1,2)"], "error: BasicSweeper does not support sweep type")):
        monkeypatch.setattr(sys, "argv", ["spikeyolo-train", "-m", *sweep, *TINY_RUN, f"run_dir={tmp_path / 'sweep'}"])
        capsys.readouterr()
        try:
            train.main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
        assert code == 2 and len(errors) == 1 and errors[0].startswith(message), (code, errors)
        assert not (tmp_path / "sweep").exists()


def test_sweep_points_expand_as_hydra_does():
    from spikeyolo.engine.sweep import sweep_points

    points, swept = sweep_points(["neuron.max_level=1,2", "trainer.epochs=1", "neuron.time_steps=1,4"])
    assert swept == ["neuron.max_level", "neuron.time_steps"]
    assert points == [["neuron.max_level=1", "trainer.epochs=1", "neuron.time_steps=1"],
                      ["neuron.max_level=1", "trainer.epochs=1", "neuron.time_steps=4"],
                      ["neuron.max_level=2", "trainer.epochs=1", "neuron.time_steps=1"],
                      ["neuron.max_level=2", "trainer.epochs=1", "neuron.time_steps=4"]]


@pytest.mark.parametrize("overrides", [
    ["a=1,2", "b=x", "c=range(0,6,2)"], ["+new=1,2", "a=choice(3,4)", "a=5,6"], ["a=[1,2],[3]", "b='q,r'"],
    ["model=spikeyolo_n,spikeyolo_s", "~data.x", "hydra.job.chdir=true"]])
def test_sweep_points_equal_hydras_basic_sweeper(overrides):
    """The package expands sweeps with the public Override API; Hydra's own (internal) sweeper is the oracle."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from spikeyolo.engine.sweep import sweep_points

    parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("hydra.")])
    assert sweep_points(overrides)[0] == BasicSweeper.split_arguments(parsed, None)[0]


def test_an_interval_sweep_is_one_line():
    from spikeyolo.engine.sweep import sweep_points
    from spikeyolo.errors import UserError

    with pytest.raises(UserError, match="does not support sweep type : INTERVAL"):
        sweep_points(["optim.lr0=interval(0.1,0.2)"])
