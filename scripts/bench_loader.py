"""Benchmark: the training input pipeline alone (images/s), with the training augmentations.

    python scripts/bench_loader.py [--data trees] [--imgsz 320 640] [--workers 0 1 2] [--batches 30]
        [--append docs/benchmarks.md]

Builds the training loader exactly as ``spikeyolo-train`` does (ultralytics v8 augmentation: mosaic, random
perspective, HSV, flips; letterbox; collate) and iterates it without a model (epochs back to back), after
warm-up batches (worker start-up and the label cache are excluded). Prints images/s per (imgsz, workers): compare with the
training step's images/s (scripts/bench_train.py) to see whether the loader can keep a device busy. Each
loader worker is one process decoding JPEGs, so the figure grows with cores until it meets the disk.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import torch

from benchlib import emit  # noqa: E402  (scripts/ is on sys.path when run as a script)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="trees")
    parser.add_argument("--imgsz", type=int, nargs="+", default=[320, 640])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=30, help="timed batches per row")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--append", default=None)
    args = parser.parse_args()

    import spikeyolo
    from spikeyolo.data import dataloader_from_config, spec_from_config

    cfg = spikeyolo.compose([f"data={args.data}"])
    spec = spec_from_config(cfg.data)
    rows = []
    for imgsz in args.imgsz:
        for workers in args.workers:
            data_cfg = {**cfg.data, "imgsz": imgsz}
            loader = dataloader_from_config(spec, data_cfg, "train", args.batch, workers, stride=32,
                                            device=torch.device("cpu"))

            def endless(loader=loader):  # epochs back to back (a small dataset has few batches per epoch)
                while True:
                    yield from loader

            iterator = endless()
            for _ in range(args.warmup):
                next(iterator)
            started = time.perf_counter()
            images = 0
            for _ in range(args.batches):
                batch = next(iterator)
                images += int(batch["img"].shape[0])
            seconds = time.perf_counter() - started
            rows.append((imgsz, workers, images / seconds))
            print(f"imgsz {imgsz}, workers {workers}: {images / seconds:.1f} images/s", flush=True)
            del iterator, loader
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [f"Training loader alone (`python {' '.join(sys.argv)}`; {datetime.date.today()}, "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load avg {load:.1f}, torch "
             f"{torch.__version__}): data={args.data}, batch {args.batch}, v8 training augmentation, "
             f"{args.batches} batches after {args.warmup} warm-up batches.", "",
             "| imgsz | workers | images/s |", "|---|---|---|"]
    lines += [f"| {imgsz} | {workers} | {rate:.1f} |" for imgsz, workers, rate in rows]
    emit(lines, args.append)


if __name__ == "__main__":
    main()
