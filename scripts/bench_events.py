"""Benchmark: ``.dat`` decoding throughput of :func:`spikeyolo.data.events.read_dat` on one CPU core.

Writes a synthetic Gen1-like file (304x240, 60 s, uniform random events; ~20M events = 160 MB) to a temp folder,
pins the process to one core, warms up, then times full reads and 250 ms windowed reads (a SpikeYOLO Gen1 sample)
and prints a Markdown table row (medians of the repeats) with the machine, its load and the date. Throughput is
given per wall-clock second and per CPU second of this process: on a shared machine the second one is the
single-core figure, the first one also counts the time other processes held the core::

    python scripts/bench_events.py [--events 20000000] [--repeats 15]

The file sits in the page cache after it is written, so this measures decoding (mmap page mapping, bit unpacking,
allocation of the output), not disk reads.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_name] = "1"     # before numpy is imported; numpy's elementwise ops are single-threaded anyway

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from spikeyolo.data.events import EVENT_DTYPE, read_dat, write_dat  # noqa: E402

DURATION_US = 60_000_000
WINDOW_US = 250_000


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_file(path: Path, num_events: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    events = np.empty(num_events, EVENT_DTYPE)
    events["t"] = np.sort(rng.integers(0, DURATION_US, num_events))
    events["x"] = rng.integers(0, 304, num_events)
    events["y"] = rng.integers(0, 240, num_events)
    events["p"] = rng.integers(0, 2, num_events)
    write_dat(path, events, 304, 240)


def median_seconds(run, repeats: int, warmup: int = 2) -> tuple[float, float]:
    """Median wall-clock and median CPU (process) seconds of ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        run()
    wall, cpu = [], []
    for _ in range(repeats):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        run()
        cpu.append(time.process_time() - cpu_start)
        wall.append(time.perf_counter() - wall_start)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000_000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench_td.dat"
        make_file(path, args.events)
        load_before = os.getloadavg()[0]
        full_wall, full_cpu = median_seconds(lambda: read_dat(path), args.repeats)
        rng = np.random.default_rng(1)
        starts = iter(rng.integers(0, DURATION_US - WINDOW_US, 10 * args.repeats + 10).tolist())
        window_wall, _ = median_seconds(lambda: read_dat(path, (s := next(starts)), s + WINDOW_US),
                                        10 * args.repeats)
        load_after = os.getloadavg()[0]
    machine = (f"{cpu_model()}, 1 core pinned ({os.cpu_count()} present, load avg {load_before:.1f}/"
               f"{load_after:.1f} before/after), Python {platform.python_version()}, numpy {np.__version__}")
    command = f"python scripts/bench_events.py --events {args.events} --repeats {args.repeats}"
    date = datetime.date.today().isoformat()
    print(f"full read of {args.events:,} events: median wall {full_wall:.3f} s, median CPU {full_cpu:.3f} s; "
          f"250 ms window: median wall {window_wall * 1e3:.2f} ms", file=sys.stderr)
    print("| date | machine | command | events | full read (wall / CPU, medians) | throughput (wall / CPU) "
          "| 250 ms window read |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {date} | {machine} | `{command}` | {args.events:,} | {full_wall:.3f} s / {full_cpu:.3f} s "
          f"| {args.events / full_wall / 1e6:.1f} / {args.events / full_cpu / 1e6:.1f} M events/s "
          f"| {window_wall * 1e3:.2f} ms |")


if __name__ == "__main__":
    main()
