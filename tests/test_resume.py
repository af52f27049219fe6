"""Resume as it happens: a training process killed with SIGKILL, continued by a new process from the run folder alone.

The resumed run must end with the same weights, bit for bit, as an uninterrupted one (CPU, workers 0), and with the
config it was started with (RUN/config.yaml), whatever the packaged defaults say. What a resume may change, and the
history kept when it changes something: :mod:`spikeyolo.config.resume`, docs/reliability.md.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from omegaconf import OmegaConf

from conftest import yolo_set
import spikeyolo
from spikeyolo.config import resume_config, write_run_config
from spikeyolo.engine import checkpoint as ckpt
from spikeyolo.engine.loggers import MetricsFile
from spikeyolo.errors import CheckpointError, UserError

REPO = Path(__file__).resolve().parents[1]
ENV = {**{k: v for k, v in os.environ.items() if k != "SPIKEYOLO_DEBUG"}, "OMP_NUM_THREADS": "1",
       "WANDB_MODE": "offline"}

# 16 training images in batches of 4: the dataset is a multiple of the batch, so torch's RandomSampler draws (and
# drops) one permutation when the next epoch starts; mosaic is closed from the first epoch (close_mosaic >= epochs,
# as the recipe's 10 in a short run); warmup's accumulation (1 -> 3 over 4 iterations) ends the first epoch between
# two optimizer steps. Each of the three was a state a new process lost.
RUN = ["model.width_multiple=0.0625", "data.imgsz=64", "trainer.batch_size=4", "trainer.workers=0",
       "trainer.device=cpu", "trainer.epochs=2", "trainer.close_mosaic=2", "trainer.max_minutes=null",
       "trainer.progress=false", "logger=none", "optim.nominal_batch_size=12", "optim.warmup_epochs=1",
       "optim.warmup_min_iters=2"]


def launch(command: list[str], log: Path) -> subprocess.Popen:
    """``python <command>`` in the repository, output to ``log``."""
    return subprocess.Popen([sys.executable, *command], cwd=REPO, env=ENV, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT)


def epoch_of(path: Path) -> int | None:
    """The epoch of a checkpoint, None while it does not exist."""
    try:
        return int(ckpt.read_checkpoint(path)["epoch"])
    except CheckpointError:
        return None


def kill_after_first_checkpoint(process: subprocess.Popen, last: Path, log: Path) -> None:
    """SIGKILL ``process`` and its children (workers, torchrun's ranks) once ``last`` holds the first epoch."""
    deadline = time.time() + 240
    while not last.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.005)   # the first last.pt a run writes is its first epoch's (written atomically)
    assert process.poll() is None, "the run ended before it could be killed: " + log.read_text()[-2000:]
    tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    for member in tree:
        member.send_signal(signal.SIGSTOP)   # held where they are (in the second epoch) while last.pt is read
    assert epoch_of(last) == 0
    for member in tree:
        member.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL and epoch_of(last) == 0


def assert_same_weights(expected_path: Path, got_path: Path) -> None:
    """Every tensor of the model and the EMA of two checkpoints equal bit for bit, at the same epoch."""
    expected, got = ckpt.read_checkpoint(expected_path), ckpt.read_checkpoint(got_path)
    assert expected["epoch"] == got["epoch"] and expected["ema_updates"] == got["ema_updates"] > 0
    for part in ("model", "ema"):
        assert expected[part].keys() == got[part].keys()
        unequal = [key for key in expected[part] if not torch.equal(expected[part][key], got[part][key])]
        assert not unequal, f"{part}: {len(unequal)} tensors differ, e.g. {unequal[:3]}"


TRAIN = ["-m", "spikeyolo.cli.train"]


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_sigkill_then_resume_in_a_new_process_equals_an_uninterrupted_run(tmp_path, workers):
    data = yolo_set(tmp_path / "set", num_train=16)
    args = [*RUN, "data=yolo", f"data.yaml={data}", f"trainer.workers={workers}"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    uninterrupted = launch([*TRAIN, *args, f"run_dir={straight}"], tmp_path / "straight.log")  # alongside the others
    kill_after_first_checkpoint(launch([*TRAIN, *args, f"run_dir={killed}"], tmp_path / "killed.log"),
                                killed / "weights" / "last.pt", tmp_path / "killed.log")
    config = (killed / "config.yaml").read_bytes()

    # a new process, given only the run folder: the packaged defaults (300 epochs, batch 40, ...) do not apply
    resumed = subprocess.run([sys.executable, *TRAIN, f"run_dir={killed}", "trainer.resume=true"],
                             cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert uninterrupted.wait(timeout=300) == 0, (tmp_path / "straight.log").read_text()[-2000:]

    assert (killed / "config.yaml").read_bytes() == config and not list(killed.glob("config.*.yaml"))
    assert [record["epoch"] for record in MetricsFile(killed).read()] == [1, 2]
    assert ckpt.read_checkpoint(killed / "weights" / "last.pt")["epoch"] == 1   # the run's 2 epochs, not 300
    assert_same_weights(straight / "weights" / "last.pt", killed / "weights" / "last.pt")


@pytest.mark.slow
def test_sigkill_of_an_event_run_with_workers_then_resume_equals_an_uninterrupted_run(tmp_path):
    """Gen1 (synthetic recordings): a plain torch loader with persistent workers, not ultralytics'."""
    args = ["experiment=gen1_synthetic", "data.synthetic.recordings={train:2,test:1}", "trainer.epochs=2",
            "trainer.batch_size=8", "trainer.workers=2", "trainer.max_minutes=null", "trainer.progress=false",
            "logger=none"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert subprocess.run([sys.executable, *TRAIN, *args, f"run_dir={straight}"], cwd=REPO, env=ENV,
                          capture_output=True, timeout=300).returncode == 0   # also makes the recordings
    kill_after_first_checkpoint(launch([*TRAIN, *args, f"run_dir={killed}"], tmp_path / "killed.log"),
                                killed / "weights" / "last.pt", tmp_path / "killed.log")
    resumed = subprocess.run([sys.executable, *TRAIN, f"run_dir={killed}", "trainer.resume=true"],
                             cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert_same_weights(straight / "weights" / "last.pt", killed / "weights" / "last.pt")


@pytest.mark.slow
def test_sigkill_of_a_ddp_run_then_resume_equals_an_uninterrupted_run(tmp_path):
    """torchrun, 2 ranks (gloo, CPU): each rank continues from its own RNG and loader state."""
    data = yolo_set(tmp_path / "set", num_train=16)
    args = [*RUN, "data=yolo", f"data.yaml={data}", "trainer.batch_size=4"]   # in all: 2 a rank

    def torchrun(port: int) -> list[str]:
        return ["-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", *TRAIN]

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    uninterrupted = launch([*torchrun(29611), *args, f"run_dir={straight}"], tmp_path / "straight.log")
    kill_after_first_checkpoint(launch([*torchrun(29612), *args, f"run_dir={killed}"], tmp_path / "killed.log"),
                                killed / "weights" / "last.pt", tmp_path / "killed.log")
    resumed = subprocess.run([sys.executable, *torchrun(29613), f"run_dir={killed}", "trainer.resume=true"],
                             cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert uninterrupted.wait(timeout=300) == 0, (tmp_path / "straight.log").read_text()[-2000:]
    assert_same_weights(straight / "weights" / "last.pt", killed / "weights" / "last.pt")


def test_a_resume_drops_the_records_after_its_checkpoint(tmp_path):
    """A kill after an epoch's record but before its last.pt: the resume redoes that epoch and writes its record again."""
    metrics = MetricsFile(tmp_path)
    for epoch in (1, 2, 3):
        metrics.write({"epoch": epoch, "train/box": float(epoch)})
    with open(metrics.path, "a") as handle:
        handle.write('{"epoch": 4, "train/b')                      # killed while appending
    assert [r["epoch"] for r in metrics.read()] == [1, 2, 3]
    metrics.keep_epochs(2)                                        # last.pt of epoch 2 (0-based 1): start at 3
    metrics.write({"epoch": 3, "train/box": 3.5})
    assert metrics.read() == [{"epoch": 1, "train/box": 1.0}, {"epoch": 2, "train/box": 2.0},
                              {"epoch": 3, "train/box": 3.5}]


# --------------------------------------------------------------------------- the run's config


def saved_run(run_dir: Path, *overrides: str) -> Path:
    """A run folder with the config.yaml spikeyolo-train writes (nothing trained)."""
    cfg = spikeyolo.compose(["experiment=demo", *overrides, f"run_dir={run_dir}"])
    run_dir.mkdir(parents=True)
    write_run_config(run_dir / "config.yaml", cfg)
    return run_dir


def test_resume_continues_the_saved_config(tmp_path):
    run = saved_run(tmp_path / "run", "trainer.epochs=2", "model.width_multiple=0.0625")
    cfg = resume_config([f"run_dir={run}", "trainer.resume=true"])
    assert cfg.trainer.epochs == 2 and cfg.trainer.resume and cfg.model.width_multiple == 0.0625
    assert cfg.name == "demo_spikeyolo_n" and cfg.optim.name == "adamw" and cfg.run_dir == str(run)
    # typed by the schema as a composed config is
    assert OmegaConf.get_type(cfg.trainer).__name__ == "TrainerConfig"
    assert OmegaConf.get_type(cfg.neuron).__name__ == "ILIFConfig"
    # allowed: trainer.epochs upward, the device; a repeated value of the run is no change
    cfg = resume_config([f"run_dir={run}", "trainer.epochs=5", "trainer.device=0", "model.width_multiple=0.0625"])
    assert cfg.trainer.epochs == 5 and cfg.trainer.device == "0"
    # the original command line repeated (its config groups too) changes nothing either
    cfg = resume_config(["experiment=demo", "trainer.epochs=2", "model.width_multiple=0.0625", "model=spikeyolo_n",
                         f"run_dir={run}", "trainer.resume=true", "trainer.workers=2"])
    assert cfg.trainer.epochs == 2 and cfg.trainer.workers == 2


@pytest.mark.parametrize("overrides, refused", [
    (["model.width_multiple=0.125"], "model.width_multiple=0.125 (the run has 0.0625)"),
    (["trainer.epochs=1"], "trainer.epochs=1 (below the run's 2: epochs may only go up)"),
    (["model=spikeyolo_s", "optim.lr0=0.1"],
     "model=spikeyolo_s (a config group that changes the run), optim.lr0=0.1 (the run has 0.002)"),
    (["experiment=demo"], "experiment=demo (a config group that changes the run)"),  # its own epochs and width
    (["trainer.amp=false"], "trainer.amp=false (the run has true)"),
])
def test_resume_refuses_what_would_change_the_run(tmp_path, overrides, refused):
    run = saved_run(tmp_path / "run", "trainer.epochs=2", "model.width_multiple=0.0625")
    with pytest.raises(UserError) as err:
        resume_config([f"run_dir={run}", "trainer.resume=true", *overrides])
    assert str(err.value) == (
        f"trainer.resume=true continues {run} as its config.yaml says; refused: {refused}; a resume may change only "
        "trainer.epochs (upward), trainer.device, trainer.workers, trainer.progress, trainer.max_minutes, "
        "trainer.min_free_gb, trainer.save_period, trainer.log_images")


def test_resume_needs_a_run_folder(tmp_path):
    with pytest.raises(UserError, match="needs run_dir=RUN"):
        resume_config(["trainer.resume=true"])
    with pytest.raises(UserError, match=f"{tmp_path / 'nope' / 'config.yaml'} does not exist"):
        resume_config([f"run_dir={tmp_path / 'nope'}", "trainer.resume=true"])
    run = saved_run(tmp_path / "run", "trainer.epochs=7")
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("epochs: 7", "epochs: many"))
    with pytest.raises(UserError, match="config.yaml: trainer.epochs: Value 'many'"):
        resume_config([f"run_dir={run}"])


def test_config_yaml_is_never_overwritten_by_another(tmp_path):
    run = saved_run(tmp_path / "run", "trainer.epochs=2")
    first = (run / "config.yaml").read_text()
    write_run_config(run / "config.yaml", resume_config([f"run_dir={run}", "trainer.resume=true"]))
    assert (run / "config.yaml").read_text() == first and sorted(p.name for p in run.iterdir()) == ["config.yaml"]
    write_run_config(run / "config.yaml", resume_config([f"run_dir={run}", "trainer.epochs=4"]))
    write_run_config(run / "config.yaml", resume_config([f"run_dir={run}", "trainer.epochs=6"]))
    assert (run / "config.1.yaml").read_text() == first
    assert OmegaConf.load(run / "config.2.yaml").trainer.epochs == 4
    assert OmegaConf.load(run / "config.yaml").trainer.epochs == 6


def test_resume_refusal_is_one_line_before_anything_runs(tmp_path, monkeypatch, capsys):
    from spikeyolo.cli import train

    run = saved_run(tmp_path / "run", "trainer.epochs=2", "data.imgsz=320")
    before = sorted(run.iterdir())
    monkeypatch.setattr(sys, "argv", ["spikeyolo-train", f"run_dir={run}", "trainer.resume=true", "data.imgsz=96"])
    with pytest.raises(SystemExit) as exit_:
        train.main()
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert exit_.value.code == 2 and len(errors) == 1 and "refused: data.imgsz=96 (the run has 320)" in errors[0]
    assert sorted(run.iterdir()) == before
