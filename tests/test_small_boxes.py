"""The assigner's small-box rule (GitHub issue 25, item 1): the reference's (ultralytics 8.0.197) and 8.4's.

ultralytics >= 8.4.0 enlarges every ground-truth side under the middle stride (16 px at strides 8/16/32) to 16 px
when its TaskAlignedAssigner picks the candidate anchors of a box; 8.0.197, the engine of BICLab/SpikeYOLO, takes only
the anchors whose centres lie strictly inside the box. ``trainer.loss.tal_small_box_floor`` picks one (null: the
reference's for SpikeYOLO, 8.4's for the YOLOv8 yardstick). The counts asserted here are the ones the schema comment
and docs/architecture.md quote.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import spikeyolo
from spikeyolo.losses import build_detection_loss, build_training_loss, family_small_box_floor

IMGSZ = 128
STRIDES = (8.0, 16.0, 32.0)


class StubHead(nn.Module):
    """What the loss adapter reads of a DFL head: strides, class count, reg_max."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("stride", torch.tensor(STRIDES))
        self.num_classes = 1
        self.reg_max = 16


def zero_maps(batch_size: int) -> list[torch.Tensor]:
    """Raw head maps of an untrained head (all logits 0): [B, 4*16 + 1, H, W] per level."""
    return [torch.zeros(batch_size, 65, int(IMGSZ // s), int(IMGSZ // s)) for s in STRIDES]


def anchor_centres() -> torch.Tensor:
    """[A, 2] anchor centres in pixels, finest level first (cell centres, offset 0.5)."""
    centres = []
    for stride in STRIDES:
        cells = int(IMGSZ // stride)
        ys, xs = torch.meshgrid(torch.arange(cells) + 0.5, torch.arange(cells) + 0.5, indexing="ij")
        centres.append(torch.stack([xs, ys], -1).view(-1, 2) * stride)
    return torch.cat(centres)


def reference_candidates(xy_centres: torch.Tensor, boxes_xyxy: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """8.0.197's candidate rule, written out from BICLab/SpikeYOLO ultralytics/utils/tal.py:12-28 @309ef5e
    (``select_candidates_in_gts``): an anchor is a candidate of a box when its centre's four distances to the
    box's sides (left, top, right, bottom) are all > eps. No enlargement. [N, 4] boxes -> [N, A] bool."""
    left_top, right_bottom = boxes_xyxy[:, None, :2], boxes_xyxy[:, None, 2:]
    deltas = torch.cat([xy_centres[None] - left_top, right_bottom - xy_centres[None]], dim=2)   # [N, A, 4]
    return deltas.amin(2) > eps


def small_batch() -> dict[str, torch.Tensor]:
    """Two images, 12 boxes of 6-30 px (pixel xywh / IMGSZ), at seeded positions."""
    generator = torch.Generator().manual_seed(0)
    count = 12
    sides = torch.linspace(6, 30, count)
    centres = torch.rand(count, 2, generator=generator) * 80 + 24
    xywh = torch.cat([centres, torch.stack([sides, sides.flip(0)], 1)], 1)           # widths and heights 6-30 px
    return {"batch_idx": (torch.arange(count) // 6).float(), "cls": torch.zeros(count, 1), "bboxes": xywh / IMGSZ}


def to_xyxy(xywh: torch.Tensor) -> torch.Tensor:
    return torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)


def test_positives_on_small_boxes_with_and_without_the_rule():
    batch = small_batch()
    without = build_detection_loss(StubHead(), small_box_floor=False).foreground(zero_maps(2), batch)
    with_rule = build_detection_loss(StubHead(), small_box_floor=True).foreground(zero_maps(2), batch)
    assert int(without.sum()) == 48 and int(with_rule.sum()) == 60      # the reference's count and 8.4's
    # without the rule every positive anchor is one the reference's candidate rule allows for a box of its image
    centres, boxes = anchor_centres(), to_xyxy(batch["bboxes"] * IMGSZ)
    for image in range(2):
        allowed = reference_candidates(centres, boxes[batch["batch_idx"] == image]).any(0)
        assert not (without[image] & ~allowed).any()
        assert (with_rule[image] & ~allowed).any()     # 8.4 takes anchors outside the small boxes


def test_a_4px_box_often_has_no_positive_without_the_rule():
    generator = torch.Generator().manual_seed(1)
    trials, counts = 200, {False: [], True: []}
    for _ in range(trials):
        centre = torch.rand(2, generator=generator) * 96 + 16
        batch = {"batch_idx": torch.zeros(1), "cls": torch.zeros(1, 1),
                 "bboxes": torch.cat([centre, torch.tensor([4.0, 4.0])])[None] / IMGSZ}
        for floor in counts:
            counts[floor].append(int(build_detection_loss(StubHead(), small_box_floor=floor)
                                     .foreground(zero_maps(1), batch).sum()))
    empty = {floor: sum(c == 0 for c in found) / trials for floor, found in counts.items()}
    # the reference: no anchor centre inside the box in 135 of 200 (a 4 px box holds a stride-8 centre with
    # probability 1/4, a stride-16 one 1/16, a stride-32 one 1/64: 1 - 3/4 * 15/16 * 63/64 = 0.69 have none)
    assert empty[False] == pytest.approx(0.675) and empty[True] == 0.0
    assert sum(counts[True]) / trials == pytest.approx(2.02)


def test_the_setting_and_the_family_default():
    model = spikeyolo.build_model(spikeyolo.compose(["model.width_multiple=0.0625"]), num_classes=1)
    assert not family_small_box_floor(model)                               # SpikeYOLO: the reference's rule
    assert not build_training_loss(model, {"tal_small_box_floor": None}).small_box_floor
    assert build_training_loss(model, {"tal_small_box_floor": True}).small_box_floor
    assert not build_training_loss(model, {}).small_box_floor
    assert spikeyolo.compose([]).trainer.loss.tal_small_box_floor is None
    assert spikeyolo.compose(["experiment=gen1"]).trainer.loss.tal_small_box_floor is False


@pytest.mark.slow
def test_the_yolov8_family_keeps_ultralytics_84s_rule():
    model = spikeyolo.build_model(spikeyolo.compose(["model=yolov8n"]), num_classes=1)
    assert family_small_box_floor(model) and build_training_loss(model, {}).small_box_floor
    assert not build_training_loss(model, {"tal_small_box_floor": False}).small_box_floor
