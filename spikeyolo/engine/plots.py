"""Run plots written as PNG: training curves, PR curve, a validation mosaic with predicted boxes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["plot_training_curves", "plot_val_mosaic"]


def _figure(rows: int, cols: int, size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size)
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, cols, squeeze=False)


def plot_training_curves(records: Sequence[dict[str, Any]], path: str | Path) -> Path | None:
    """Loss terms, mAP and lr per epoch from metrics.jsonl records."""
    if not records:
        return None
    panels = [("train/box", "box loss"), ("train/cls", "cls loss"), ("train/dfl", "dfl loss"),
              ("metrics/map50", "mAP@50"), ("metrics/map50_95", "mAP@50:95"), ("lr/pg1", "lr")]
    figure, axes = _figure(2, 3, (12, 6))
    for axis, (key, title) in zip(axes.flat, panels):
        points = [(r["epoch"], r[key]) for r in records if key in r and isinstance(r[key], (int, float))]
        if points:
            xs, ys = zip(*points)
            axis.plot(xs, ys, marker=".")
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(str(path), dpi=100)
    return Path(path)


def plot_val_mosaic(im_files: Sequence[str], detections: Sequence[Any], names: Sequence[str], path: str | Path,
                    max_images: int = 9, min_score: float = 0.25) -> Path | None:
    """Up to ``max_images`` validation images with predicted boxes (score >= min_score) in original pixels."""
    import cv2

    # only real image files (event samples are ids such as "recording@t_us")
    pairs = [(f, d) for f, d in zip(im_files, detections) if Path(str(f)).is_file()][:max_images]
    count = len(pairs)
    if count == 0:
        return None
    cols = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / cols))
    figure, axes = _figure(rows, cols, (4 * cols, 4 * rows))
    for axis in axes.flat:
        axis.axis("off")
    for axis, (file, dets) in zip(axes.flat, pairs):
        image = cv2.imread(str(file))
        if image is None:
            continue
        axis.imshow(image[:, :, ::-1])
        dets = np.asarray(dets, dtype=np.float64).reshape(-1, 6)
        for x1, y1, x2, y2, score, cls in dets[dets[:, 4] >= min_score]:
            axis.add_patch(_rectangle(x1, y1, x2 - x1, y2 - y1))
            label = names[int(cls)] if int(cls) < len(names) else str(int(cls))
            axis.text(x1, y1, f"{label} {score:.2f}", color="yellow", fontsize=6, va="bottom")
        axis.set_title(Path(file).name, fontsize=7)
    figure.tight_layout()
    figure.savefig(str(path), dpi=100)
    return Path(path)


def _rectangle(x: float, y: float, width: float, height: float):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), width, height, fill=False, edgecolor="lime", linewidth=1)
