"""Shared pieces of the benchmark scripts: the row flags, one row in its own process, the table output."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys


def add_row_arguments(parser: argparse.ArgumentParser, batch: int) -> None:
    """The flags bench_train.py and bench_infer.py share (the sweep, the timing, and the internal one-row mode)."""
    parser.add_argument("--scales", nargs="+", default=["s"])
    parser.add_argument("--imgsz", nargs="+", type=int, default=[320, 640])
    parser.add_argument("--time-steps", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--max-level", type=int, default=4)
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--append", default=None, help="Markdown file to append the table to")
    # internal: one row
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="spikeyolo", help=argparse.SUPPRESS)
    parser.add_argument("--scale", default="s", help=argparse.SUPPRESS)


def row_argv(args: argparse.Namespace, kind: str, scale: str, imgsz: int, steps: int) -> list[str]:
    """The one-row command line for :func:`run_row` with the sweep's shared settings."""
    return (["--kind", kind, "--scale", scale, "--imgsz", str(imgsz), "--time-steps", str(steps),
             "--max-level", str(args.max_level), "--batch", str(args.batch), "--repeats", str(args.repeats),
             "--warmup", str(args.warmup), "--threads", str(args.threads), "--device", args.device]
            + (["--amp"] if args.amp else []))


def machine(args: argparse.Namespace) -> str:
    """The device the rows ran on, as the tables name it."""
    if args.device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads"


def run_row(script: str, argv: list[str]) -> dict:
    """Run ``script --one ARGV`` in a fresh Python process (its own peak memory) and return its JSON line."""
    out = subprocess.run([sys.executable, script, "--one", *argv], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def emit(lines: list[str], append: str | None) -> str:
    """Print a Markdown table (given as lines) and append it to ``append`` (a Markdown file) when set."""
    text = "\n".join(lines)
    print(text)
    if append:
        with open(append, "a", encoding="utf-8") as handle:
            handle.write("\n" + text + "\n")
    return text
