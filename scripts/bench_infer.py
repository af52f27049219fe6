"""Inference throughput: SpikeYOLO (integer path) against YOLOv8 of the same scale, in one run.

    python scripts/bench_infer.py --scales n s m --imgsz 320 640 --time-steps 1 4 --batch 1 --repeats 15
    python scripts/bench_infer.py --device cuda --amp --batch 16          # on a GPU

A row is the eval forward (decoded boxes, no NMS) under ``torch.inference_mode``: median seconds per
batch, images/s, multiply-accumulates per image (convs, counted from shapes, x T), achieved MACs/s, peak
memory (CPU: the row's process max RSS; CUDA: max allocated) and per-MAC efficiency = MACs/s relative to
the YOLOv8 row of the same scale and image size in the same run. Each row runs in its own subprocess.
The rows over scales, image sizes and T are the cost-growth table of docs/benchmarks.md (D does not
change the integer path's cost: it only moves the clamp bound).
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import build, conv_macs  # noqa: E402
from benchlib import add_row_arguments, emit, machine, row_argv, run_row  # noqa: E402


def run_one(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build(args.kind, args.scale, args.time_steps, args.max_level, "fused").to(device).eval()
    images = torch.rand(args.batch, 3, args.imgsz, args.imgsz, device=device)
    macs = conv_macs(model, images[:1])
    use_amp = args.amp and device.type == "cuda"

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.inference_mode(), torch.autocast(device.type, enabled=use_amp):
            model(images)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    median = statistics.median(step() for _ in range(args.repeats))
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"seconds": median, "images_per_s": args.batch / median, "macs_per_image": macs,
            "macs_per_s": macs * args.batch / median, "peak_mb": peak / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_row_arguments(parser, batch=1)
    args = parser.parse_args()
    if args.one:
        args.imgsz, args.time_steps = args.imgsz[0], args.time_steps[0]
        print(json.dumps(run_one(args)))
        return

    rows = []
    for scale in args.scales:
        for imgsz in args.imgsz:
            reference = None
            for kind, steps in [("yolov8", 1)] + [("spikeyolo", t) for t in args.time_steps]:
                result = run_row(__file__, row_argv(args, kind, scale, imgsz, steps))
                if kind == "yolov8":
                    reference = result
                result["efficiency"] = result["macs_per_s"] / reference["macs_per_s"]
                name = f"YOLOv8{scale}" if kind == "yolov8" else f"SpikeYOLO-{scale} T={steps} D={args.max_level}"
                rows.append((name, imgsz, result))
                print(f"{name} @{imgsz}: {1000 * result['seconds']:.1f} ms, {result['images_per_s']:.2f} img/s, "
                      f"{result['macs_per_image'] / 1e9:.2f} GMAC/img, eff {result['efficiency']:.2f}", flush=True)
    lines = [f"Inference (eval forward, no NMS), batch {args.batch}, median of {args.repeats} after {args.warmup} "
             f"warm-up; {machine(args)}; torch {torch.__version__}; AMP {'on' if args.amp else 'off'}; "
             f"{datetime.date.today()}. Command: `python scripts/bench_infer.py {' '.join(sys.argv[1:])}`", "",
             "| model | imgsz | ms/batch | img/s | GMAC/img | GMAC/s | per-MAC efficiency vs YOLOv8 | peak MB |",
             "|---|---|---|---|---|---|---|---|"]
    for name, imgsz, r in rows:
        lines.append(f"| {name} | {imgsz} | {1000 * r['seconds']:.1f} | {r['images_per_s']:.2f} | "
                     f"{r['macs_per_image'] / 1e9:.2f} | {r['macs_per_s'] / 1e9:.1f} | {r['efficiency']:.2f} | "
                     f"{r['peak_mb']:.0f} |")
    emit(lines, args.append)


if __name__ == "__main__":
    main()
