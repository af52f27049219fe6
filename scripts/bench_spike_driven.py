"""Benchmark: integer path vs spike-driven (T x D binary) path on CPU.

Times the eval forward (median of --repeats after --warmup runs, torch threads fixed; the two paths
interleaved so background load hits both alike) and the peak resident-memory increase of one
forward: each path runs in a fresh process; before the forward the
heap is trimmed (malloc_trim) and the kernel's peak-RSS mark is reset (/proc/self/clear_refs = 5),
so VmHWM after minus VmRSS before is the forward's own peak. Prints one Markdown table row per path.

    python scripts/bench_spike_driven.py                       # n model, 320x320, batch 1, T=1, D=4
    python scripts/bench_spike_driven.py --scale s --imgsz 640 --time-steps 2 --max-level 4
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import statistics
import sys
import time


def _build(args):
    import torch

    import spikeyolo

    cfg = spikeyolo.compose([f"model=spikeyolo_{args.scale}", f"neuron.time_steps={args.time_steps}",
                             f"neuron.max_level={args.max_level}"])
    model = spikeyolo.build_model(cfg, num_classes=args.num_classes).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-trivial BN statistics so neurons fire at a realistic rate
        for bn in model.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                chs = bn.num_features
                bn.running_mean.copy_(torch.randn(chs, generator=gen) * 0.3)
                bn.running_var.copy_(torch.rand(chs, generator=gen) + 0.5)
    return model


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss() -> bool:
    """Trim the heap and reset VmHWM to the current RSS (Linux >= 4.0); False where unsupported."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def _inputs(args):
    import torch

    return torch.rand(args.batch, 3, args.imgsz, args.imgsz, generator=torch.Generator().manual_seed(1))


def _peak_memory(path: str, args, queue) -> None:
    """Peak RSS growth (KiB) of one forward of one path, in a fresh process."""
    import torch

    from spikeyolo.deploy import to_spike_driven

    torch.set_num_threads(args.threads)
    model = _build(args)
    if path == "spike_driven":
        model = to_spike_driven(model)
    images = _inputs(args)
    with torch.no_grad():
        model(images)  # first call allocates lazily-initialised kernels' buffers
        if _reset_peak_rss():
            before = _status_kib("VmRSS")
            model(images)
            peak_kib = _status_kib("VmHWM") - before
        else:  # coarse fallback: lifetime peak growth
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            model(images)
            peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    queue.put(peak_kib)


def _timings(args) -> dict[str, list[float]]:
    """Forward times (s) of both paths, interleaved so that background load hits both alike."""
    import torch

    from spikeyolo.deploy import to_spike_driven

    torch.set_num_threads(args.threads)
    integer = _build(args)
    models = {"integer": integer, "spike_driven": to_spike_driven(integer)}
    images = _inputs(args)
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for _ in range(args.warmup):
            for model in models.values():
                model(images)
        for _ in range(args.repeats):
            for name, model in models.items():
                start = time.perf_counter()
                model(images)
                times[name].append(time.perf_counter() - start)
    return times


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="n")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--time-steps", type=int, default=1)
    parser.add_argument("--max-level", type=int, default=4)
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="also print the raw results as JSON")
    args = parser.parse_args(argv)
    ctx = mp.get_context("spawn")
    peaks = {}
    for path in ("integer", "spike_driven"):
        queue = ctx.Queue()
        proc = ctx.Process(target=_peak_memory, args=(path, args, queue))
        proc.start()
        peaks[path] = queue.get()
        proc.join()
    times = _timings(args)
    results = [{"path": path, "median_ms": 1000 * statistics.median(times[path]), "min_ms": 1000 * min(times[path]),
                "peak_rss_delta_mib": peaks[path] / 1024} for path in ("integer", "spike_driven")]
    base = results[0]["median_ms"]
    machine = f"{_cpu_name()}, {args.threads} threads"
    print("| model | input | T | D | path | median ms | min ms | slowdown | peak RSS +MiB | machine |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| spikeyolo_{args.scale} | {args.batch}x3x{args.imgsz}x{args.imgsz} | {args.time_steps} | "
              f"{args.max_level} | {r['path']} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | "
              f"{r['median_ms'] / base:.2f}x | {r['peak_rss_delta_mib']:.0f} | {machine} |")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
