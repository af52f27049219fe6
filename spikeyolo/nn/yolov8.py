"""YOLOv8 (the ANN SpikeYOLO is designed after), trained and evaluated by spikeyolo's own pipeline.

The architecture is ultralytics' own (its bundled ``yolov8{n,s,m,l,x}.yaml``, built offline by
:func:`spikeyolo._ultralytics.peer.yolov8_detection_model`, with ultralytics' weight and bias initialisation); the
trainer, loader, loss, EMA, schedule and evaluators are spikeyolo's, the same as for SpikeYOLO. So
``spikeyolo-train experiment=demo model=yolov8n`` is the demo's yardstick: the stock ANN trained exactly the way the
demo trains SpikeYOLO-n (GitHub issue #20), and ``model=yolov8s data=coco`` the ANN baseline of the paper's tables.

Forward contract as every family (spikeyolo.nn.protocol): train mode returns the raw maps per level
[B, 4*reg_max + num_classes, H, W]; eval mode (decoded [B, 4 + C, A] with xywh in input pixels and sigmoid
scores, raw maps). An ANN: ``time_steps`` and ``max_level`` are None.
"""

from __future__ import annotations

import torch
from torch import nn

from spikeyolo._ultralytics.peer import yolov8_detection_model
from spikeyolo.losses import build_detection_loss
from spikeyolo.nn.heads import DFL, decode_dfl
from spikeyolo.nn.protocol import DetectorMixin

__all__ = ["YOLOv8", "YOLOv8Head"]

SCALES = ("n", "s", "m", "l", "x")


class YOLOv8Head(nn.Module):
    """The box and class branches of ultralytics' ``Detect`` (``cv2``, ``cv3``), returning raw maps per level
    as spikeyolo's heads do, and decoding them with :func:`spikeyolo.nn.heads.decode_dfl`.

    Buffers: ``stride`` [L] (from ultralytics' dummy forward; not saved in checkpoints).
    """

    def __init__(self, box_branches: nn.ModuleList, cls_branches: nn.ModuleList, num_classes: int, reg_max: int,
                 strides: torch.Tensor) -> None:
        super().__init__()
        self.box_branches = box_branches
        self.cls_branches = cls_branches
        self.num_classes = int(num_classes)
        self.reg_max = int(reg_max)
        self.dfl = DFL(self.reg_max)
        self.register_buffer("stride", strides.detach().clone().float(), persistent=False)

    def build_loss(self, box: float = 7.5, cls: float = 0.5, dfl: float = 1.5, tal_topk: int = 10, **_: float):
        """YOLOv8 loss (task-aligned assigner, BCE, CIoU, DFL): ``loss(raw_maps, batch) -> dict``."""
        return build_detection_loss(self, box=box, cls=cls, dfl=dfl, tal_topk=tal_topk)

    def forward(self, feats: list[torch.Tensor]):
        maps = [torch.cat((box(x), cls(x)), 1) for box, cls, x in zip(self.box_branches, self.cls_branches, feats)]
        if self.training:
            return maps
        return decode_dfl(maps, self.num_classes, self.reg_max, self.dfl, self.stride), maps


class YOLOv8(DetectorMixin, nn.Module):
    """Stock YOLOv8 of one scale; a :class:`~spikeyolo.nn.protocol.DetectorModel` without T and D.

    Args:
        num_classes: number of classes.
        scale: n, s, m, l or x (ultralytics' depth, width and max-channel multiples).
        in_chs: input channels (3 for images; an event representation's channel count).
        neuron: the framework's neuron factory; accepted and ignored (an ANN: SiLU activations).
    """

    time_steps: None = None  # an ANN: no time steps and no spike levels
    max_level: None = None
    small_box_floor = True   # trained with ultralytics 8.4's assigner rule (spikeyolo.losses.family_small_box_floor)

    def __init__(self, num_classes: int, scale: str = "n", in_chs: int = 3, neuron=None) -> None:
        super().__init__()
        del neuron
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if scale not in SCALES:
            raise ValueError(f"model.scale must be one of {', '.join(SCALES)}, got {scale!r}")
        net = yolov8_detection_model(scale, num_classes=int(num_classes), in_chs=int(in_chs))
        detect = net.model[-1]
        self.scale = scale
        self.num_classes = int(num_classes)
        self.in_chs = int(in_chs)
        self.layers = nn.ModuleList(net.model[:-1])
        # ultralytics' routing: layer.f is the input (-1: the previous layer, int or list of earlier layers);
        # only the outputs some later layer reads are kept
        self.sources = [layer.f for layer in self.layers]
        self.keep = sorted(set(net.save))
        self.head_sources = list(detect.f)
        self.head = YOLOv8Head(detect.cv2, detect.cv3, detect.nc, detect.reg_max, detect.stride)

    def forward(self, images: torch.Tensor):
        """images [B, C, H, W] in [0, 1], H and W multiples of 32. Train: raw maps; eval: (decoded, raw maps)."""
        outputs: list[torch.Tensor | None] = []
        x = images
        for index, (layer, source) in enumerate(zip(self.layers, self.sources)):
            if source != -1:
                x = outputs[source] if isinstance(source, int) else [x if j == -1 else outputs[j] for j in source]
            x = layer(x)
            outputs.append(x if index in self.keep else None)
        return self.head([x if j == -1 else outputs[j] for j in self.head_sources])

    def build_loss(self, **gains: float):
        """The YOLOv8 loss of the anchor-free head (``trainer.loss`` box, cls, dfl, tal_topk); the anchor gains
        are ignored."""
        return self.head.build_loss(**gains)
