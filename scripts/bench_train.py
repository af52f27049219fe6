"""Training-step throughput: SpikeYOLO (I-LIF backends) against YOLOv8 of the same scale, in one run.

    python scripts/bench_train.py --scales s --imgsz 320 640 --time-steps 1 4 --batch 2 --repeats 15
    python scripts/bench_train.py --device cuda --amp --batch 16          # on a GPU

A step is forward, loss (YOLOv8 detection loss on a fixed synthetic batch), backward and an SGD
step. For each row: median seconds per step, images/s, training-graph multiply-accumulates per
image (convs, counted from shapes on the meta device, x T), achieved MACs/s, peak memory (CPU:
the row's process max RSS; CUDA: max allocated), and per-MAC efficiency = MACs/s relative to the
YOLOv8 row of the same scale and image size measured in the same run. Each row runs in its own
subprocess so peak memory is per row. Baselines: I-LIF backend ``loop`` (per-step autograd loop,
what the reference does), ``spikingjelly`` (its multi-step ILIFNode) and ``fused`` (ours).
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import statistics
import sys
import time

import torch

from benchlib import add_row_arguments, emit, machine, row_argv, run_row  # noqa: E402  (scripts/ is on sys.path)

MACS_CACHE: dict = {}


def conv_macs(model: torch.nn.Module, images: torch.Tensor) -> float:
    """Multiply-accumulates of every Conv2d in one forward, per input image (training graph)."""
    total = [0.0]

    def hook(module, inputs, output):
        kernel = module.kernel_size[0] * module.kernel_size[1]
        total[0] += (module.out_channels * module.in_channels // module.groups * kernel
                     * output.shape[-1] * output.shape[-2] * output.shape[0])

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(images)
    for handle in handles:
        handle.remove()
    return total[0] / images.shape[0]


def synthetic_batch(batch: int, device: torch.device) -> dict:
    generator = torch.Generator().manual_seed(0)
    per_image = 6
    centres = torch.rand(batch * per_image, 2, generator=generator) * 0.6 + 0.2
    sizes = torch.rand(batch * per_image, 2, generator=generator) * 0.2 + 0.05
    return {"batch_idx": torch.arange(batch).repeat_interleave(per_image).float().to(device),
            "cls": torch.randint(0, 80, (batch * per_image, 1), generator=generator).float().to(device),
            "bboxes": torch.cat((centres, sizes), 1).to(device)}


def build(kind: str, scale: str, time_steps: int, max_level: int, backend: str):
    if kind == "yolov8":
        from spikeyolo._ultralytics.peer import yolov8_detection_model

        return yolov8_detection_model(scale, num_classes=80)
    import spikeyolo

    cfg = spikeyolo.compose([f"model=spikeyolo_{scale}", f"neuron.time_steps={time_steps}",
                             f"neuron.max_level={max_level}", f"neuron.backend={backend}"])
    return spikeyolo.build_model(cfg, num_classes=80)


def training_step(kind: str, model: torch.nn.Module, images: torch.Tensor, batch: dict, use_amp: bool = False):
    """The benchmarked step as a closure: forward, detection loss, backward, SGD step (no timing)."""
    if kind == "yolov8":
        from spikeyolo._ultralytics.peer import yolov8_loss

        loss_fn = yolov8_loss(model)
    else:
        loss_fn = model.build_loss()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    def step() -> None:
        with torch.autocast(images.device.type, enabled=use_amp):
            loss = loss_fn(model(images), batch)["total"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def run_one(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build(args.kind, args.scale, args.time_steps, args.max_level, args.backend).to(device).train()
    images = torch.rand(args.batch, 3, args.imgsz, args.imgsz, device=device)
    macs = conv_macs(model, images[:1])
    train_step = training_step(args.kind, model, images, synthetic_batch(args.batch, device),
                               use_amp=args.amp and device.type == "cuda")

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        train_step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = [step() for _ in range(args.repeats)]
    median = statistics.median(times)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"seconds": median, "images_per_s": args.batch / median, "macs_per_image": macs,
            "macs_per_s": macs * args.batch / median, "peak_mb": peak / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_row_arguments(parser, batch=2)
    parser.add_argument("--backends", nargs="+", default=["fused", "spikingjelly", "loop"])
    parser.add_argument("--backend", default="fused", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        args.imgsz, args.time_steps = args.imgsz[0], args.time_steps[0]
        print(json.dumps(run_one(args)))
        return

    rows = []
    for scale in args.scales:
        for imgsz in args.imgsz:
            plan = [("yolov8", 1, "-")]
            for steps in args.time_steps:
                plan += [("spikeyolo", steps, backend) for backend in args.backends
                         if steps > 1 or backend in ("fused", "loop")]
            reference = None
            for kind, steps, backend in plan:
                result = run_row(__file__, row_argv(args, kind, scale, imgsz, steps)
                                 + ["--backend", backend if backend != "-" else "fused"])
                if kind == "yolov8":
                    reference = result
                result["efficiency"] = result["macs_per_s"] / reference["macs_per_s"] if reference else None
                name = f"YOLOv8{scale}" if kind == "yolov8" else f"SpikeYOLO-{scale} T={steps} D={args.max_level} ({backend})"
                rows.append((name, imgsz, result))
                print(f"{name} @{imgsz}: {result['seconds']:.3f} s/step, {result['images_per_s']:.2f} img/s, "
                      f"{result['macs_per_image'] / 1e9:.2f} GMAC/img, eff {result['efficiency']:.2f}", flush=True)
    lines = [f"Training step (forward, loss, backward, SGD), batch {args.batch}, median of {args.repeats} after "
             f"{args.warmup} warm-up; {machine(args)}; torch {torch.__version__}; AMP {'on' if args.amp else 'off'}; "
             f"{datetime.date.today()}. Command: `python scripts/bench_train.py {' '.join(sys.argv[1:])}`", "",
             "| model | imgsz | s/step | img/s | GMAC/img (train graph) | GMAC/s | per-MAC efficiency vs YOLOv8 | peak MB |",
             "|---|---|---|---|---|---|---|---|"]
    for name, imgsz, r in rows:
        lines.append(f"| {name} | {imgsz} | {r['seconds']:.3f} | {r['images_per_s']:.2f} | {r['macs_per_image'] / 1e9:.2f} | "
                     f"{r['macs_per_s'] / 1e9:.1f} | {r['efficiency']:.2f} | {r['peak_mb']:.0f} |")
    emit(lines, args.append)


if __name__ == "__main__":
    main()
