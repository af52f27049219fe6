"""Every PNG spikeyolo draws, in one style: matplotlib's object API on an Agg canvas (no pyplot state, no
display, no font download: the bundled DejaVu Sans), written atomically.

    boxes        :func:`draw_detections`: the one way boxes are drawn (predicted pictures and videos, event
                 windows, the validation mosaic)
    runs         training curves, a validation mosaic with predicted boxes, precision-recall curves
    energy       per-layer firing rate and energy, per-channel firing-rate spread (Spiking-YOLO Fig. 3/4)
    conversion   mAP vs time steps (Spiking-YOLO Fig. 6), per-layer firing rates of converted networks

The functions take plain data (lists, arrays, and objects read by attribute), so this module imports
nothing else of spikeyolo and any layer may draw.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spikeyolo.io import atomic_path

__all__ = ["draw_detections", "PALETTE", "plot_training_curves", "plot_val_mosaic", "plot_pr_curve", "plot_energy_layers",
           "plot_channel_rates", "plot_firing_rates", "plot_timesteps"]

PathLike = str | os.PathLike
_MAX_LEGEND_CLASSES = 20
#: box colours by class index, BGR (ultralytics' palette)
PALETTE = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
           (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0)]


def draw_detections(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray,
                    class_names: Sequence[str]) -> np.ndarray:
    """A copy of a BGR image with every box, its class name and score drawn."""
    import cv2

    out = image.copy()
    thickness = max(1, round(sum(out.shape[:2]) / 600))
    for (x1, y1, x2, y2), score, cls in zip(boxes, scores, classes):
        colour = PALETTE[int(cls) % len(PALETTE)]
        top_left, bottom_right = (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2)))
        cv2.rectangle(out, top_left, bottom_right, colour, thickness, cv2.LINE_AA)
        name = class_names[int(cls)] if int(cls) < len(class_names) else str(int(cls))
        label = f"{name} {float(score):.2f}"
        (width, height), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        text_top = max(top_left[1] - height - 4, 0)
        cv2.rectangle(out, (top_left[0], text_top), (top_left[0] + width + 2, text_top + height + 4), colour, -1)
        cv2.putText(out, label, (top_left[0] + 1, text_top + height + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _figure(rows: int = 1, cols: int = 1, size: tuple[float, float] = (7.0, 4.0), **subplots: Any):
    """A Figure on its own Agg canvas and its axes array [rows, cols]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size)
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, cols, squeeze=False, **subplots)


def _save(figure: Any, path: PathLike, dpi: int) -> Path:
    from matplotlib import rc_context

    figure.tight_layout()
    with rc_context({"font.family": "DejaVu Sans"}), atomic_path(path) as tmp:
        figure.savefig(str(tmp), dpi=dpi, format="png")
    return Path(path)


# --------------------------------------------------------------------------- runs


def plot_training_curves(records: Sequence[dict[str, Any]], path: PathLike) -> Path | None:
    """Loss terms, mAP and lr per epoch from metrics.jsonl records (None when there are none)."""
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
    return _save(figure, path, 100)


def plot_val_mosaic(im_files: Sequence[str], detections: Sequence[Any], names: Sequence[str], path: PathLike,
                    max_images: int = 9, min_score: float = 0.25) -> Path | None:
    """Up to ``max_images`` validation images with predicted boxes (score >= min_score) in original pixels.

    Args:
        detections: per image [N, 6] (x1, y1, x2, y2, score, class) in the image's pixels.
    """
    import cv2

    # only real image files (event samples are ids such as "recording@t_us")
    pairs = [(f, d) for f, d in zip(im_files, detections) if Path(str(f)).is_file()][:max_images]
    if not pairs:
        return None
    cols = int(np.ceil(np.sqrt(len(pairs))))
    rows = int(np.ceil(len(pairs) / cols))
    figure, axes = _figure(rows, cols, (4 * cols, 4 * rows))
    for axis in axes.flat:
        axis.axis("off")
    for axis, (file, dets) in zip(axes.flat, pairs):
        image = cv2.imread(str(file))
        if image is None:
            continue
        dets = np.asarray(dets, dtype=np.float64).reshape(-1, 6)
        dets = dets[dets[:, 4] >= min_score]
        axis.imshow(draw_detections(image, dets[:, :4], dets[:, 4], dets[:, 5], names)[:, :, ::-1])
        axis.set_title(Path(file).name, fontsize=7)
    return _save(figure, path, 100)


def plot_pr_curve(px: np.ndarray, py: np.ndarray, names: Sequence[str] | Mapping[int, str], path: PathLike,
                  ap50: Sequence[float] | None = None) -> Path:
    """Per-class precision-recall curves and their mean.

    Args:
        px: [P] recall grid (e.g. ``recall_grid`` from ``evaluate_yolo_ap``).
        py: [C, P] precision per class on that grid (``precision_curve``).
        names: the C class names, in the rows' order (a sequence, or a dict row -> name).
        ap50: [C] optional AP@0.5 per class, shown in the legend.
    """
    px = np.asarray(px, dtype=np.float64)  # [P]
    py = np.asarray(py, dtype=np.float64).reshape(-1, px.shape[0])  # [C, P]
    labels = [names[row] for row in range(py.shape[0])] if len(names) else [str(row) for row in range(py.shape[0])]
    figure, axes = _figure(size=(9, 6))
    axis = axes[0, 0]
    with_legend = 0 < py.shape[0] <= _MAX_LEGEND_CLASSES
    for row, precision in enumerate(py):
        label = None
        if with_legend:
            label = labels[row] if ap50 is None else f"{labels[row]} {ap50[row]:.3f}"
        axis.plot(px, precision, linewidth=1, color=None if with_legend else "grey", label=label)
    if py.shape[0]:
        mean_label = "all classes" if ap50 is None else f"all classes {float(np.mean(ap50)):.3f} mAP@0.5"
        axis.plot(px, py.mean(0), linewidth=3, color="blue", label=mean_label)
        axis.legend(bbox_to_anchor=(1.04, 1), loc="upper left")
    axis.set_xlabel("Recall")
    axis.set_ylabel("Precision")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_title("Precision-Recall Curve")
    return _save(figure, path, 150)


# --------------------------------------------------------------------------- energy and firing


def plot_energy_layers(report: Any, path: PathLike) -> Path:
    """Bars of the firing rate per virtual step and of the ANN / SNN energy of every counted conv.

    Args:
        report: an :class:`~spikeyolo.energy.report.EnergyReport` (``layers``, ``time_steps``, ``max_level``,
            ``total``).
    """
    rows = report.layers
    index = list(range(len(rows)))
    figure, axes = _figure(2, 1, (max(8.0, 0.12 * len(rows)), 7), sharex=True)
    ax_rate, ax_energy = axes[0, 0], axes[1, 0]
    ax_rate.bar(index, [row.firing_rate or 0.0 for row in rows], color="tab:blue")
    ax_rate.set_ylabel("firing rate / virtual step")
    ax_rate.set_title(f"T={report.time_steps}, D={report.max_level}, mean spikes/element "
                      f"{report.total['mean_spikes']:.3f} (0..D)")
    ax_energy.bar(index, [row.ann_energy_pj / 1e6 for row in rows], color="tab:gray", label="ANN (MAC)")
    ax_energy.bar(index, [row.snn_energy_pj / 1e6 for row in rows], color="tab:orange", label="SNN (stem MAC, AC)")
    ax_energy.set_yscale("log")
    ax_energy.set_ylabel("energy per image (uJ)")
    ax_energy.set_xlabel("conv index (execution order; 0 = stem)")
    ax_energy.legend()
    return _save(figure, path, 110)


def plot_channel_rates(rates: Sequence[tuple[int, Sequence[float]]], path: PathLike, *, xlabel: str, ylabel: str,
                       title: str = "", ylim: tuple[float, float] | None = None) -> Path | None:
    """Box plot of per-channel rates, one box per layer, at the layer's position (Spiking-YOLO Fig. 3/4).

    Args:
        rates: (layer position, per-channel rates) pairs; nothing is drawn (None) when empty.
    """
    if not rates:
        return None
    positions = [int(position) for position, _ in rates]
    figure, axes = _figure(size=(max(7.0, 0.12 * len(rates)), 3.8))
    axis = axes[0, 0]
    axis.boxplot([np.asarray(values, dtype=np.float64) for _, values in rates], positions=positions, widths=0.6,
                 showfliers=True, flierprops={"markersize": 2})
    ticks = positions[:: max(1, len(positions) // 20)]
    axis.set_xticks(ticks)
    axis.set_xticklabels([str(t) for t in ticks])
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    if ylim is not None:
        axis.set_ylim(*ylim)
    if title:
        axis.set_title(title)
    return _save(figure, path, 110)


def plot_firing_rates(rates: Mapping[str, Sequence[float]], path: PathLike) -> Path:
    """Per-layer mean |spikes| per neuron per step of the hidden layers, one bar group per variant (Fig. 3/4)."""
    figure, axes = _figure(size=(7, 3.5))
    axis = axes[0, 0]
    width = 0.8 / max(len(rates), 1)
    for index, (label, values) in enumerate(rates.items()):
        axis.bar([i + index * width for i in range(len(values))], values, width, label=label)
    axis.set_xlabel("hidden conv layer")
    axis.set_ylabel("|spikes| / neuron / step")
    axis.legend(fontsize=7)
    return _save(figure, path, 120)


def plot_timesteps(curves: Mapping[str, Any], path: PathLike, ann_map50: float | None = None,
                   title: str = "mAP@50 vs time steps") -> Path:
    """Spiking-YOLO Fig. 6: one line per (variant, decoding); the ANN's mAP@50 as a dashed line.

    Args:
        curves: variant label -> a :class:`~spikeyolo.conversion.evaluation.TimestepSweep` (its ``curve``).
    """
    figure, axes = _figure(size=(7, 4.5))
    axis = axes[0, 0]
    for label, sweep in curves.items():
        for decoding, style in (("vmem", "-"), ("spike", ":")):
            steps, values = sweep.curve(decoding)
            if steps:
                axis.plot(steps, values, style, marker="o", markersize=3, label=f"{label}, {decoding}")
    if ann_map50 is not None:
        axis.axhline(ann_map50, color="k", linestyle="--", linewidth=1, label="ANN")
    axis.set_xscale("log", base=2)
    axis.set_xlabel("time steps T")
    axis.set_ylabel("mAP@50")
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=7)
    return _save(figure, path, 120)
