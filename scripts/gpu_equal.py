"""Does the implementation give the same numbers on CUDA as on the CPU? Forward outputs and every parameter's gradient.

    python scripts/gpu_equal.py --device cuda [--time-steps 1 4] [--imgsz 128] [--batch 2] [--scale n] [--out FILE]
    python scripts/gpu_equal.py --device cpu        # what can be checked without a GPU (see below)

One training-mode forward of SpikeYOLO (``neuron.max_level=4``) on a fixed random batch, the YOLOv8 detection loss
of the benchmarks (scripts/bench_train.py) on a fixed synthetic target set, and one backward; every configuration
starts from the same weights (built once with ``--seed`` on the CPU, then ``load_state_dict``). Compared, for each T:

- ``--device cuda``: fp32 CUDA against fp32 CPU (TF32 off, cuDNN deterministic: cuDNN is still not bitwise the
  CPU's arithmetic, so within a tolerance); the neuron backends ``loop`` against ``fused`` on CUDA (fp32; the same
  arithmetic in another order: exact or within 1e-6); AMP (torch.autocast bf16, and fp16 with a static loss scale of
  1024, as a GradScaler would) against fp32 CUDA, within AMP's looser tolerance.
- ``--device cpu``: ``loop`` against ``fused``, fp32 against float64 (the rounding of fp32 itself: the scale the
  CUDA-vs-CPU check should stay within), and CPU autocast bf16 against fp32.

Errors: relative L2 over all outputs (resp. all gradients, concatenated), the largest absolute error, the loss's
relative error, and the parameter with the largest relative L2 error. A quantizing neuron (round) is discontinuous,
so a rounding difference can move a spike count by one and the error jumps there; the relative L2 is the robust
figure and the one the tolerance applies to. Prints a Markdown table (and appends it to ``--out``); exits 1 when a
check fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")   # deterministic cuBLAS (before CUDA starts)

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import build, synthetic_batch

# (output rel L2, gradient rel L2) a check passes within
# (output rel L2, gradient rel L2) a check passes within; for "amp" the second is the loss's relative error (AMP's
# gradients are reported, not gated); for "fp32" at least 3x the CPU fp32-vs-float64 spread of the same T
TOLERANCES = {"backend": (1e-6, 1e-6), "fp32": (1e-4, 1e-3), "amp": (1e-1, 1e-1), "spread": (0.0, 0.0)}


def flatten(value) -> list[torch.Tensor]:
    if torch.is_tensor(value):
        return [value]
    if isinstance(value, dict):
        return [t for key in sorted(value) for t in flatten(value[key])]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in flatten(item)]
    return []


def run(state: dict, args, time_steps: int, backend: str, device: torch.device, dtype=torch.float32,
        amp: torch.dtype | None = None) -> dict:
    """One forward, loss and backward from ``state``; outputs, loss and gradients as float64 on the CPU."""
    model = build("spikeyolo", args.scale, time_steps, args.max_level, backend)
    model.load_state_dict(state)
    model = model.to(device=device, dtype=dtype).train()
    generator = torch.Generator().manual_seed(args.seed + 1)
    images = torch.rand(args.batch, 3, args.imgsz, args.imgsz, generator=generator).to(device=device, dtype=dtype)
    batch = synthetic_batch(args.batch, device)   # fp32 targets (the loss wants them so, even for a float64 model)
    loss_fn = model.build_loss()
    scale = 1024.0 if amp == torch.float16 else 1.0
    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        out = model(images)
        loss = loss_fn(out, batch)["total"]
    (loss * scale).backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    grads = {name: p.grad.detach().double().cpu() / scale for name, p in model.named_parameters()
             if p.grad is not None}
    return {"out": [t.detach().double().cpu() for t in flatten(out)], "loss": float(loss.detach()), "grads": grads}


def rel_l2(a: list[torch.Tensor], b: list[torch.Tensor]) -> tuple[float, float]:
    num = sum(float((x - y).pow(2).sum()) for x, y in zip(a, b))
    den = sum(float(y.pow(2).sum()) for y in b)
    max_abs = max((float((x - y).abs().max()) for x, y in zip(a, b) if x.numel()), default=0.0)
    return (num ** 0.5) / max(den ** 0.5, 1e-30), max_abs


def compare(name: str, kind: str, time_steps: int, got: dict, ref: dict, spread: dict | None = None) -> dict:
    """Errors of ``got`` against ``ref`` and the verdict for the check's kind (see TOLERANCES and the docstring)."""
    assert len(got["out"]) == len(ref["out"]) and got["grads"].keys() == ref["grads"].keys(), name
    out_rel, out_abs = rel_l2(got["out"], ref["out"])
    names = sorted(ref["grads"])
    a = torch.cat([got["grads"][n].flatten() for n in names])
    b = torch.cat([ref["grads"][n].flatten() for n in names])
    grad_rel, grad_abs = rel_l2([a], [b])
    cos = float(a @ b / max(float(a.norm() * b.norm()), 1e-30))
    # worst parameter, among those whose gradient is not ~0 (a conv bias before a BatchNorm has a zero gradient
    # up to rounding, so any relative error of it is noise)
    floor = 1e-6 * float(b.norm())
    ranked = [n for n in names if float(ref["grads"][n].norm()) > floor] or names
    worst = max(ranked, key=lambda n: rel_l2([got["grads"][n]], [ref["grads"][n]])[0])
    worst_rel = rel_l2([got["grads"][worst]], [ref["grads"][worst]])[0]
    loss_rel = abs(got["loss"] - ref["loss"]) / max(abs(ref["loss"]), 1e-30)
    tol_out, tol_grad = TOLERANCES[kind]
    if kind == "fp32" and spread is not None:   # no tighter than fp32's own rounding spread (CPU fp32 vs float64)
        tol_out, tol_grad = max(tol_out, 3 * spread["out_rel"]), max(tol_grad, 3 * spread["grad_rel"])
    if kind == "spread":
        verdict = "reference"
    elif kind == "amp":   # forward and loss gated; the gradients reported (WARN), see the docstring
        verdict = ("ok" if cos >= 0.9 else "WARN grads") if out_rel <= tol_out and loss_rel <= tol_grad else "FAIL"
    else:
        verdict = "ok" if out_rel <= tol_out and grad_rel <= tol_grad else "FAIL"
    return {"name": name, "T": time_steps, "out_rel": out_rel, "out_abs": out_abs, "loss_rel": loss_rel,
            "grad_rel": grad_rel, "grad_abs": grad_abs, "cos": cos, "worst": f"{worst} ({worst_rel:.1e})",
            "tol": "-" if kind == "spread" else (f"{tol_out:.0e} / loss {tol_grad:.0e}" if kind == "amp"
                                                 else f"{tol_out:.0e} / {tol_grad:.0e}"),
            "verdict": verdict, "ok": verdict != "FAIL"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--scale", default="n")
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--time-steps", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--max-level", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-amp", action="store_true", help="skip the AMP checks")
    parser.add_argument("--out", default=None, help="Markdown file to append the table to")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cpu = torch.device("cpu")

    rows = []
    started = time.perf_counter()
    for steps in args.time_steps:
        torch.manual_seed(args.seed)
        state = {k: v.clone() for k, v in build("spikeyolo", args.scale, steps, args.max_level, "fused")
                 .state_dict().items()}
        cpu_ref = run(state, args, steps, "fused", cpu)
        cpu64 = run(state, args, steps, "fused", cpu, dtype=torch.float64)
        spread = compare("fp32 CPU vs float64 CPU (fused): fp32's own spread", "spread", steps, cpu_ref, cpu64)
        checks = []
        rows.append(spread)
        if device.type == "cuda":
            dev_ref = run(state, args, steps, "fused", device)
            checks.append(("fp32 CUDA vs fp32 CPU (fused)", "fp32", dev_ref, cpu_ref))
            checks.append(("loop vs fused, fp32 CUDA", "backend", run(state, args, steps, "loop", device), dev_ref))
            if not args.no_amp:
                checks.append(("AMP bf16 vs fp32, CUDA", "amp",
                               run(state, args, steps, "fused", device, amp=torch.bfloat16), dev_ref))
                checks.append(("AMP fp16 (loss x1024) vs fp32, CUDA", "amp",
                               run(state, args, steps, "fused", device, amp=torch.float16), dev_ref))
        else:
            checks.append(("loop vs fused, fp32 CPU", "backend", run(state, args, steps, "loop", cpu), cpu_ref))
            if not args.no_amp:
                checks.append(("autocast bf16 vs fp32, CPU", "amp",
                               run(state, args, steps, "fused", cpu, amp=torch.bfloat16), cpu_ref))
        for name, kind, got, ref in checks:
            rows.append(compare(name, kind, steps, got, ref, spread))
        for row in rows[-len(checks) - 1:]:
            print(f"T={steps} {row['name']}: out rel L2 {row['out_rel']:.2e}, grad rel L2 {row['grad_rel']:.2e}, "
                  f"grad cos {row['cos']:.4f} -> {row['verdict']}  ({time.perf_counter() - started:.0f} s)", flush=True)

    where = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    lines = [(f"SpikeYOLO-{args.scale} D={args.max_level}, batch {args.batch} x 3 x {args.imgsz} x {args.imgsz}, "
              f"seed {args.seed}, one forward + loss + backward in train mode; {where}; torch {torch.__version__}. "
              f"Command: `python scripts/gpu_equal.py {' '.join(sys.argv[1:])}`"), "",
             ("| check | T | out rel L2 | out max abs | loss rel | grad rel L2 | grad max abs | grad cosine | worst "
              "parameter (rel L2) | tol out / grad | result |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['T']} | {r['out_rel']:.2e} | {r['out_abs']:.2e} | {r['loss_rel']:.2e} | "
                     f"{r['grad_rel']:.2e} | {r['grad_abs']:.2e} | {r['cos']:.4f} | {r['worst']} | {r['tol']} | "
                     f"{r['verdict']} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as handle:
            handle.write("\n" + text + "\n")
    gated = [r for r in rows if r["verdict"] != "reference"]
    failed = [r for r in gated if not r["ok"]]
    print(f"{len(gated) - len(failed)} of {len(gated)} checks passed ({sum(r['verdict'] == 'WARN grads' for r in gated)}"
          " with a gradient WARN)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
