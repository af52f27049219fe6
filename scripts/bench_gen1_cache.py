"""Benchmark: Gen1 cache build time per hour of recording, per representation and worker count.

    python scripts/bench_gen1_cache.py [--recordings 2] [--seconds 30] [--rate 0.5] [--label-hz 4] [--append FILE]

Writes ``--recordings`` Gen1-format recordings (304x240, ``--seconds`` long, uniform random events at
``--rate`` million events per second, box labels at ``--label-hz`` label times per second) to a temp folder,
then builds the training cache (:func:`spikeyolo.data.sources.prophesee.cache.build_cache`: one window of 250 ms
read and encoded per label time, one compressed-free ``.npz`` per recording) from scratch for each representation with
1 and 2 worker processes, and prints seconds of build time per hour of recording. The files sit in the page
cache, so this measures decoding and encoding, not disk reads. Gen1 has 39 hours of recordings with labels at
1 to 4 Hz; its event rate varies with the scene (uniform random events here are a cost model, not a scene).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from spikeyolo.data.events import BOX_DTYPE, EVENT_DTYPE, write_boxes, write_dat
from spikeyolo.data import Representation, build_cache, find_recordings

from benchlib import emit  # noqa: E402  (scripts/ is on sys.path when run as a script)


def make_recording(folder: Path, name: str, seconds: float, rate_meps: float, label_hz: float, seed: int) -> int:
    rng = np.random.default_rng(seed)
    duration_us = int(seconds * 1e6)
    count = int(rate_meps * 1e6 * seconds)
    events = np.empty(count, EVENT_DTYPE)
    events["t"] = np.sort(rng.integers(0, duration_us, count))
    events["x"] = rng.integers(0, 304, count)
    events["y"] = rng.integers(0, 240, count)
    events["p"] = rng.integers(0, 2, count)
    write_dat(folder / f"{name}_td.dat", events, 304, 240)
    times = np.arange(int(0.5e6), duration_us, int(1e6 / label_hz))
    boxes = np.zeros(len(times) * 2, BOX_DTYPE)
    boxes["t"] = np.repeat(times, 2)
    boxes["x"], boxes["y"], boxes["w"], boxes["h"] = 40.0, 60.0, 50.0, 40.0
    boxes["class_id"] = np.tile([0, 1], len(times))
    boxes["class_confidence"] = 1.0
    write_boxes(folder / f"{name}_bbox.npy", boxes)
    return len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recordings", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=0.5, help="million events per second")
    parser.add_argument("--label-hz", type=float, default=4.0)
    parser.add_argument("--time-steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--append", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        split = Path(tmp) / "train"
        split.mkdir()
        labels = sum(make_recording(split, f"rec{i:02d}", args.seconds, args.rate, args.label_hz, i)
                     for i in range(args.recordings))
        recordings = find_recordings(split)
        hours = args.recordings * args.seconds / 3600
        for kind in ("spikeyolo", "histogram", "voxel"):
            representation = Representation(kind=kind, time_steps=args.time_steps)
            for workers in (1, 2):
                times = []
                for repeat in range(args.repeats):
                    cache = Path(tmp) / f"cache_{kind}_{workers}_{repeat}"
                    started = time.perf_counter()
                    result = build_cache(recordings, representation, cache, workers=workers, progress=False)
                    times.append(time.perf_counter() - started)
                    assert result["built"] == args.recordings, result
                    shutil.rmtree(cache)
                seconds = sorted(times)[len(times) // 2]
                rows.append((kind, workers, seconds, seconds / hours / 60))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    command = "python " + " ".join(sys.argv)
    lines = [f"Gen1 cache build (`{command}`; {datetime.date.today()}, {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores, load avg {load:.1f}): {args.recordings} recordings x {args.seconds:g} s, "
             f"{args.rate:g} M events/s, {args.label_hz:g} label times/s ({labels} windows of 250 ms), "
             f"T={args.time_steps}; median of {args.repeats} builds from scratch.", "",
             "| representation | workers | build time (s) | minutes per hour of recording |", "|---|---|---|---|"]
    lines += [f"| {kind} | {workers} | {seconds:.2f} | {per_hour:.1f} |" for kind, workers, seconds, per_hour in rows]
    emit(lines, args.append)


if __name__ == "__main__":
    main()
