"""The one adapter around ultralytics (pinned to the 8.4 series).

Every use of ultralytics in spikeyolo goes through this module, so an upgrade
of ultralytics touches one file. Importing it has side effects on purpose (the
only module allowed to, see docs/design): before ultralytics is imported it is
put into offline mode with a writable config directory and a local font, so
that nothing is ever downloaded at run time.

Sections: environment, detection loss, NMS and box utilities, AP metrics,
datasets/augmentation, plotting.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

# --------------------------------------------------------------------------- environment


def _prepare_environment() -> Path:
    """Set ultralytics' offline variables and a writable config dir with a local font."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    config_dir = os.environ.get("YOLO_CONFIG_DIR")
    if not config_dir:
        config_dir = str(Path(tempfile.gettempdir()) / f"spikeyolo-ultralytics-{os.getuid()}")
        os.environ["YOLO_CONFIG_DIR"] = config_dir
    config_path = Path(config_dir)
    config_path.mkdir(parents=True, exist_ok=True)
    # ultralytics' plotting asks for Arial and downloads it when missing: give it
    # matplotlib's bundled DejaVuSans under the names it looks for.
    try:
        import matplotlib

        dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        for name in ("Arial.ttf", "Arial.Unicode.ttf"):
            target = config_path / name
            if dejavu.exists() and not target.exists():
                shutil.copyfile(dejavu, target)
    except Exception:  # pragma: no cover - plotting is optional
        pass
    return config_path


YOLO_CONFIG_DIR = _prepare_environment()
_threads_before = torch.get_num_threads()

import ultralytics  # noqa: E402
import ultralytics.utils as _ul_utils  # noqa: E402
import ultralytics.utils.torch_utils as _ul_torch_utils  # noqa: E402
from ultralytics.utils import IterableSimpleNamespace  # noqa: E402
from ultralytics.utils.loss import v8DetectionLoss  # noqa: E402
from ultralytics.utils.nms import non_max_suppression as _ul_nms  # noqa: E402
from ultralytics.utils.tal import dist2bbox, make_anchors  # noqa: E402

# ultralytics resets torch's thread count to its own NUM_THREADS (cpu_count - 1,
# i.e. 1 on a 2-core machine): keep the count torch had before the import.
_ul_utils.NUM_THREADS = max(_threads_before, 1)
_ul_torch_utils.NUM_THREADS = max(_threads_before, 1)
torch.set_num_threads(_threads_before)

ULTRALYTICS_VERSION = ultralytics.__version__
if not ULTRALYTICS_VERSION.startswith("8.4."):  # pragma: no cover - guarded by pyproject
    raise ImportError(f"spikeyolo is tested with ultralytics 8.4.x, found {ULTRALYTICS_VERSION}")

__all__ = [
    "YOLO_CONFIG_DIR",
    "ULTRALYTICS_VERSION",
    "DetectionLoss",
    "non_max_suppression",
    "make_anchors",
    "dist2bbox",
    "hyperparameters",
]


def hyperparameters(**overrides: Any) -> IterableSimpleNamespace:
    """ultralytics' default hyper-parameter namespace (default.yaml) with overrides."""
    from ultralytics.cfg import get_cfg

    return get_cfg(overrides=overrides or None)


# --------------------------------------------------------------------------- loss


class DetectionLoss:
    """YOLOv8 detection loss (task-aligned assigner, BCE cls, CIoU box, DFL).

    Wraps ultralytics' ``v8DetectionLoss`` for a spikeyolo detector whose head
    exposes ``stride``, ``num_classes`` and ``reg_max``.

    Args:
        head: the detector's head module (anchor-free DFL head).
        box_gain, cls_gain, dfl_gain: loss gains (7.5, 0.5, 1.5 in the recipe).
        tal_topk: the assigner's top-k (10).
    """

    def __init__(self, head: torch.nn.Module, box_gain: float = 7.5, cls_gain: float = 0.5,
                 dfl_gain: float = 1.5, tal_topk: int = 10) -> None:
        shim_head = SimpleNamespace(stride=head.stride, nc=head.num_classes, reg_max=head.reg_max)
        hyp = SimpleNamespace(box=box_gain, cls=cls_gain, dfl=dfl_gain)
        shim_model = _LossModelShim(head, hyp, shim_head)
        self.head = head
        self._loss = v8DetectionLoss(shim_model, tal_topk=tal_topk)
        self.names = ("box", "cls", "dfl")

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
        batch_size = feats[0].shape[0]
        reg_channels = self.head.reg_max * 4
        # [B, no, H, W] per level -> [B, no, A]
        flat = torch.cat([f.view(batch_size, f.shape[1], -1) for f in feats], dim=2)
        boxes, scores = flat.split((reg_channels, self.head.num_classes), dim=1)
        preds = {"boxes": boxes, "scores": scores, "feats": feats}
        # ultralytics mutates the target tensors' device only; nothing else in batch.
        _, weighted, _ = self._loss.get_assigned_targets_and_loss(preds, batch)
        terms = {name: weighted[i] for i, name in enumerate(self.names)}
        terms["total"] = weighted.sum() * batch_size
        return terms


class _LossModelShim(torch.nn.Module):
    """The attributes v8DetectionLoss reads from a DetectionModel: args, model[-1], parameters()."""

    def __init__(self, head: torch.nn.Module, hyp: SimpleNamespace, shim_head: SimpleNamespace) -> None:
        super().__init__()
        self.args = hyp
        self.model = [shim_head]
        self._device_probe = torch.nn.Parameter(torch.zeros(1, device=head.stride.device), requires_grad=False)


# --------------------------------------------------------------------------- NMS


def non_max_suppression(prediction: torch.Tensor, conf_thres: float = 0.001, iou_thres: float = 0.7,
                        max_det: int = 300, multi_label: bool = True, agnostic: bool = False,
                        max_time_img: float = 0.05) -> list[torch.Tensor]:
    """Class-aware NMS with the reference validation settings.

    Args:
        prediction: [B, 4 + num_classes, A] decoded boxes (xywh pixels) and class scores.

    Returns:
        per image a [N, 6] tensor (x1, y1, x2, y2, score, class).
    """
    return _ul_nms(prediction, conf_thres=conf_thres, iou_thres=iou_thres, max_det=max_det,
                   multi_label=multi_label, agnostic=agnostic, max_time_img=max_time_img)


# ---- metrics (evaluation)
# Used by spikeyolo/evaluation/ap.py (the ultralytics-style AP protocol).

import numpy as _np  # noqa: E402
from ultralytics.engine.validator import BaseValidator as _UlBaseValidator  # noqa: E402
from ultralytics.utils.metrics import ap_per_class as _ul_ap_per_class  # noqa: E402
from ultralytics.utils.metrics import box_iou as _ul_box_iou  # noqa: E402


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes, computed in float32 as ultralytics' validator does.

    Args:
        boxes1: [N, 4] xyxy.
        boxes2: [M, 4] xyxy.

    Returns:
        [N, M] IoU.
    """
    return _ul_box_iou(boxes1, boxes2)


def match_predictions(pred_classes: torch.Tensor, true_classes: torch.Tensor, iou: torch.Tensor,
                      iou_thresholds: torch.Tensor) -> _np.ndarray:
    """ultralytics' greedy prediction-to-label matching (``BaseValidator.match_predictions``).

    Args:
        pred_classes: [N] predicted class indices, in descending-confidence order.
        true_classes: [M] label class indices.
        iou: [M, N] IoU of labels (rows) with predictions (columns).
        iou_thresholds: [T] IoU thresholds (0.50:0.05:0.95 in the protocol).

    Returns:
        [N, T] bool: prediction n is a true positive at threshold t.
    """
    shim = SimpleNamespace(iouv=iou_thresholds)  # the only attribute the method reads
    return _UlBaseValidator.match_predictions(shim, pred_classes, true_classes, iou).numpy()


def ap_per_class(tp: _np.ndarray, conf: _np.ndarray, pred_classes: _np.ndarray,
                 target_classes: _np.ndarray) -> dict[str, _np.ndarray]:
    """ultralytics' per-class AP (101-point interpolation, trapezoid rule) and max-F1 P/R.

    Args:
        tp: [N, T] bool true-positive matrix of all predictions of the data set.
        conf: [N] prediction scores.
        pred_classes: [N] predicted class indices.
        target_classes: [L] class index of every label of the data set.

    Returns:
        dict of arrays over the C classes that have labels: ``class_index`` [C], ``ap`` [C, T],
        ``precision`` / ``recall`` / ``f1`` [C] at the max-mean-F1 confidence, ``tp`` / ``fp`` [C]
        counts there, ``recall_grid`` [1000] and ``precision_curve`` [C, 1000] (the IoU=0.5
        precision-recall curve, one row per class), ``precision_conf`` / ``recall_conf`` /
        ``f1_conf`` [C, 1000] against ``conf_grid`` [1000].
    """
    (tp_count, fp_count, precision, recall, f1, ap, class_index, precision_conf, recall_conf, f1_conf,
     grid, precision_curve) = _ul_ap_per_class(tp, conf, pred_classes, target_classes)
    return {"class_index": class_index, "ap": ap, "precision": precision, "recall": recall, "f1": f1,
            "tp": tp_count, "fp": fp_count, "recall_grid": grid, "precision_curve": precision_curve,
            "conf_grid": grid, "precision_conf": precision_conf, "recall_conf": recall_conf,
            "f1_conf": f1_conf}


# ---- datasets (data)
# YOLO-layout detection datasets with ultralytics' stock v8 pipeline (mosaic, random perspective, HSV, flips,
# letterbox, close_mosaic) and its data loader. Two changes keep ultralytics from writing beside the data: the
# labels *.cache goes to a file the caller names (ultralytics writes labels/<split>.cache), and a JPEG without its
# end marker is never rewritten in place (ultralytics "restores" it): it is used as it is when OpenCV decodes it
# (e.g. trailing bytes after the end marker) and skipped as corrupt otherwise (a truncated file). spikeyolo.data is
# the caller; it supplies the strict label check, so ultralytics' "corrupt" count is left with bad images only.

import contextlib as _contextlib  # noqa: E402
import functools as _functools  # noqa: E402
from collections.abc import Callable as _Callable  # noqa: E402
from copy import copy as _copy  # noqa: E402

import ultralytics.data.utils as _ul_data_utils  # noqa: E402
from ultralytics.data.build import build_dataloader as _ul_build_dataloader  # noqa: E402
from ultralytics.data.dataset import YOLODataset as _UlYOLODataset  # noqa: E402
from ultralytics.utils.patches import imread as _ul_imread  # noqa: E402
from ultralytics.utils.torch_utils import torch_distributed_zero_first as _ul_zero_first  # noqa: E402

__all__ += ["YoloDetectionDataset", "build_yolo_dataset", "build_yolo_dataloader", "close_dataset_mosaic"]

_TRUNCATED_JPEG_MSG = "corrupt JPEG restored and saved"  # ultralytics' message for a JPEG without end marker


class YoloDetectionDataset(_UlYOLODataset):
    """ultralytics' ``YOLODataset`` (detect task) that writes nothing beside the data.

    Args (beyond YOLODataset's):
        label_cache: file for the scanned-labels cache.
        label_check: called as ``label_check(label_file)`` for every image during a scan; raises to reject the set.
        label_files_for: maps the list of image paths to label paths (default: ultralytics' images/ -> labels/).

    Attributes:
        num_corrupt: images the scan skipped (unreadable, too small, unknown format, missing).
        scan_messages: ultralytics' scan messages (one per skipped image, plus duplicate-label notes).
        hyp: the augmentation namespace, kept for :func:`close_dataset_mosaic`.
        mosaic_closed: True after :func:`close_dataset_mosaic`.
    """

    def __init__(self, *args: Any, label_cache: str | Path, label_check: _Callable[[str], Any] | None = None,
                 label_files_for: _Callable[[list[str]], list[str]] | None = None, **kwargs: Any) -> None:
        self.label_cache = Path(label_cache)
        self.label_check = label_check
        self.label_files_for = label_files_for
        self.num_corrupt = 0
        self.scan_messages: list[str] = []
        self.hyp = _copy(kwargs["hyp"])
        self.mosaic_closed = False
        super().__init__(*args, **kwargs)

    def load_image(self, i: int, rect_mode: bool = True):
        """ultralytics' image loading; an image that passed the scan but cannot be decoded names its file."""
        try:
            return super().load_image(i, rect_mode)
        except FileNotFoundError:
            from spikeyolo.data.errors import DatasetError

            raise DatasetError(f"{self.im_files[i]}: image cannot be decoded (corrupt after the label scan)") from None

    def get_label_files(self) -> list[str]:
        if self.label_files_for is None:
            return super().get_label_files()
        self.label_files = list(self.label_files_for(self.im_files))
        return self.label_files

    def get_cache_hash(self) -> str:
        return super().get_cache_hash() + "-spikeyolo1"  # never reuse a cache scanned without label_check

    def _load_or_scan_cache(self, cache_path: Path, cache_hash: str) -> tuple[dict, bool]:
        cache, exists = super()._load_or_scan_cache(self.label_cache, cache_hash)
        self.num_corrupt = int(cache["results"][3])  # (found, missing, empty, corrupt, total)
        self.scan_messages = list(cache["msgs"])
        return cache, exists

    def verify_args(self) -> tuple:
        verify, iterable = super().verify_args()
        return _functools.partial(_verify_image_label, verify, self.label_check), iterable

    def cache_labels(self, *args: Any, **kwargs: Any) -> dict:
        self.label_cache.parent.mkdir(parents=True, exist_ok=True)
        with _jpeg_restore_disabled():
            return super().cache_labels(*args, **kwargs)


def _verify_image_label(verify: _Callable, label_check: _Callable[[str], Any] | None, args: tuple) -> Any:
    """ultralytics' per-image verification after the caller's label check (exceptions propagate to the scan)."""
    if label_check is not None:
        label_check(args[1])  # args = (im_file, lb_file, prefix, ...)
    result = verify(args)
    if isinstance(result[-1], str) and result[-1].endswith(_TRUNCATED_JPEG_MSG):
        result = (*result[:-1], f"{args[0]}: JPEG without end marker, used as is")
    return result


def _use_image_as_is(im_file: Any, write: Any) -> None:
    """Stand-in for ultralytics' in-place rewrite of a JPEG without end marker: keep it if training can decode it."""
    if _ul_imread(str(im_file)) is None:
        raise ValueError("truncated JPEG that cannot be decoded")


@_contextlib.contextmanager
def _jpeg_restore_disabled():
    original = getattr(_ul_data_utils, "_replace_image", None)
    if original is None:  # pragma: no cover - a newer ultralytics; tests check the image stays unchanged
        yield
        return
    _ul_data_utils._replace_image = _use_image_as_is
    try:
        yield
    finally:
        _ul_data_utils._replace_image = original


def build_yolo_dataset(img_path: str | list[str], names: list[str], imgsz: int, batch_size: int, augment: bool,
                       hyp: IterableSimpleNamespace, label_cache: str | Path, *, rect: bool = False,
                       stride: int = 32, cache_images: bool = False, rank: int = -1,
                       label_check: _Callable[[str], Any] | None = None,
                       label_files_for: _Callable[[list[str]], list[str]] | None = None,
                       prefix: str = "") -> YoloDetectionDataset:
    """A detection dataset as ultralytics' ``build_yolo_dataset`` makes it (pad 0 when augmenting, else 0.5).

    Args:
        img_path: image folder(s) or image-list file(s).
        names: class names (index order).
        imgsz: training / letterbox size.
        augment: v8 training transforms (mosaic, perspective, HSV, flips) from ``hyp``; else letterbox only.
        hyp: namespace from :func:`hyperparameters` (augmentation gains).
        label_cache: where the labels cache is written.
        rect: rectangular batches (sorted by aspect ratio; disables mosaic).
        cache_images: keep decoded images in RAM (ultralytics' ``cache='ram'``; the disk mode is not offered because
            it writes ``.npy`` files beside the images).
        rank: DDP rank; rank 0 scans first and the others read its cache.
    """
    data = {"names": dict(enumerate(names)), "nc": len(names), "channels": 3}
    with _ul_zero_first(rank):
        return YoloDetectionDataset(
            img_path=img_path, imgsz=imgsz, batch_size=batch_size, augment=augment, hyp=hyp, rect=rect,
            cache="ram" if cache_images else None, single_cls=False, stride=stride, pad=0.0 if augment else 0.5,
            prefix=prefix, task="detect", classes=None, data=data, fraction=1.0,
            label_cache=label_cache, label_check=label_check, label_files_for=label_files_for)


def build_yolo_dataloader(dataset: torch.utils.data.Dataset, batch_size: int, workers: int, shuffle: bool,
                          rank: int = -1, drop_last: bool = False,
                          device: torch.device | str = "cpu") -> torch.utils.data.DataLoader:
    """ultralytics' ``InfiniteDataLoader`` (persistent workers; a DistributedSampler when ``rank >= 0``)."""
    return _ul_build_dataloader(dataset, batch=batch_size, workers=workers, shuffle=shuffle, rank=rank,
                                drop_last=drop_last, device=device)


def close_dataset_mosaic(loader: torch.utils.data.DataLoader) -> None:
    """Switch mosaic, mixup, cutmix and copy-paste off and restart the loader's workers (ultralytics' close_mosaic)."""
    dataset = loader.dataset
    dataset.close_mosaic(hyp=_copy(dataset.hyp))
    dataset.mosaic_closed = True
    if hasattr(loader, "reset"):
        loader.reset()  # workers hold a copy of the dataset: fork new ones


# ---- loader state (engine resume)


def loader_state(loader: torch.utils.data.DataLoader) -> dict[str, Any]:
    """What an exact resume needs of a training loader: the shuffle generator and the mosaic buffer.

    ultralytics shuffles with the loader's own generator (not the global RNG) and picks mosaic
    partners from a buffer of recently loaded image indices.
    """
    generator = getattr(loader, "generator", None)
    return {"generator": generator.get_state() if generator is not None else None,
            "mosaic_buffer": [int(i) for i in getattr(loader.dataset, "buffer", [])]}


def restore_loader_state(loader: torch.utils.data.DataLoader, state: dict[str, Any]) -> None:
    """Restore :func:`loader_state` into a freshly built loader (single-process loading is exact)."""
    if getattr(loader, "iterator", "absent") is None:
        # 8.4 creates its persistent iterator lazily; creating it draws a base seed from the
        # generator, which the original run did before its first epoch: do it now, then restore.
        loader.iterator = loader._get_iterator()
    generator = getattr(loader, "generator", None)
    if generator is not None and state.get("generator") is not None:
        generator.set_state(state["generator"])
    dataset = loader.dataset
    if state.get("mosaic_buffer") and hasattr(dataset, "buffer"):
        dataset.buffer.clear()
        for index in state["mosaic_buffer"]:  # replaying the loads rebuilds the buffer and its cached images
            dataset.load_image(index)


# ---- YOLOv8 peer (benchmarks, ANN comparison)


def yolov8_detection_model(scale: str = "s", num_classes: int = 80) -> torch.nn.Module:
    """An untrained ultralytics YOLOv8 DetectionModel of a scale (built from its bundled yaml, no download)."""
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel(f"yolov8{scale}.yaml", nc=num_classes, verbose=False)
    model.args = hyperparameters()
    return model


def yolov8_loss(model: torch.nn.Module):
    """YOLOv8's own loss for a :func:`yolov8_detection_model`: ``loss(preds, batch) -> {"total": ...}``."""
    criterion = v8DetectionLoss(model)

    def loss(preds: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        total, _ = criterion(preds, batch)
        return {"total": total.sum()}

    return loss
