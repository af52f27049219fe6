"""Benchmark: decoding throughput and peak memory of every recording format through every library that reads it.

Builds one 1280x720 recording of real camera events (the 360,000 events of tests/fixtures/events/gen4_truncated.dat,
repeated end to end with shifted times up to ``--events``), writes it as .dat (the own writer), EVT 3.0 and
EVT 2.0 .raw and AEDAT4 (faery's encoders), HDF5 in Metavision's CD/events layout (h5py; uncompressed and
gzip) and in RVT's ``_td.dat.h5`` layout (events/t, x, y, p, Blosc zstd level 1 through hdf5plugin), then, for every (format, library) pair, runs a fresh child process pinned to one core that reads the
whole file with ``iter_recording`` (1M-event chunks into EVENT_DTYPE, discarded) ``--repeats`` times. Prints a
Markdown table: file size, median wall and CPU seconds, events/s (wall / CPU), the child's peak resident memory
during the reads (its peak is reset after the imports) and the growth over its resident memory before them::

    python scripts/bench_recordings.py [--events 10000000] [--repeats 3] [--keep DIR] [--only evt3:evt3 ...]

Files sit in the page cache after they are written: this measures decoding, not disk.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "fixtures" / "events" / "gen4_truncated.dat"
SIZE = (1280, 720)
FILES = {"dat": "rec.dat", "evt3": "rec_evt3.raw", "evt2": "rec_evt2.raw", "aedat4": "rec.aedat4",
         "hdf5": "rec.hdf5", "hdf5-gzip": "rec_gzip.hdf5", "hdf5-rvt": "rec_td.dat.h5"}
PAIRS = [("dat", "spikeyolo"), ("dat", "faery"), ("evt3", "evt3"), ("evt3", "faery"), ("evt2", "faery"),
         ("aedat4", "faery"), ("aedat4", "aedat"), ("hdf5", "h5py"), ("hdf5-gzip", "h5py"),
         ("hdf5-rvt", "h5py")]


def status_mb(key: str) -> float:
    """A memory figure of /proc/self/status in MB: "VmRSS" (now) or "VmHWM" (peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    """Reset VmHWM to the current resident size (Linux: write 5 to clear_refs), so imports do not count."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def make_files(folder: Path, num_events: int) -> int:
    """Write the recording in every format; returns its number of events."""
    import faery
    import h5py

    from spikeyolo.data.events import EVENT_DTYPE, read_dat, write_dat

    base = read_dat(SOURCE)
    span = int(base["t"][-1]) - int(base["t"][0]) + 1
    copies = max(1, -(-num_events // len(base)))
    events = np.empty(copies * len(base), EVENT_DTYPE)
    for index in range(copies):                                   # [copies * n], times shifted by one span each
        part = events[index * len(base):(index + 1) * len(base)]
        part[...] = base
        part["t"] += index * span
    events = events[:num_events]
    write_dat(folder / FILES["dat"], events, *SIZE, event_type=0x0C)
    packet = np.zeros(len(events), faery.EVENTS_DTYPE)
    packet["t"], packet["x"], packet["y"], packet["on"] = events["t"], events["x"], events["y"], events["p"] != 0
    for version in ("evt3", "evt2"):
        with faery.evt.Encoder(folder / FILES[version], version, False, SIZE, True) as encoder:
            encoder.write({"events": packet})
    faery.events_stream_from_array(packet, SIZE).to_file(folder / FILES["aedat4"])
    table = np.empty(len(events), [("x", "<u2"), ("y", "<u2"), ("p", "<i2"), ("t", "<i8")])
    for name in "txyp":
        table[name] = events[name]
    for key, options in (("hdf5", {}), ("hdf5-gzip", {"compression": "gzip"})):
        with h5py.File(folder / FILES[key], "w") as handle:
            handle.attrs["width"], handle.attrs["height"] = SIZE
            handle.create_group("CD").create_dataset("events", data=table, chunks=(16_384,), **options)
    import hdf5plugin

    with h5py.File(folder / FILES["hdf5-rvt"], "w") as handle:     # RVT's event download: a dataset per column
        group = handle.create_group("events")
        for name, dtype in (("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")):
            group.create_dataset(name, data=events[name].astype(dtype), chunks=(1 << 16,),
                                 **hdf5plugin.Blosc(cname="zstd", clevel=1, shuffle=hdf5plugin.Blosc.SHUFFLE))
        group["width"], group["height"] = SIZE
    return len(events)


def measure_one(path: str, library: str, repeats: int) -> dict:
    """In this (child) process: read ``path`` fully ``repeats`` times; medians, peak memory, event count."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    from spikeyolo.data.events.recordings import iter_recording, open_recording

    info = open_recording(path, library=library)
    reset_peak()
    before_mb = status_mb("VmRSS")
    walls, cpus, count = [], [], 0
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        count = sum(len(chunk) for chunk in iter_recording(info, chunk_events=1 << 20))
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    peak_mb = status_mb("VmHWM")
    return {"events": count, "wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus),
            "peak_mb": peak_mb, "growth_mb": peak_mb - before_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", help="write the files here (and keep them) instead of a temp folder")
    parser.add_argument("--only", nargs="+", metavar="FORMAT:LIBRARY", help="measure only these pairs, e.g. evt3:evt3")
    parser.add_argument("--one", nargs=2, metavar=("PATH", "LIBRARY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one[0], args.one[1], args.repeats)))
        return
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(args.keep or temp)
        folder.mkdir(parents=True, exist_ok=True)
        load_before = os.getloadavg()[0]
        num_events = make_files(folder, args.events)
        rows = []
        for key, library in [pair for pair in PAIRS if not args.only or ":".join(pair) in args.only]:
            path = folder / FILES[key]
            result = subprocess.run([sys.executable, __file__, "--one", str(path), library, "--repeats",
                                     str(args.repeats)], capture_output=True, text=True, check=True)
            figures = json.loads(result.stdout.strip().splitlines()[-1])
            assert figures["events"] == num_events, (key, library, figures)
            rows.append(f"| {key} | {library} | {path.stat().st_size / 1e6:.0f} MB | {figures['wall_s']:.2f} / "
                        f"{figures['cpu_s']:.2f} s | **{num_events / figures['wall_s'] / 1e6:.1f}** / "
                        f"{num_events / figures['cpu_s'] / 1e6:.1f} M ev/s | {figures['peak_mb']:.0f} MB "
                        f"(+{figures['growth_mb']:.0f}) |")
            print(rows[-1], flush=True)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    print(f"\n{datetime.date.today()}, {cpu}, 1 core pinned of {os.cpu_count()}, load avg "
          f"{load_before:.1f}/{os.getloadavg()[0]:.1f} before/after, Python {platform.python_version()}, "
          f"numpy {np.__version__}, {num_events:,} events, {args.repeats} repeats")


if __name__ == "__main__":
    main()
