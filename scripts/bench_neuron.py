"""I-LIF alone: forward + backward on [T, 8, 64, 80, 80] against its baselines.

    python scripts/bench_neuron.py --repeats 15 [--append docs/benchmarks.md]

Rows: torch.relu (the cost floor), (a) a straightforward per-timestep Python-loop I-LIF with autograd
(what the reference implementation does), (b) spikingjelly's multi-step ILIFNode as is, (c) ours
(``spikeyolo.nn.neurons.ILIF``, fused). Outputs and gradients of (b) and (c) are checked against (a).
Medians after warm-up; threads pinned to --threads.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import torch

from benchlib import emit  # noqa: E402  (scripts/ is on sys.path when run as a script)


def naive_ilif(x: torch.Tensor, max_level: int, decay: float = 0.25) -> torch.Tensor:
    """Baseline (a): per-step loop, autograd through everything, STE via detach."""
    outputs, membrane, spike = [], None, None
    for t in range(x.shape[0]):
        membrane = x[t] if t == 0 else decay * (membrane - spike.detach()) + x[t]
        window = ((membrane >= 0) & (membrane <= max_level)).to(x.dtype)
        quantized = torch.round(membrane.clamp(0, max_level))
        spike = quantized.detach() + (membrane - membrane.detach()) * window  # value exact, gradient = window
        outputs.append(spike)
    return torch.stack(outputs)


def timed(fn, x: torch.Tensor, repeats: int, warmup: int = 3) -> float:
    def once() -> float:
        inp = x.detach().requires_grad_(True)
        started = time.perf_counter()
        out = fn(inp)
        out.backward(torch.ones_like(out))
        return time.perf_counter() - started

    for _ in range(warmup):
        once()
    return statistics.median(once() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--max-level", type=int, default=4)
    parser.add_argument("--append", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from spikeyolo.nn.neurons import ILIF

    rows = []
    for steps in (1, 4):
        x = torch.randn(steps, 8, 64, 80, 80) * 3
        ours = ILIF(time_steps=steps, max_level=args.max_level)
        sj = ILIF(time_steps=steps, max_level=args.max_level, backend="spikingjelly")
        flat = lambda inp, n=ours: n(inp.flatten(0, 1)).view_as(inp)  # noqa: E731

        def flat_sj(inp, n=sj):
            return n(inp.flatten(0, 1)).view_as(inp)

        # equality of outputs and gradients with the naive oracle
        a = x.clone().requires_grad_(True)
        b = x.clone().requires_grad_(True)
        ya, yb = naive_ilif(a, args.max_level), flat(b)
        ya.backward(torch.ones_like(ya))
        yb.backward(torch.ones_like(yb))
        assert torch.equal(ya, yb) and torch.allclose(a.grad, b.grad), "fused I-LIF differs from the oracle"
        results = {"torch.relu": timed(torch.relu, x, args.repeats),
                   "(a) per-step loop": timed(lambda inp: naive_ilif(inp, args.max_level), x, args.repeats),
                   "(b) spikingjelly ILIFNode": timed(flat_sj, x, args.repeats) if steps > 1 else None,
                   "(c) spikeyolo ILIF": timed(flat, x, args.repeats)}
        for name, seconds in results.items():
            if seconds is None:
                continue
            rows.append((steps, name, seconds, seconds / results["torch.relu"], results["(a) per-step loop"] / seconds))
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads"
    lines = [f"I-LIF fwd+bwd on [T, 8, 64, 80, 80], D={args.max_level}, median of {args.repeats} "
             f"({machine}, torch {torch.__version__}, {datetime.date.today()}; `python scripts/bench_neuron.py`)", "",
             "| T | implementation | ms | x relu | speed-up vs (a) |", "|---|---|---|---|---|"]
    lines += [f"| {t} | {name} | {1000 * s:.1f} | {r:.2f} | {up:.2f} |" for t, name, s, r, up in rows]
    emit(lines, args.append)


if __name__ == "__main__":
    main()
