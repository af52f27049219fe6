"""Write tests/fixtures/reference/train_step.json: two SGD training steps taken by the reference's own code.

Runs OUTSIDE the project, against BICLab/SpikeYOLO @309ef5e (its ultralytics 8.0.197 fork), never imported by
spikeyolo or its tests; the fixture holds tensors and numbers only (no reference code). How it was made
(tests/fixtures/reference/PROVENANCE.md, "Training-step fixture"):

    git clone https://github.com/BICLab/SpikeYOLO /tmp/ref/SpikeYOLO && git -C /tmp/ref/SpikeYOLO checkout 309ef5e
    # its two .cuda() calls in ultralytics/nn/tasks.py removed (CPU): L241 `self.model = self.model.cuda()` -> pass,
    # L251 `torch.zeros(1, ch, s, s).cuda()` -> `torch.zeros(1, ch, s, s)`
    pip install --target /tmp/ref/deps --no-deps timm==0.9.16 einops torchinfo py-cpuinfo
    PYTHONPATH=/tmp/ref/SpikeYOLO:/tmp/ref/SpikeYOLO/SpikeYOLO_for_Gen1/spikingjelly-0.0.0.0.12:/tmp/ref/deps \\
        OMP_NUM_THREADS=2 python scripts/make_train_step_fixture.py /tmp/ref/SpikeYOLO tests/fixtures/reference/train_step.json

What it does, with the reference's own pieces: the COCO DetectionModel of ``snn_yolov8.yaml`` at scale n with width
1/16 ([0.33, 0.0625, 1024]), nc 2, its weights set by :func:`seeded_weights` from its state_dict's keys and shapes
(the test rebuilds them the same way, so no weights are stored); a seeded batch of two 64x64
images with six boxes of 5-30 px; the loss of ``model(batch)`` (upstream v8DetectionLoss, hyper-parameters from the
fork's default.yaml); the optimizer of ``BaseTrainer.build_optimizer(model, 'SGD', lr, momentum, decay)`` and the
step of ``BaseTrainer.optimizer_step`` (clip_grad_norm 10, step, zero_grad, spikingjelly reset_net), at a post-warmup
lr 0.01, momentum 0.937 and weight decay 5e-4 (batch 2, accumulate 32: 5e-4 * 2 * 32 / 64), twice on the same batch.
Stored: the keys and shapes, the batch, the loss terms and gradient norm of each step, and per tensor of the final
state_dict the float64 sum, L2 norm and largest magnitude of its change from the start.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import torch
import yaml


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


def change_summary(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """Per floating tensor: [sum, L2 norm, max |x|] of after - before, in float64."""
    summary = {}
    for key, value in after.items():
        if value.is_floating_point():
            change = value.double() - before[key].double()
            summary[key] = [float(change.sum()), float(change.norm()), float(change.abs().max())]
    return summary


def main(reference: Path, out: Path) -> None:
    sys.path.insert(0, str(reference))
    from spikingjelly.clock_driven import functional
    from ultralytics.cfg import get_cfg
    from ultralytics.engine.trainer import BaseTrainer
    from ultralytics.nn.tasks import DetectionModel

    description = yaml.safe_load((reference / "ultralytics/cfg/models/v8/snn_yolov8.yaml").read_text())
    description["scales"] = {"n": [0.33, 0.0625, 1024]}
    description["scale"] = "n"
    torch.manual_seed(0)
    model = DetectionModel(description, ch=3, nc=2, verbose=False)
    model.args = get_cfg()          # the fork's default.yaml: box 7.5, cls 0.5, dfl 1.5
    shapes = {key: list(value.shape) for key, value in model.state_dict().items()}
    weights0 = seeded_weights(shapes)
    model.load_state_dict(weights0)

    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (2, 3, 64, 64), generator=generator, dtype=torch.uint8)
    # pixel cx, cy, w, h: three boxes per image, 5-30 px (two under 16 px: the small-box rule matters)
    boxes = torch.tensor([[20.0, 22.0, 5.0, 7.0], [40.0, 30.0, 12.0, 9.0], [30.0, 44.0, 30.0, 22.0],
                          [14.0, 50.0, 8.0, 8.0], [44.0, 18.0, 18.0, 26.0], [33.0, 33.0, 24.0, 14.0]])
    batch = {"batch_idx": torch.tensor([0.0, 0, 0, 1, 1, 1]), "cls": torch.tensor([[0.0], [1], [0], [1], [0], [1]]),
             "bboxes": boxes / 64}

    lr, momentum, decay = 0.01, 0.937, 5e-4
    trainer = types.SimpleNamespace(args=model.args)
    optimizer = BaseTrainer.build_optimizer(trainer, model, name="SGD", lr=lr, momentum=momentum, decay=decay)
    model.train()
    losses, norms = [], []
    for _ in range(2):
        loss, items = model({**batch, "img": images.float() / 255})     # the trainer's preprocess_batch
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)))
        optimizer.step()
        optimizer.zero_grad()
        functional.reset_net(model)
        losses.append([float(x) for x in items] + [float(loss)])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "source": "BICLab/SpikeYOLO@309ef5e (ultralytics 8.0.197 fork), scripts/make_train_step_fixture.py",
        "torch": torch.__version__,
        "config": {"scale": "n", "depth_multiple": 0.33, "width_multiple": 0.0625, "num_classes": 2, "imgsz": 64,
                   "lr": lr, "momentum": momentum, "weight_decay": decay, "nesterov": True, "grad_clip": 10.0,
                   "image_seed": 1, "weight_seed": 0},
        "shapes": shapes,
        "batch": {"batch_idx": batch["batch_idx"].tolist(), "cls": batch["cls"].view(-1).tolist(),
                  "boxes_px": boxes.tolist()},
        "losses": losses,            # per step: box, cls, dfl (gain-weighted, per image) and the total (x batch)
        "grad_norms": norms,         # total gradient norm before clipping, per step
        "change": change_summary(weights0, model.state_dict()),
    }, indent=1) + "\n")
    print(f"wrote {out}: losses {losses}, grad norms {norms}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
