"""Benchmark: 1 Megapixel (Gen4) cache build time per hour of recording at dense 1Mpx event rates.

    python scripts/bench_gen4_cache.py [--recordings 2] [--seconds 10] [--rates 5 20] [--workers 1 2]
                                       [--kinds spikeyolo histogram voxel] [--append FILE]

Writes ``--recordings`` 1280x720 CD recordings per rate (``--seconds`` long, uniform random events at each
``--rates`` million events per second, written a second at a time so the writer's memory stays small) with box
labels at 60 Hz, then builds the cache of the data=gen4 pipeline from scratch (PropheseeDataset with
``camera=GEN4``: RVT's ~10 Hz frames, one 250 ms window per frame read and encoded chunk by chunk, downsampled by
2 with RVT's nearest-exact, T=2) for each representation and worker count, each build in its own process, and
prints seconds of build time per hour of recording and, for one worker, the peak of the memory the build
allocates (tracemalloc: numpy arrays included; the process itself holds ~0.7 GB of imported libraries, and the
mapped file pages are the page cache's). The files sit in the page
cache, so this measures decoding and encoding, not disk reads. Uniform random events are a cost model, not a
scene; dense 1Mpx driving scenes reach tens of millions of events per second.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tracemalloc
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchlib import emit  # noqa: E402  (scripts/ is on sys.path when run as a script)
from spikeyolo.data.events import BOX_DTYPE, EVENT_TYPE_CD, write_boxes, write_dat
from spikeyolo.data.events.dat import RECORD_DTYPE

NAMES = ("pedestrian", "two-wheeler", "car")


def make_recording(folder: Path, name: str, seconds: float, rate_meps: float, seed: int) -> int:
    """A 1280x720 recording of uniform random events, written one second at a time; returns its event count."""
    rng = np.random.default_rng(seed)
    dat = write_dat(folder / f"{name}_td.dat", np.zeros(0, [("t", "<u4"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")]),
                    1280, 720, event_type=EVENT_TYPE_CD)                       # the header
    total = 0
    with open(dat, "ab") as handle:
        for second in range(int(np.ceil(seconds))):
            span = min(1.0, seconds - second)
            count = int(rate_meps * 1e6 * span)
            records = np.empty(count, RECORD_DTYPE)
            records["t"] = np.sort(rng.integers(int(second * 1e6), int((second + span) * 1e6), count))
            words = rng.integers(0, 1280, count).astype(np.uint32)
            words |= rng.integers(0, 720, count).astype(np.uint32) << 14
            words |= rng.integers(0, 2, count).astype(np.uint32) << 28
            records["w"] = words
            records.tofile(handle)
            total += count
    times = np.arange(16_667, int(seconds * 1e6), 16_667)                        # 60 Hz
    boxes = np.zeros(2 * len(times), BOX_DTYPE)
    boxes["t"] = np.repeat(times, 2)
    boxes["x"], boxes["y"], boxes["w"], boxes["h"] = np.tile([200.0, 700.0], len(times)), 300.0, 160.0, 120.0
    boxes["class_id"] = np.tile([2, 0], len(times))
    boxes["class_confidence"], boxes["track_id"] = 1.0, np.tile([1, 2], len(times))
    write_boxes(folder / f"{name}_bbox.npy", boxes)
    return total


def one_build(split: Path, kind: str, workers: int) -> dict:
    """Build the gen4 cache of ``split`` once, from scratch, in this process (and its workers)."""
    from spikeyolo.data.sources.prophesee import GEN4, PropheseeDataset, Representation

    if workers == 1:   # the build runs in this process: trace its numpy / Python allocations
        tracemalloc.start()
    started = time.perf_counter()
    dataset = PropheseeDataset(split, NAMES, Representation(kind, time_steps=2, downsample=2), imgsz=640,
                               label_clamp="rvt", min_box_size=5, preprocess_workers=workers, progress=False,
                               camera=GEN4, other_classes="drop", sample_times="rvt", input_shape="stride",
                               pad_position="corner")
    seconds = time.perf_counter() - started
    assert dataset.cache_stats["skipped"] == 0, dataset.cache_stats
    peak_mb = tracemalloc.get_traced_memory()[1] / 2**20 if workers == 1 else None
    return {"seconds": seconds, "samples": len(dataset), "peak_mb": peak_mb,
            "events": int(sum(s.num_events for s in dataset.samples))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recordings", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rates", type=float, nargs="+", default=[5.0, 20.0], help="million events per second")
    parser.add_argument("--kinds", nargs="+", default=["spikeyolo", "histogram", "voxel"])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--append", type=Path, default=None)
    parser.add_argument("--one", nargs=3, metavar=("SPLIT", "KIND", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:   # one build in a fresh process (its own cache folder and peak memory)
        print(json.dumps(one_build(Path(args.one[0]), args.one[1], int(args.one[2]))))
        return
    rows = []
    hours = args.recordings * args.seconds / 3600
    for rate in args.rates:
        with tempfile.TemporaryDirectory() as tmp:
            split = Path(tmp) / "train"
            split.mkdir()
            events = sum(make_recording(split, f"rec{i:02d}", args.seconds, rate, i) for i in range(args.recordings))
            for kind in args.kinds:
                for workers in args.workers:
                    env = {**os.environ, "SPIKEYOLO_CACHE": str(Path(tmp) / f"cache_{kind}_{workers}")}
                    out = subprocess.run([sys.executable, __file__, "--one", str(split), kind, str(workers)],
                                         capture_output=True, text=True, check=True, env=env)
                    result = json.loads(out.stdout.strip().splitlines()[-1])
                    rows.append((rate, kind, workers, result, events))
                    print(rate, kind, workers, result, flush=True)
    load = os.getloadavg()[0]
    command = "python " + " ".join(sys.argv)
    cpu = platform.processor() or platform.machine()
    lines = [f"1Mpx (gen4) cache build (`{command}`; {datetime.date.today()}, {cpu}, {os.cpu_count()} cores, "
             f"load avg {load:.1f} at the end): {args.recordings} recordings x {args.seconds:g} s of 1280x720 "
             "uniform random events per rate, labels at 60 Hz; the data=gen4 "
             "pipeline (RVT's 10 Hz frames, 250 ms windows, downsampled by 2 nearest-exact, T=2), each build from "
             "scratch in its own process.", "",
             "| M events/s | representation | workers | samples | events read | build time (s) | hours per hour of "
             "recording | M events read / s | peak MB allocated by the build |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {rate:g} | {kind} | {workers} | {r['samples']} | {r['events'] / 1e6:.0f} M | {r['seconds']:.1f} | "
              f"{r['seconds'] / 3600 / hours:.2f} | {r['events'] / 1e6 / r['seconds']:.1f} | "
              f"{'-' if r['peak_mb'] is None else format(r['peak_mb'], '.0f')} |"
              for rate, kind, workers, r, _ in rows]
    emit(lines, args.append)


if __name__ == "__main__":
    main()
