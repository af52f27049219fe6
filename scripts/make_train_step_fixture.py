"""Write tests/fixtures/reference/train_step.json: what the reference's own code gives for a training step.

Runs OUTSIDE the project, against BICLab/SpikeYOLO @309ef5e (its ultralytics 8.0.197 fork), never imported by
spikeyolo or its tests; the fixture holds numbers only (no reference code, no weights). How it was made
(tests/fixtures/reference/PROVENANCE.md, "Training-step fixture"):

    git clone https://github.com/BICLab/SpikeYOLO /tmp/ref/SpikeYOLO && git -C /tmp/ref/SpikeYOLO checkout 309ef5e
    # its two .cuda() calls in ultralytics/nn/tasks.py removed (CPU): L241 `self.model = self.model.cuda()` -> pass,
    # L251 `torch.zeros(1, ch, s, s).cuda()` -> `torch.zeros(1, ch, s, s)`
    pip install --target /tmp/ref/deps --no-deps timm==0.9.16 einops torchinfo py-cpuinfo
    PYTHONPATH=/tmp/ref/SpikeYOLO:/tmp/ref/SpikeYOLO/SpikeYOLO_for_Gen1/spikingjelly-0.0.0.0.12:/tmp/ref/deps \\
        OMP_NUM_THREADS=2 python scripts/make_train_step_fixture.py /tmp/ref/SpikeYOLO tests/fixtures/reference/train_step.json

Three parts, each from the reference's own pieces:

1. **One backward, two batches, in float64.** The COCO DetectionModel of ``snn_yolov8.yaml`` at scale n with width
   1/16 ([0.33, 0.0625, 1024]), nc 2, its weights set by :func:`seeded_weights` from its state_dict's keys and shapes
   (the test rebuilds them the same way, so no weights are stored), then ``model.double()``; two seeded 64x64 images
   per batch: ``large`` (six boxes, every side 24-40 px, where ultralytics 8.4's small-box rule changes nothing) and
   ``small`` (six boxes, sides 4-30 px). For each: the loss of ``model(batch)`` (upstream v8DetectionLoss,
   hyper-parameters from the fork's default.yaml), the positive anchors (the ``fg_mask`` its TaskAlignedAssigner
   returns, observed by wrapping the criterion's ``assigner`` attribute: the call and its arguments unchanged), and
   per parameter the float64 sum, L2 norm and largest magnitude of its gradient after ``loss.backward()``.
2. **Two SGD steps, float64**, on the small batch: the optimizer of ``BaseTrainer.build_optimizer(model, 'SGD', lr,
   momentum, decay)`` and the step as ``BaseTrainer.optimizer_step`` takes it (clip_grad_norm 10, step, zero_grad,
   spikingjelly reset_net; no AMP scaler, no EMA), at a post-warmup lr 0.01, momentum 0.937 and weight decay 5e-4 (batch 2, accumulate 32:
   5e-4 * 2 * 32 / 64). Stored: each step's loss terms and gradient norm, and per tensor of the final state_dict the
   float64 sum, L2 norm and largest magnitude of its change from the start.
3. **The schedule.** ``BaseTrainer._setup_train`` and ``BaseTrainer._do_train`` themselves (accumulate, weight decay,
   optimizer, LambdaLR, warmup interpolation, step decisions, scheduler.step) on a stub: a three-parameter model
   (conv weight, conv bias, BN weight) whose loss is one weight entry, so the gradient a step applies counts the
   batches accumulated since the last zero_grad; a loader of ``nb`` empty batches; validation, saving and plots
   replaced by no-ops, ``torch.cuda.synchronize`` by a no-op (CPU). Recorded per iteration (in the model's forward,
   i.e. after the warmup has set the groups): the three groups' lr, the momentum, ``trainer.accumulate``, whether
   ``optimizer_step`` ran and how many batches its gradient held.
"""

from __future__ import annotations

import collections
import json
import sys
import types
from pathlib import Path

import torch
import yaml

# pixel cx, cy, w, h; three boxes per image (batch_idx 0, 0, 0, 1, 1, 1), classes 0 1 0 1 0 1
BATCHES = {
    "large": [[20.0, 22.0, 24.0, 28.0], [42.0, 40.0, 30.0, 24.0], [32.0, 34.0, 40.0, 36.0],
              [18.0, 46.0, 26.0, 24.0], [44.0, 18.0, 28.0, 30.0], [33.0, 33.0, 36.0, 26.0]],
    "small": [[20.0, 22.0, 4.0, 6.0], [40.0, 30.0, 12.0, 9.0], [30.0, 44.0, 30.0, 22.0],
              [14.0, 50.0, 8.0, 8.0], [44.0, 18.0, 18.0, 26.0], [33.0, 33.0, 24.0, 14.0]],
}
BATCH_IDX = [0.0, 0, 0, 1, 1, 1]
CLASSES = [0.0, 1, 0, 1, 0, 1]
IMAGE_SEEDS = {"large": 2, "small": 1}

# the schedule runs: (overrides of the fork's default.yaml, batches per epoch)
SCHEDULES = {
    # warmup max(round(1.5 * 6), 100) = 100 iterations, ending inside epoch 16; accumulation ramps to 28 / 8 = 3.5
    # (rounds to 4, numpy's half to even), so gradients are left over at epoch ends; lrf 0.1 makes lf(e) move
    "warmup": ({"epochs": 18, "batch": 8, "nbs": 28, "warmup_epochs": 1.5, "lrf": 0.1}, 6),
    # no warmup: epochs 0 and 1 both train at lf(0), epoch e at lf(e - 1); accumulate 32 / 8 = 4 over 6-batch epochs
    "no_warmup": ({"epochs": 4, "batch": 8, "nbs": 32, "warmup_epochs": 0, "lrf": 0.01}, 6),
}


def seeded_weights(shapes: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Weights from keys and shapes alone (tests/test_reference_train_step.py has the same rule): conv / linear
    weights U(-1/sqrt(fan_in), 1/sqrt(fan_in)), 1-D weights (BN scales) U(0.5, 1.5), biases U(-0.1, 0.1), BN running
    means 0 and variances 1, counters 0, drawn in key order from one generator; the DFL projection (arange(16), not
    trained) as the models build it."""
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for key, shape in shapes.items():
        if key.endswith("dfl.conv.weight"):
            weights[key] = torch.arange(shape[1], dtype=torch.float32).view(shape)
        elif key.endswith("num_batches_tracked"):
            weights[key] = torch.tensor(0)
        elif key.endswith("running_mean"):
            weights[key] = torch.zeros(shape)
        elif key.endswith("running_var"):
            weights[key] = torch.ones(shape)
        elif key.endswith("bias"):
            weights[key] = torch.rand(shape, generator=generator) * 0.2 - 0.1
        elif len(shape) == 1:
            weights[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            bound = 1.0 / float(torch.tensor(shape[1:]).prod()) ** 0.5
            weights[key] = (torch.rand(shape, generator=generator) * 2 - 1) * bound
    return weights


def digest(tensor: torch.Tensor) -> list[float]:
    """[sum, L2 norm, max |x|] in float64."""
    tensor = tensor.double()
    return [float(tensor.sum()), float(tensor.norm()), float(tensor.abs().max())]


def batch_of(name: str, imgsz: int = 64) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(IMAGE_SEEDS[name])
    images = torch.randint(0, 256, (2, 3, imgsz, imgsz), generator=generator, dtype=torch.uint8)
    return {"batch_idx": torch.tensor(BATCH_IDX), "cls": torch.tensor(CLASSES).view(-1, 1),
            "bboxes": torch.tensor(BATCHES[name]) / imgsz, "img": images.double() / 255}  # the trainer's preprocess


class ObservedAssigner:
    """Stands where the criterion's ``assigner`` was: calls it with the same arguments, keeps its fg_mask."""

    def __init__(self, assigner) -> None:
        self.assigner, self.fg_masks = assigner, []

    def __call__(self, *args, **kwargs):
        out = self.assigner(*args, **kwargs)
        self.fg_masks.append(out[3].detach().clone())     # (labels, bboxes, scores, fg_mask, gt_idx)
        return out


def build_model(reference: Path, weights: dict[str, torch.Tensor] | None):
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    description = yaml.safe_load((reference / "ultralytics/cfg/models/v8/snn_yolov8.yaml").read_text())
    description["scales"] = {"n": [0.33, 0.0625, 1024]}
    description["scale"] = "n"
    torch.manual_seed(0)
    model = DetectionModel(description, ch=3, nc=2, verbose=False)
    model.args = get_cfg()          # the fork's default.yaml: box 7.5, cls 0.5, dfl 1.5
    if weights is not None:
        model.load_state_dict(weights)
    model.double()
    model.criterion = model.init_criterion()
    observed = model.criterion.assigner = ObservedAssigner(model.criterion.assigner)
    return model, observed


def one_backward(reference: Path, weights, name: str) -> dict:
    model, observed = build_model(reference, weights)
    model.train()
    loss, items = model(batch_of(name))
    loss.backward()
    (fg_mask,) = observed.fg_masks
    grads = {key: digest(p.grad) for key, p in model.named_parameters() if p.grad is not None}
    return {"boxes_px": BATCHES[name], "image_seed": IMAGE_SEEDS[name],
            "positive_anchors": [torch.nonzero(row).view(-1).tolist() for row in fg_mask],
            "losses": [float(x) for x in items] + [float(loss.detach())], "grads": grads}


def sgd_steps(reference: Path, weights, lr: float, momentum: float, decay: float, steps: int = 2) -> dict:
    from spikingjelly.clock_driven import functional
    from ultralytics.engine.trainer import BaseTrainer

    model, _ = build_model(reference, weights)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    trainer = types.SimpleNamespace(args=model.args)
    optimizer = BaseTrainer.build_optimizer(trainer, model, name="SGD", lr=lr, momentum=momentum, decay=decay)
    model.train()
    losses, norms = [], []
    for _ in range(steps):
        loss, items = model(batch_of("small"))
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)))
        optimizer.step()
        optimizer.zero_grad()
        functional.reset_net(model)
        losses.append([float(x) for x in items] + [float(loss.detach())])
    change = {key: digest(value.double() - before[key].double())
              for key, value in model.state_dict().items() if value.is_floating_point()}
    return {"losses": losses, "grad_norms": norms, "change": change}


class CountingModel(torch.nn.Module):
    """A stub for the trainer: three parameters, one per optimizer group; the loss is conv.weight[0], so its gradient
    counts the backward passes since the last zero_grad. Records the groups as the trainer left them."""

    def __init__(self, trainer) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 1)
        self.bn = torch.nn.BatchNorm2d(1)
        self.trainer = lambda: trainer     # a function: ModelEMA's deepcopy of the model keeps it as is
        self.seen = []

    def forward(self, batch):
        trainer = self.trainer()
        groups = trainer.optimizer.param_groups
        momentum = {float(g["momentum"]) for g in groups}
        assert len(momentum) == 1, momentum              # one momentum for all groups
        self.seen.append([float(g["lr"]) for g in groups] + [momentum.pop(), int(trainer.accumulate)])
        return self.conv.weight.view(-1)[0] * 1.0, torch.zeros(3)


class StubLoader:
    def __init__(self, length: int) -> None:
        self.length, self.num_workers, self.dataset = length, 0, list(range(length * 8))

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        for _ in range(self.length):
            yield {"img": torch.zeros(1, 1, 8, 8), "cls": torch.zeros(0, 1)}


def reference_schedule(overrides: dict, nb: int) -> dict:
    """Run the reference's BaseTrainer._setup_train and _do_train on the stub (see the module docstring)."""
    from ultralytics.cfg import get_cfg
    from ultralytics.engine.trainer import BaseTrainer

    trainer = BaseTrainer.__new__(BaseTrainer)        # __init__ reads a dataset; set what it would set instead
    trainer.args = get_cfg(overrides={**overrides, "optimizer": "SGD", "amp": False, "val": False, "save": False,
                                      "plots": False, "close_mosaic": 0, "device": "cpu", "cos_lr": False})
    trainer.device = torch.device("cpu")
    trainer.batch_size, trainer.epochs, trainer.start_epoch = trainer.args.batch, trainer.args.epochs, 0
    trainer.callbacks = collections.defaultdict(list)
    trainer.save_dir, trainer.plot_idx = Path("/tmp/train_step_fixture"), [0, 1, 2]
    trainer.validator = trainer.metrics = trainer.fitness = trainer.best_fitness = trainer.loss = None
    trainer.tloss, trainer.loss_names, trainer.ema, trainer.lf, trainer.scheduler = None, ["Loss"], None, None, None
    trainer.trainset = trainer.testset = None
    trainer.data = {"names": {0: "object"}, "nc": 1}
    model = trainer.model = CountingModel(trainer)
    trainer.get_dataloader = lambda dataset, batch_size=16, rank=0, mode="train": StubLoader(nb)
    trainer.get_validator = lambda: types.SimpleNamespace(metrics=types.SimpleNamespace(keys=[]))
    trainer.validate = lambda: ({}, 0.0)
    trainer.save_metrics = trainer.save_model = lambda *a, **k: None
    trainer.final_eval = lambda: None
    steps = {}
    original_step = trainer.optimizer_step

    def recording_step():
        steps[len(model.seen) - 1] = int(model.conv.weight.grad.view(-1)[0])   # batches in this step's gradient
        original_step()

    trainer.optimizer_step = recording_step
    torch.cuda.synchronize = lambda *a, **k: None      # optimizer_step calls it unconditionally (no CUDA here)
    trainer._do_train(world_size=0)
    args = {key: getattr(trainer.args, key) for key in ("lr0", "lrf", "momentum", "weight_decay", "warmup_epochs",
                                                          "warmup_momentum", "warmup_bias_lr", "nbs", "batch",
                                                          "epochs", "cos_lr")}
    return {"args": args, "batches_per_epoch": nb,
            "weight_decay": float(trainer.optimizer.param_groups[1]["weight_decay"]),
            # per iteration: lr of groups 0 (biases), 1 (weights, decay), 2 (BN weights), momentum, accumulate,
            # 1 if optimizer_step ran, the batches in that step's gradient (0 without a step)
            "iterations": [seen + [int(ni in steps), steps.get(ni, 0)] for ni, seen in enumerate(model.seen)]}


def main(reference: Path, out: Path) -> None:
    sys.path.insert(0, str(reference))
    model, _ = build_model(reference, None)
    shapes = {key: list(value.shape) for key, value in model.state_dict().items()}
    weights0 = seeded_weights(shapes)                # drawn in float32, then held in float64
    lr, momentum, decay = 0.01, 0.937, 5e-4
    # model.double() alone leaves v8DetectionLoss in float32 where it makes tensors in the default dtype: the loss
    # terms' accumulator (torch.zeros(3), so the terms are rounded to float32) and the targets of preprocess()
    # (torch.zeros(b, n, 5): the ground-truth boxes, and the predicted boxes the assigner gets are cast to their
    # dtype). Under a float64 default dtype every tensor of the step is float64.
    torch.set_default_dtype(torch.float64)
    backward = {name: one_backward(reference, weights0, name) for name in BATCHES}
    steps = sgd_steps(reference, weights0, lr, momentum, decay)
    torch.set_default_dtype(torch.float32)
    schedules = {name: reference_schedule(overrides, nb) for name, (overrides, nb) in SCHEDULES.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "source": "BICLab/SpikeYOLO@309ef5e (ultralytics 8.0.197 fork), scripts/make_train_step_fixture.py",
        "torch": torch.__version__,
        "config": {"scale": "n", "depth_multiple": 0.33, "width_multiple": 0.0625, "num_classes": 2, "imgsz": 64,
                   "dtype": "float64", "lr": lr, "momentum": momentum, "weight_decay": decay, "nesterov": True,
                   "grad_clip": 10.0, "weight_seed": 0, "batch_idx": BATCH_IDX, "cls": CLASSES},
        "shapes": shapes,
        # per batch: boxes, the assigner's positive anchors per image (indices over all levels, finest first), the
        # loss terms box, cls, dfl (gain-weighted, per image) and the total (x batch), per parameter [sum, norm, max]
        # of its gradient
        "backward": backward,
        "steps": steps,              # two SGD steps on the small batch
        "schedules": schedules,
    }, separators=(",", ":")) + "\n")
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    for name, item in backward.items():
        print(name, item["losses"], [len(p) for p in item["positive_anchors"]])
    print("steps", steps["losses"], steps["grad_norms"])


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
