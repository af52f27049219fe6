#!/usr/bin/env python
"""k-means anchors (YOLOv2, distance d = 1 - IoU of boxes aligned at their centres) from YOLO labels.

    python scripts/kmeans_anchors.py LABEL_DIR --num-anchors 5 --imgsz 416 [--levels 1]

Reads every ``*.txt`` under LABEL_DIR (lines ``class cx cy w h``, normalised), scales w, h by
``imgsz`` (the long side the model is trained at; for non-square images this is approximate),
clusters them and prints the anchors in input pixels, smallest first, as the ``anchors:`` entry of
configs/model/tiny_yolo.yaml (split into ``--levels`` levels, small anchors on the first level).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def read_sizes(label_dir: Path) -> np.ndarray:
    """[N, 2] normalised (w, h) of every box under ``label_dir``."""
    sizes = []
    for path in sorted(label_dir.rglob("*.txt")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 5:
                raise ValueError(f"{path}:{number}: expected 'class cx cy w h', got {line!r}")
            sizes.append((float(fields[3]), float(fields[4])))
    return np.asarray(sizes, dtype=np.float64).reshape(-1, 2)


def shape_iou(boxes: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """[N, K] IoU of (w, h) pairs aligned at a common centre."""
    inter = np.minimum(boxes[:, None, 0], centroids[None, :, 0]) * np.minimum(boxes[:, None, 1], centroids[None, :, 1])
    union = boxes[:, None].prod(-1) + centroids[None].prod(-1) - inter
    return inter / union


def kmeans_iou(boxes: np.ndarray, k: int, iterations: int = 300, seed: int = 0) -> np.ndarray:
    """k centroids (w, h) minimising the mean 1 - IoU; sorted by area."""
    if len(boxes) < k:
        raise ValueError(f"{len(boxes)} boxes for {k} anchors")
    rng = np.random.default_rng(seed)
    centroids = boxes[rng.choice(len(boxes), k, replace=False)]
    assignment = np.full(len(boxes), -1)
    for _ in range(iterations):
        new = shape_iou(boxes, centroids).argmax(1)  # nearest = largest IoU = smallest 1 - IoU
        if np.array_equal(new, assignment):
            break
        assignment = new
        for cluster in range(k):
            members = boxes[assignment == cluster]
            if len(members):
                centroids[cluster] = np.median(members, 0)  # median: robust, as in YOLOv3-era scripts
    return centroids[np.argsort(centroids.prod(1))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("labels", type=Path, help="folder of YOLO label .txt files (searched recursively)")
    parser.add_argument("--num-anchors", "-k", type=int, default=5, help="anchors in total (all levels)")
    parser.add_argument("--imgsz", type=int, default=416, help="training image size (pixels)")
    parser.add_argument("--levels", type=int, default=1, help="output levels to split the anchors over")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.labels.is_dir():
        print(f"kmeans_anchors: error: {args.labels} is not a folder", file=sys.stderr)
        return 2
    if args.num_anchors % args.levels:
        print("kmeans_anchors: error: --num-anchors must be a multiple of --levels", file=sys.stderr)
        return 2
    try:
        sizes = read_sizes(args.labels) * args.imgsz
        sizes = sizes[(sizes > 0).all(1)]
        anchors = kmeans_iou(sizes, args.num_anchors, args.iterations, args.seed)
    except ValueError as err:
        print(f"kmeans_anchors: error: {err}", file=sys.stderr)
        return 2
    mean_iou = shape_iou(sizes, anchors).max(1).mean()
    print(f"# {len(sizes)} boxes, {args.num_anchors} anchors, mean best IoU {mean_iou:.3f} (imgsz {args.imgsz})")
    print("anchors:")
    per_level = args.num_anchors // args.levels
    for level in range(args.levels):
        values = ", ".join(f"{v:.1f}" for v in anchors[level * per_level:(level + 1) * per_level].reshape(-1))
        print(f"  - [{values}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
