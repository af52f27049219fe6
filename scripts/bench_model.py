"""Forward + backward time of a SpikeYOLO model on this machine (no optimizer, no data loading).

    python scripts/bench_model.py --scale s --imgsz 320 --batch 2 --time-steps 1 --max-level 4 --repeats 15

Prints a Markdown table row (machine, command, median / p10 / p90 seconds per step, date) and,
with --append FILE, appends it to that file. Timings on shared machines have heavy tails:
the script warms up, repeats, and reports the median.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="s", choices=["n", "s", "m", "l"])
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--time-steps", type=int, default=1)
    parser.add_argument("--max-level", type=int, default=4)
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--append", default=None, help="Markdown file to append the row to")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    import spikeyolo

    cfg = spikeyolo.compose([f"model=spikeyolo_{args.scale}", f"neuron.time_steps={args.time_steps}",
                             f"neuron.max_level={args.max_level}"])
    model = spikeyolo.build_model(cfg, num_classes=args.num_classes).train()
    images = torch.rand(args.batch, 3, args.imgsz, args.imgsz)

    def step() -> float:
        started = time.perf_counter()
        maps = model(images)
        sum(m.float().sum() for m in maps).backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    for _ in range(args.warmup):
        step()
    times = sorted(step() for _ in range(args.repeats))
    median = statistics.median(times)
    p10, p90 = times[len(times) // 10], times[(len(times) * 9) // 10]
    command = "python " + " ".join(sys.argv)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads"
    row = (f"| {machine} | `{command}` | spikeyolo_{args.scale}, {args.imgsz}x{args.imgsz}, batch {args.batch}, "
           f"T={args.time_steps}, D={args.max_level} | {median:.3f} s (p10 {p10:.3f}, p90 {p90:.3f}, n={args.repeats}) "
           f"| torch {torch.__version__} | {datetime.date.today()} |")
    print(row)
    if args.append:
        with open(args.append, "a", encoding="utf-8") as handle:
            handle.write(row + "\n")


if __name__ == "__main__":
    main()
