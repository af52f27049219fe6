"""Shared pieces of the benchmark scripts: one row in its own process, and the table output."""

from __future__ import annotations

import json
import subprocess
import sys


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
