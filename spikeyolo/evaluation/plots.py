"""Evaluation plots (matplotlib's Agg canvas directly: no pyplot state, no display, no font download)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plot_pr_curve"]

_MAX_LEGEND_CLASSES = 20


def plot_pr_curve(px: np.ndarray, py: np.ndarray, names: Sequence[str] | Mapping[int, str],
                  path: str | os.PathLike, ap50: Sequence[float] | None = None) -> Path:
    """Plot per-class precision-recall curves and their mean as a PNG.

    Args:
        px: [P] recall grid (e.g. ``recall_grid`` from ``evaluate_yolo_ap``).
        py: [C, P] precision per class on that grid (``precision_curve``).
        names: the C class names, in the rows' order (a sequence, or a dict row -> name).
        path: the PNG to write; parent folders are created.
        ap50: [C] optional AP@0.5 per class, shown in the legend.

    Returns:
        the written path.
    """
    px = np.asarray(px, dtype=np.float64)  # [P]
    py = np.asarray(py, dtype=np.float64).reshape(-1, px.shape[0])  # [C, P]
    labels = [names[row] for row in range(py.shape[0])] if len(names) else [str(row) for row in range(py.shape[0])]

    figure = Figure(figsize=(9, 6), tight_layout=True)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    with_legend = 0 < py.shape[0] <= _MAX_LEGEND_CLASSES
    for row, precision in enumerate(py):
        label = None
        if with_legend:
            label = labels[row] if ap50 is None else f"{labels[row]} {ap50[row]:.3f}"
        axes.plot(px, precision, linewidth=1, color=None if with_legend else "grey", label=label)
    if py.shape[0]:
        mean_label = "all classes" if ap50 is None else f"all classes {float(np.mean(ap50)):.3f} mAP@0.5"
        axes.plot(px, py.mean(0), linewidth=3, color="blue", label=mean_label)
        axes.legend(bbox_to_anchor=(1.04, 1), loc="upper left")
    axes.set_xlabel("Recall")
    axes.set_ylabel("Precision")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_title("Precision-Recall Curve")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=150)
    return path
