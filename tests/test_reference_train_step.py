"""The training step against the reference's own code (GitHub issue 25, item 4).

tests/fixtures/reference/train_step.json was written by scripts/make_train_step_fixture.py running BICLab/SpikeYOLO
@309ef5e (its ultralytics 8.0.197 fork) outside the project (numbers only; its docstring and
tests/fixtures/reference/PROVENANCE.md say how):

- the reference's SpikeYOLO-n at width 1/16 (nc 2), weights set from its keys and shapes by a seeded rule (rebuilt
  here, so no weights are stored), everything in float64; two seeded batches of two 64x64 images: ``large`` (every
  box side 24-40 px) and ``small`` (sides 4-30 px). Per batch: the positive anchors of its assigner, its loss terms
  and a digest (sum, L2 norm, max |g|) of every parameter's gradient after one backward;
- two SGD steps on the small batch (its ``build_optimizer`` and ``optimizer_step``): loss terms, gradient norms and
  the change of every tensor;
- its ``BaseTrainer._setup_train`` / ``_do_train`` run on a stub: lr of each group, momentum, accumulation and the
  optimizer-step decisions (with the batches each step's gradient holds), iteration by iteration, over warmup and
  epoch boundaries.

spikeyolo does the same with its model, its loss with the reference's assigner rule (``tal_small_box_floor=false``),
its optimizer and its trainer's schedule.
"""

from __future__ import annotations

import contextlib
import functools
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import spikeyolo
from spikeyolo.engine.optim import build_optimizer
from spikeyolo.engine.trainer import Trainer
from spikeyolo.losses import build_training_loss
from spikeyolo.checkpoints.reference import load_reference_weights
from spikeyolo.nn.reference import reference_to_spikeyolo_key
from test_training_schedule import TINY_RUN, StubLoader   # the same tiny run and cost-free loader

FIXTURE = Path(__file__).parent / "fixtures" / "reference" / "train_step.json"
TERMS = ("box", "cls", "dfl", "total")


@functools.lru_cache(maxsize=1)
def fixture() -> dict:
    return json.loads(FIXTURE.read_text())


def seeded_weights(shapes: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """The fixture script's rule: conv / linear weights U(-1/sqrt(fan_in), 1/sqrt(fan_in)), other 1-D weights (BN
    scales) U(0.5, 1.5), biases U(-0.1, 0.1), running means 0, variances 1, counters 0, in key order from one
    generator (float32 draws); the DFL projection arange(16)."""
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for key, shape in shapes.items():
        if key.endswith("dfl.conv.weight"):
            weights[key] = torch.arange(shape[1], dtype=torch.float32).view(shape)
        elif key.endswith("num_batches_tracked"):
            weights[key] = torch.tensor(0)
        elif key.endswith("running_mean"):
            weights[key] = torch.zeros(shape, dtype=torch.float32)
        elif key.endswith("running_var"):
            weights[key] = torch.ones(shape, dtype=torch.float32)
        elif key.endswith("bias"):
            weights[key] = torch.rand(shape, generator=generator, dtype=torch.float32) * 0.2 - 0.1
        elif len(shape) == 1:
            weights[key] = torch.rand(shape, generator=generator, dtype=torch.float32) + 0.5
        else:
            bound = 1.0 / float(torch.tensor(shape[1:]).prod()) ** 0.5
            weights[key] = (torch.rand(shape, generator=generator, dtype=torch.float32) * 2 - 1) * bound
    return weights


@contextlib.contextmanager
def float64_default():
    """The reference's v8DetectionLoss (and ultralytics 8.4's) makes its loss accumulator and its targets in the
    default dtype: float64 there too, as the fixture script ran it."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def float64_model() -> nn.Module:
    config = fixture()["config"]
    model = spikeyolo.build_model(spikeyolo.compose([f"model.width_multiple={config['width_multiple']}"]),
                                  num_classes=config["num_classes"])
    load_reference_weights(model, seeded_weights(fixture()["shapes"], config["weight_seed"]))
    return model.double()


def batch_of(name: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    config, item = fixture()["config"], fixture()["backward"][name]
    generator = torch.Generator().manual_seed(item["image_seed"])
    images = torch.randint(0, 256, (2, 3, config["imgsz"], config["imgsz"]), generator=generator, dtype=torch.uint8)
    labels = {"batch_idx": torch.tensor(config["batch_idx"], dtype=torch.float64),
              "cls": torch.tensor(config["cls"], dtype=torch.float64).view(-1, 1),
              "bboxes": torch.tensor(item["boxes_px"], dtype=torch.float64) / config["imgsz"]}
    return images.double() / 255, labels


def digest(tensor: torch.Tensor) -> list[float]:
    tensor = tensor.double()
    return [float(tensor.sum()), float(tensor.norm()), float(tensor.abs().max())]


def positives(mask: torch.Tensor) -> list[list[int]]:
    return [torch.nonzero(row).view(-1).tolist() for row in mask]


@functools.lru_cache(maxsize=4)
def first_backward(name: str, small_box_floor: bool = False) -> tuple[list[list[int]], list[float], dict]:
    """spikeyolo's positive anchors, loss terms and gradient digests (by reference key) for a fixture batch."""
    with float64_default():
        model = float64_model()
        images, labels = batch_of(name)
        loss_fn = build_training_loss(model, {"tal_small_box_floor": small_box_floor})
        model.train()
        maps = model(images)
        mask = positives(loss_fn.foreground(maps, labels))
        terms = loss_fn(maps, labels)
        terms["total"].backward()
    parameters = dict(model.named_parameters())
    grads = {}
    for key in fixture()["backward"][name]["grads"]:
        grad = parameters[reference_to_spikeyolo_key(model, key)].grad
        grads[key] = digest(grad) if grad is not None else None
    return mask, [float(terms[term].detach()) for term in TERMS], grads


# Float64 round-off, measured 2026-12-07 (torch 2.14.1, CPU, 2 threads; docs/architecture.md, "The training step as
# the reference"): the loss terms are equal to the last bit; a gradient digest (sum, norm, max |g|) differs by at most
# 3.3e-13 of the tensor's gradient norm (sums over ~1e3-1e5 products in each side's kernel order), allowed 1e-11
# (30x). The conv biases before a BatchNorm have a zero gradient in exact arithmetic: theirs are round-off, up to
# 1e-12 on either side, 1.4e-16 of the whole gradient's norm (a few ulps of the terms BN's backward cancels), so
# every digest is also allowed 1e-14 of the whole gradient's norm (45 ulps).
GRAD_RTOL, GRAD_FLOOR = 1e-11, 1e-14


def assert_digests_close(mine: dict, theirs: dict, floor: float) -> None:
    """Each tensor's [sum, norm, max] within GRAD_RTOL of its norm plus ``floor``."""
    assert mine.keys() == theirs.keys()
    for key, expected in theirs.items():
        assert mine[key] is not None, key
        tolerance = GRAD_RTOL * expected[1] + floor
        assert all(abs(a - b) <= tolerance for a, b in zip(mine[key], expected)), (key, mine[key], expected)


def whole_norm(digests: dict) -> float:
    return sum(norm ** 2 for _, norm, _ in digests.values()) ** 0.5


@pytest.mark.parametrize("name", ["large", "small"])
def test_one_backward_equals_the_references_in_float64(name):
    expected = fixture()["backward"][name]
    mask, losses, grads = first_backward(name)
    assert mask == expected["positive_anchors"]
    assert sum(map(len, mask)) > 20
    assert losses == pytest.approx(expected["losses"], rel=1e-12, abs=0)
    assert len(grads) == 385
    assert_digests_close(grads, expected["grads"], GRAD_FLOOR * whole_norm(expected["grads"]))


def test_ultralytics_84s_small_box_rule_moves_the_small_boxes_positives_only():
    """With the rule on, the small batch's positives are not the reference's (so the test above can fail); the large
    batch's, whose sides are all over 16 px, are."""
    small, _, _ = first_backward("small", small_box_floor=True)
    assert small != fixture()["backward"]["small"]["positive_anchors"]
    assert sum(map(len, small)) > sum(map(len, fixture()["backward"]["small"]["positive_anchors"]))
    large, _, _ = first_backward("large", small_box_floor=True)
    assert large == fixture()["backward"]["large"]["positive_anchors"]


def test_two_sgd_steps_equal_the_references_in_float64():
    expected, config = fixture()["steps"], fixture()["config"]
    with float64_default():
        model = float64_model()
        images, labels = batch_of("small")
        loss_fn = build_training_loss(model, {"tal_small_box_floor": False})
        optimizer = build_optimizer(model, lr0=config["lr"], momentum=config["momentum"],
                                    weight_decay=config["weight_decay"], nesterov=config["nesterov"])
        before = {key: value.clone() for key, value in model.state_dict().items()}
        model.train()
        losses, norms = [], []
        for _ in expected["losses"]:
            terms = loss_fn(model(images), labels)
            terms["total"].backward()
            norms.append(float(nn.utils.clip_grad_norm_(model.parameters(), max_norm=config["grad_clip"])))
            optimizer.step()
            optimizer.zero_grad()
            losses.append([float(terms[term].detach()) for term in TERMS])
    after = model.state_dict()
    for step, (mine, theirs) in enumerate(zip(losses, expected["losses"])):
        assert mine == pytest.approx(theirs, rel=1e-12, abs=0), step
    assert norms == pytest.approx(expected["grad_norms"], rel=1e-12)
    assert len(expected["change"]) == 632
    change = {key: digest(after[reference_to_spikeyolo_key(model, key)].double() - before[
        reference_to_spikeyolo_key(model, key)].double()) for key in expected["change"]}
    # the change of a weight is lr x (momentum-filtered gradient + decay x weight), over two steps: the gradients'
    # tolerance times lr, and the weights' own round-off (1e-16 of a weight under 1) for tensors that barely move
    assert_digests_close(change, expected["change"], config["lr"] * 2 * GRAD_FLOOR * max(expected["grad_norms"])
                         + 1e-15)


# --------------------------------------------------------------------------- the schedule


def project_schedule(trainer: Trainer) -> list[list[float]]:
    """Run the trainer's epochs on a stub (loader, model and loss; its optimizer, schedule and step decisions kept);
    per iteration the fixture's row: lr of the three groups, momentum, accumulation, step, batches in the step."""
    trainer.train_loader = StubLoader(trainer.train_loader)
    trainer.train_model = nn.Identity()
    trainer.ema = None
    trainer.cfg.optim.grad_clip = 0.0
    parameter = trainer.optimizer.param_groups[1]["params"][0]
    seen, steps = [], {}

    def counting_loss(maps, batch) -> dict[str, torch.Tensor]:
        groups = trainer.optimizer.param_groups
        momentum = {group["momentum"] for group in groups}
        assert len(momentum) == 1
        seen.append([group["lr"] for group in groups] + [momentum.pop()])
        return {"total": parameter.view(-1)[0] * 1.0}   # its gradient counts the batches since the last zero_grad

    original_step = trainer._optimizer_step

    def recording_step() -> None:
        steps[len(seen) - 1] = int(parameter.grad.view(-1)[0])
        original_step()

    trainer.loss_fn, trainer._optimizer_step = counting_loss, recording_step
    for epoch in range(trainer.epochs):
        trainer.train_epoch(epoch)
    return [row + [trainer.schedule.accumulate_at(ni), int(ni in steps), steps.get(ni, 0)]
            for ni, row in enumerate(seen)]


@pytest.mark.parametrize("name", ["warmup", "no_warmup"])
def test_the_schedule_is_the_references_own(tmp_path, name):
    expected = fixture()["schedules"][name]
    args = expected["args"]
    assert not args["cos_lr"]
    cfg = spikeyolo.compose([
        *TINY_RUN, f"run_dir={tmp_path}", f"trainer.epochs={args['epochs']}", f"trainer.batch_size={args['batch']}",
        f"optim.lr0={args['lr0']}", f"optim.lrf={args['lrf']}", f"optim.momentum={args['momentum']}",
        f"optim.weight_decay={args['weight_decay']}", f"optim.nominal_batch_size={args['nbs']}",
        f"optim.warmup_epochs={args['warmup_epochs']}", f"optim.warmup_momentum={args['warmup_momentum']}",
        f"optim.warmup_bias_lr={args['warmup_bias_lr']}",
        "optim.warmup_min_iters=100"])          # the reference's max(round(warmup_epochs * nb), 100)
    trainer = Trainer(cfg)
    assert trainer.batches_per_epoch == expected["batches_per_epoch"]
    assert trainer.optimizer.param_groups[1]["weight_decay"] == pytest.approx(expected["weight_decay"], rel=1e-15)
    got = project_schedule(trainer)
    assert len(got) == len(expected["iterations"]) == args["epochs"] * expected["batches_per_epoch"]
    for ni, (mine, theirs) in enumerate(zip(got, expected["iterations"])):
        assert mine[:4] == pytest.approx(theirs[:4], rel=1e-14, abs=1e-17), ni     # lr x 3, momentum
        assert mine[4:] == theirs[4:], ni                                            # accumulate, step, batches
    assert sum(row[5] for row in got) == sum(row[5] for row in expected["iterations"]) > 0
