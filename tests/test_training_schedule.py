"""The training step as the reference takes it (GitHub issue 25, items 2 and 3).

The reference is BICLab/SpikeYOLO @309ef5e, whose engine is its ultralytics 8.0.197 fork; its schedule is written out
below from ``ultralytics/engine/trainer.py`` (cited as trainer.py:LINE). The project's trainer runs a few epochs on a
stub (its loader, model and loss replaced; its own schedule, optimizer, warmup and step decisions kept) and must give
the same lr, momentum, accumulation and optimizer steps, iteration by iteration, including the gradient each step
applies (what was accumulated since the last step or since the epoch started).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

import spikeyolo
from spikeyolo.engine.distributed import rank_batch_size
from spikeyolo.engine.optim import Schedule
from spikeyolo.engine.trainer import Trainer
from spikeyolo.errors import UserError

TINY_RUN = ["model.width_multiple=0.0625", "data.imgsz=64", "trainer.workers=0", "trainer.device=cpu",
            "trainer.max_minutes=null", "trainer.close_mosaic=0", "logger=none", "trainer.progress=false"]


def reference_schedule(epochs: int, nb: int, nw: int, lr0: float, lrf: float, nbs: int, batch: int,
                       warmup_bias_lr: float, warmup_momentum: float, momentum: float) -> list[tuple]:
    """The reference's per-iteration decisions, from its trainer (ultralytics 8.0.197 fork @309ef5e):

    - lf(x) = (1 - x / epochs)(1 - lrf) + lrf (trainer.py:278); LambdaLR sets lr = lr0 lf(0) when it is built and its
      last_epoch is then set to start_epoch - 1 (trainer.py:279-282); scheduler.step() after every epoch
      (trainer.py:377) moves last_epoch to that epoch: lr = lr0 lf(epoch).
    - accumulate = max(round(nbs / batch), 1) (trainer.py:265); last_opt_step = -1 once, before the epochs
      (trainer.py:296); optimizer.zero_grad() when an epoch starts (trainer.py:326).
    - warmup while ni <= nw (trainer.py:330-339): accumulate = max(1, interp(ni, [0, nw], [1, nbs / batch]).round());
      lr of group j interp(ni, [0, nw], [warmup_bias_lr if j == 0 else 0, lr0 lf(epoch)]); momentum
      interp(ni, [0, nw], [warmup_momentum, momentum]).
    - a step when ni - last_opt_step >= accumulate (trainer.py:355-357).

    Returns one (ni, (lr0, lr1, lr2), momentum, accumulate, step, batches in the step's gradient) per iteration.
    """
    def lf(x: float) -> float:
        return (1 - x / epochs) * (1.0 - lrf) + lrf

    lrs, group_momentum = [lr0 * lf(0)] * 3, momentum
    accumulate, last_opt_step, out = max(round(nbs / batch), 1), -1, []
    for epoch in range(epochs):
        pending = 0                                            # zero_grad
        for i in range(nb):
            ni = i + nb * epoch
            if ni <= nw:
                xi = [0, nw]
                accumulate = max(1, np.interp(ni, xi, [1, nbs / batch]).round())
                lrs = [np.interp(ni, xi, [warmup_bias_lr if j == 0 else 0.0, lr0 * lf(epoch)]) for j in range(3)]
                group_momentum = np.interp(ni, xi, [warmup_momentum, momentum])
            pending += 1                                       # backward
            step = ni - last_opt_step >= accumulate
            out.append((ni, tuple(float(x) for x in lrs), float(group_momentum), int(accumulate), step,
                        pending if step else 0))
            if step:
                last_opt_step, pending = ni, 0
        lrs = [lr0 * lf(epoch)] * 3                            # scheduler.step()
    return out


class StubLoader:
    """The real loader's length and dataset (close_mosaic reads it), and tiny batches that cost nothing to run."""

    def __init__(self, loader) -> None:
        self.dataset, self.num_workers, self.length = loader.dataset, 0, len(loader)

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        for _ in range(self.length):
            yield {"img": torch.zeros(2, 3, 8, 8, dtype=torch.uint8)}


class CountingLoss:
    """loss = p[0] of one trained parameter, so its gradient counts the batches accumulated since the last zero_grad;
    records the lr and momentum the trainer set for each iteration."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer, self.seen = trainer, []
        self.parameter = trainer.optimizer.param_groups[1]["params"][0]

    def __call__(self, maps, batch) -> dict[str, torch.Tensor]:
        groups = self.trainer.optimizer.param_groups
        self.seen.append((tuple(g["lr"] for g in groups), groups[0]["momentum"]))
        return {"total": self.parameter.view(-1)[0] * 1.0}


def run_project_schedule(trainer: Trainer, epochs: int) -> list[tuple]:
    trainer.train_loader = StubLoader(trainer.train_loader)
    trainer.train_model = nn.Identity()
    trainer.ema = None
    trainer.cfg.optim.grad_clip = 0.0
    loss = trainer.loss_fn = CountingLoss(trainer)
    steps: dict[int, int] = {}
    original_step = trainer._optimizer_step

    def recording_step() -> None:
        steps[len(loss.seen) - 1] = int(loss.parameter.grad.view(-1)[0])   # batches in this step's gradient
        original_step()

    trainer._optimizer_step = recording_step
    for epoch in range(epochs):
        trainer.train_epoch(epoch)
    schedule = trainer.schedule
    return [(ni, lrs, momentum, schedule.accumulate_at(ni), ni in steps, steps.get(ni, 0))
            for ni, (lrs, momentum) in enumerate(loss.seen)]


@pytest.mark.parametrize("extra", [
    # 6 batches an epoch (44 images / 8); warmup 9 iterations, ending inside the second epoch; accumulation ramps to
    # 28 / 8 = 3.5 (round half to even: 4), so gradients are left over at epoch ends
    ["trainer.batch_size=8", "optim.nominal_batch_size=28", "optim.warmup_epochs=1.5", "optim.warmup_min_iters=2"],
    # warmup by its minimum (10 iterations > 1 epoch), accumulation 64 / 8 = 8 outlasting an epoch
    ["trainer.batch_size=8", "optim.warmup_epochs=1", "optim.warmup_min_iters=10", "optim.lrf=0.1"],
    # no warmup: epoch 0 and epoch 1 both train at lf(0), epoch e at lf(e - 1)
    ["trainer.batch_size=8", "optim.warmup_epochs=0", "optim.nominal_batch_size=16"],
])
def test_the_schedule_is_the_references_iteration_by_iteration(tmp_path, extra):
    epochs = 4
    cfg = spikeyolo.compose([*TINY_RUN, f"run_dir={tmp_path}", f"trainer.epochs={epochs}", *extra])
    trainer = Trainer(cfg)
    optim = cfg.optim
    expected = reference_schedule(epochs, trainer.batches_per_epoch, trainer.schedule.warmup_iterations, optim.lr0,
                                  optim.lrf, optim.nominal_batch_size, int(cfg.trainer.batch_size),
                                  optim.warmup_bias_lr, optim.warmup_momentum, optim.momentum)
    got = run_project_schedule(trainer, epochs)
    assert len(got) == len(expected) == epochs * trainer.batches_per_epoch
    for mine, theirs in zip(got, expected):
        assert mine[0] == theirs[0]
        assert mine[1] == pytest.approx(theirs[1], rel=1e-12, abs=1e-15), mine[0]
        assert mine[2:] == pytest.approx(theirs[2:], rel=1e-12), mine[0]
    # the carried last step is what a resume recomputes for a checkpoint that does not store it
    assert trainer.schedule.last_step_before(epochs) == trainer.last_step
    assert trainer._payload(epochs - 1)["last_opt_step"] == trainer.last_step


def test_the_lr_after_warmup_lags_one_epoch():
    schedule = Schedule(epochs=300, batches_per_epoch=10, warmup_iterations=-1, lrf=0.004, cos_lr=False,
                        nominal_batch=64, total_batch=40, bias_lr=0.1, start_momentum=0.8, momentum=0.937)
    # the reference 23M run's logged lr (shared/reference/spikeyolo-training-and-eval.md section 4): 0.00505 at epoch
    # 151 and 1.06e-4 at 300 (1-based), i.e. lf(149) and lf(298)
    assert 0.01 * schedule.epoch_lr_scale(150) == pytest.approx(0.00505, abs=5e-6)
    assert 0.01 * schedule.epoch_lr_scale(299) == pytest.approx(1.06e-4, abs=5e-7)
    assert schedule.epoch_lr_scale(0) == schedule.epoch_lr_scale(1) == 1.0


def test_warmup_accumulation_ramps_to_nominal_over_batch():
    """COCO at batch 40 (2,958 batches an epoch, 29,580 warmup iterations): 9,860 warmup iterations differ between the
    reference's ramp to 64 / 40 = 1.6 and a ramp to round(1.6) = 2."""
    schedule = Schedule(epochs=300, batches_per_epoch=2958, warmup_iterations=29580, lrf=0.004, cos_lr=False,
                        nominal_batch=64, total_batch=40, bias_lr=0.1, start_momentum=0.8, momentum=0.937)
    rounded = [max(1, int(np.interp(i, [0, 29580], [1, 2]).round())) for i in range(29581)]
    assert sum(schedule.accumulate_at(i) != r for i, r in enumerate(rounded)) == 9860
    assert schedule.accumulate_at(29580) == schedule.accumulate_at(10 ** 6) == schedule.accumulate == 2


# --------------------------------------------------------------------------- the batch over all processes


def test_the_batch_is_the_total_over_processes():
    assert rank_batch_size(40, 1) == 40 and rank_batch_size(40, 4) == 10
    with pytest.raises(UserError, match=r"trainer.batch_size=40 is the batch over all 3 processes and must be a "
                                        r"positive multiple of 3"):
        rank_batch_size(40, 3)


def _rank(rank: int, world_size: int, port: int, run_dir: str, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    cfg = spikeyolo.compose([*TINY_RUN, "trainer.batch_size=8", f"run_dir={run_dir}"])
    trainer = Trainer(cfg)
    decay = trainer.optimizer.param_groups[1]["weight_decay"]
    Path(out, f"rank{rank}.txt").write_text(
        f"{trainer.train_loader.batch_size} {trainer.total_batch} {trainer.accumulate} {decay!r} "
        f"{trainer.schedule.warmup_iterations} {trainer.batches_per_epoch}")
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_gloo_ranks_split_the_batch_and_keep_the_accumulation(tmp_path):
    one = Trainer(spikeyolo.compose([*TINY_RUN, "trainer.batch_size=8", f"run_dir={tmp_path / 'one'}"]))
    mp.spawn(_rank, args=(2, _free_port(), str(tmp_path / "two"), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        per_rank, total, accumulate, decay, warmup, batches = (tmp_path / f"rank{rank}.txt").read_text().split()
        assert (int(per_rank), int(total)) == (4, 8)                             # 8 in total: 4 a rank
        assert int(accumulate) == one.accumulate == 8                            # 64 / 8, as one process at 8
        assert float(decay) == one.optimizer.param_groups[1]["weight_decay"]     # 5e-4 * 8 * 8 / 64
        # each rank sees half the data at half the batch: the same batches per epoch, the same warmup
        assert (int(batches), int(warmup)) == (one.batches_per_epoch, one.schedule.warmup_iterations)
    assert one.train_loader.batch_size == 8
