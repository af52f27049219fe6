"""The YOLOv8 detection loss (ultralytics' ``v8DetectionLoss``) for spikeyolo's anchor-free heads."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from spikeyolo._ultralytics import env  # noqa: F401  (offline environment before ultralytics)
from ultralytics.utils.loss import v8DetectionLoss

__all__ = ["DetectionLoss"]


class DetectionLoss:
    """YOLOv8 detection loss (task-aligned assigner, BCE cls, CIoU box, DFL).

    Wraps ultralytics' ``v8DetectionLoss`` for a spikeyolo detector whose head
    exposes ``stride``, ``num_classes`` and ``reg_max``.

    Args:
        head: the detector's head module (anchor-free DFL head).
        box_gain, cls_gain, dfl_gain: loss gains (7.5, 0.5, 1.5 in the recipe).
        tal_topk: the assigner's top-k (10).
        small_box_floor: the assigner's small-box rule. ultralytics >= 8.4.0 enlarges every ground-truth side
            under the middle level's stride (16 px at strides 8/16/32) to that stride, about the box centre, when
            it picks the anchors whose centres lie inside a box (``TaskAlignedAssigner.stride_val``); 8.0.197, the
            engine of the SpikeYOLO reference, does not. True: the rule (8.4); False: without it (8.0.197), so a
            box under 16 px gets only the anchor centres inside it (a 4 px box often none) as the reference's;
            None: as the installed ultralytics. Measured in tests/test_small_boxes.py.
    """

    def __init__(self, head: torch.nn.Module, box_gain: float = 7.5, cls_gain: float = 0.5,
                 dfl_gain: float = 1.5, tal_topk: int = 10, small_box_floor: bool | None = None) -> None:
        shim_head = SimpleNamespace(stride=head.stride, nc=head.num_classes, reg_max=head.reg_max)
        hyp = SimpleNamespace(box=box_gain, cls=cls_gain, dfl=dfl_gain)
        shim_model = _LossModelShim(head, hyp, shim_head)
        self.head = head
        self._loss = v8DetectionLoss(shim_model, tal_topk=tal_topk)
        self._floor_side = getattr(self._loss.assigner, "stride_val", 0)   # ultralytics' floor (0: none, < 8.4)
        self.names = ("box", "cls", "dfl")
        if small_box_floor is not None:
            self.small_box_floor = small_box_floor

    @property
    def small_box_floor(self) -> bool:
        """Whether the assigner enlarges ground-truth sides under the middle stride to it (see the class)."""
        return getattr(self._loss.assigner, "stride_val", 0) > 0

    @small_box_floor.setter
    def small_box_floor(self, enabled: bool) -> None:
        if enabled and not self._floor_side:
            raise ValueError("this ultralytics' assigner has no small-box rule (added in 8.4.0)")
        if hasattr(self._loss.assigner, "stride_val"):
            # a side is enlarged where side < stride_val: 0 enlarges none (8.0.197's candidate selection)
            self._loss.assigner.stride_val = self._floor_side if enabled else 0

    def to(self, device: torch.device | str) -> "DetectionLoss":
        device = torch.device(device)
        self._loss.device = device
        self._loss.proj = self._loss.proj.to(device)
        self._loss.bbox_loss = self._loss.bbox_loss.to(device)
        self._loss.stride = self._loss.stride.to(device)
        return self

    def __call__(self, feats: list[torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Compute the loss.

        Args:
            feats: raw head maps per level, each [B, 4*reg_max + num_classes, H_l, W_l].
            batch: ultralytics batch dict with ``batch_idx`` [N], ``cls`` [N, 1], ``bboxes`` [N, 4]
                (normalised xywh).

        Returns:
            dict with the gain-weighted terms ``box``, ``cls``, ``dfl`` (per image, detached
            values for logging are the same tensors) and ``total`` = sum * batch size, the
            quantity that is back-propagated (as in the reference).
        """
        _, weighted = self._assign(feats, batch)
        terms = {name: weighted[i] for i, name in enumerate(self.names)}
        terms["total"] = weighted.sum() * feats[0].shape[0]
        return terms

    def foreground(self, feats: list[torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The anchors the assigner makes positive, [B, A] bool (A: all levels' cells, finest first)."""
        (fg_mask, *_), _ = self._assign(feats, batch)
        return fg_mask.bool()

    def _assign(self, feats: list[torch.Tensor], batch: dict[str, torch.Tensor]) -> tuple:
        batch_size = feats[0].shape[0]
        reg_channels = self.head.reg_max * 4
        # [B, no, H, W] per level -> [B, no, A]
        flat = torch.cat([f.view(batch_size, f.shape[1], -1) for f in feats], dim=2)
        boxes, scores = flat.split((reg_channels, self.head.num_classes), dim=1)
        preds = {"boxes": boxes, "scores": scores, "feats": feats}
        # ultralytics mutates the target tensors' device only; nothing else in batch.
        assigned, weighted, _ = self._loss.get_assigned_targets_and_loss(preds, batch)
        return assigned, weighted


class _LossModelShim(torch.nn.Module):
    """The attributes v8DetectionLoss reads from a DetectionModel: args, model[-1], parameters()."""

    def __init__(self, head: torch.nn.Module, hyp: SimpleNamespace, shim_head: SimpleNamespace) -> None:
        super().__init__()
        self.args = hyp
        self.model = [shim_head]
        self._device_probe = torch.nn.Parameter(torch.zeros(1, device=head.stride.device), requires_grad=False)
