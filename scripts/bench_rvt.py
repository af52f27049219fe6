"""Benchmark: reading RVT's preprocessed 1Mpx folders (data=gen4_rvt) sample by sample.

    python scripts/bench_rvt.py [--root tests/fixtures/rvt/gen4/test] [--steps 5] [--repeats 15]

Opens the split with :class:`~spikeyolo.data.sources.prophesee.rvt.RvtDataset` (the data=gen4_rvt settings: T
frames of 20 x 360 x 640, input 640x384 padded at the corner) and times, per sample, reading its T frames from the
Blosc-compressed HDF5 file and the whole ``__getitem__`` (frames, letterbox, labels); medians over ``--repeats``
passes after one warm-up pass, one process, one thread. The default root is the fixture RVT's own preprocessing
wrote from a real recording (tests/fixtures/rvt).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from spikeyolo.data.events import GEN4
from spikeyolo.data.sources.prophesee.encoding import Representation
from spikeyolo.data.sources.prophesee.rvt import RvtDataset

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(ROOT / "tests" / "fixtures" / "rvt" / "gen4" / "test"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rep = Representation(kind="stacked_histogram", time_steps=args.steps, window_us=args.steps * 50_000,
                         downsample=2)
    dataset = RvtDataset(args.root, list(GEN4.names), rep, imgsz=640, camera=GEN4, other_classes="drop",
                         input_shape="stride", pad_position="corner")
    frames, items = [], []
    for repeat in range(args.repeats + 1):
        for index in range(len(dataset)):
            start = time.perf_counter()
            dataset.frames(index)
            middle = time.perf_counter()
            item = dataset[index]
            end = time.perf_counter()
            if repeat:
                frames.append(middle - start)
                items.append(end - middle)
    shape = tuple(item["img"].shape)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    print(f"| {len(dataset)} samples x {args.repeats} | T={args.steps}, input {shape} | "
          f"{statistics.median(frames) * 1e3:.1f} ms | {statistics.median(items) * 1e3:.1f} ms |")
    print(f"\n{datetime.date.today()}, {cpu}, {os.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f}, "
          f"Python {platform.python_version()}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
