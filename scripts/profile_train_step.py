"""Where a training step's time goes: torch.profiler over the step of scripts/bench_train.py, by category.

    python scripts/profile_train_step.py [--kind spikeyolo|yolov8] [--scale s] [--imgsz 320] [--time-steps 1]
        [--steps 5] [--threads 2] [--device cuda] [--amp]

Profiles ``--steps`` training steps (forward, YOLOv8 loss, backward, SGD step; batch 2) after warm-up and
sums the operators' self CPU time into categories: dense convolution and depthwise convolution (forward and
backward, told apart by the weight shape [C, 1, k, k]), batch norm (forward, backward), the neuron (clamp,
round, the straight-through backward), the optimizer step, and the rest (loss, elementwise adds of the
residuals, copies, allocation). Prints a Markdown table with milliseconds per step and shares.

With ``--device cuda`` (``--amp``: torch.autocast, as scripts/bench_train.py --amp) the profiler records the GPU
too and the categories sum each operator's self device time (the kernels it launched) instead, adding the CUDA
operators (cuDNN convolution and batch norm, the depthwise kernel) and a category for the NCHW/NHWC layout copies;
it also reports the step's wall time (timed without the profiler, synchronised), the GPU idle share
(1 - device time / wall time) and the 15 kernels with the most device time.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import build, synthetic_batch, training_step  # noqa: E402

CONV_FORWARD = {"aten::mkldnn_convolution", "aten::_convolution_depthwise2d", "aten::_conv_depthwise2d",
                "aten::thnn_conv2d", "aten::_slow_conv2d_forward", "aten::_nnpack_spatial_convolution",
                # CUDA (native_functions.yaml): cuDNN, the native depthwise kernel, the slow fallback
                "aten::cudnn_convolution", "aten::conv_depthwise2d", "aten::_conv_depthwise2d_forward",
                "aten::slow_conv_dilated2d", "aten::cudnn_convolution_relu", "aten::cudnn_convolution_add_relu"}
CONV_BACKWARD = {"aten::convolution_backward", "aten::_conv_depthwise2d_backward",
                 "aten::conv_depthwise2d_backward", "aten::cudnn_convolution_backward"}
BATCH_NORM = {"aten::native_batch_norm", "aten::_batch_norm_impl_index", "aten::batch_norm",
              "aten::_native_batch_norm_legit", "aten::_native_batch_norm_legit_no_training",
              "aten::cudnn_batch_norm", "aten::_batch_norm_with_update", "aten::batch_norm_stats",
              "aten::batch_norm_elemt", "aten::batch_norm_gather_stats_with_counts"}
BATCH_NORM_BACKWARD = {"aten::native_batch_norm_backward", "aten::cudnn_batch_norm_backward",
                       "aten::batch_norm_backward", "aten::batch_norm_backward_reduce",
                       "aten::batch_norm_backward_elemt"}
LAYOUT = {"aten::copy_", "aten::contiguous", "aten::clone", "aten::_to_copy"}   # on CUDA: NCHW<->NHWC, dtype casts
NEURON = {"aten::clamp", "aten::round_", "aten::round", "aten::hardtanh_backward", "_QuantizeSTE",
          "_QuantizeSTEBackward", "_ILIFMultiStep", "_ILIFMultiStepBackward", "aten::eq"}
OPTIMIZER = {"Optimizer.step#SGD.step", "aten::_foreach_add_", "aten::_foreach_mul_", "aten::_foreach_add",
             "aten::_foreach_lerp_", "aten::_foreach_addcmul_"}


def weight_is_depthwise(shapes) -> bool:
    for shape in shapes or []:
        if isinstance(shape, (list, tuple)) and len(shape) == 4 and shape[1] == 1 and shape[2] > 1:
            return True
    return False


def category(event, cuda: bool = False) -> str:
    name = event.key
    if name in CONV_FORWARD or name in CONV_BACKWARD:
        kind = "depthwise conv" if weight_is_depthwise(event.input_shapes) else "dense conv"
        return f"{kind} {'backward' if name in CONV_BACKWARD else 'forward'}"
    if name in BATCH_NORM:
        return "batch norm forward"
    if name in BATCH_NORM_BACKWARD:
        return "batch norm backward"
    if name in NEURON:
        return "neuron (I-LIF / ReLU)"
    if name in OPTIMIZER or name.startswith("Optimizer"):
        return "optimizer (SGD)"
    if name in ("aten::relu", "aten::threshold_backward", "aten::silu", "aten::silu_backward"):
        return "activation (ANN)"
    if cuda and name in LAYOUT:
        return "copies (layout NCHW/NHWC, AMP casts)"
    return "other (loss, adds, copies, allocation)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", default="spikeyolo", choices=["spikeyolo", "yolov8"])
    parser.add_argument("--scale", default="s")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--time-steps", type=int, default=1)
    parser.add_argument("--max-level", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="torch.autocast (CUDA only, as bench_train.py)")
    args = parser.parse_args()
    if args.device.startswith("cuda"):
        return main_cuda(args)
    torch.set_num_threads(args.threads)
    model = build(args.kind, args.scale, args.time_steps, args.max_level, "fused").train()
    images = torch.rand(args.batch, 3, args.imgsz, args.imgsz)
    step = training_step(args.kind, model, images, synthetic_batch(args.batch, torch.device("cpu")))

    for _ in range(args.warmup):
        step()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(args.steps):
            step()
    totals: dict[str, float] = defaultdict(float)
    for event in prof.key_averages(group_by_input_shape=True):
        totals[category(event)] += event.self_cpu_time_total
    step_ms = {name: value / 1000 / args.steps for name, value in totals.items()}
    whole = sum(step_ms.values())
    label = (f"{args.kind} {args.scale}, {args.imgsz}x{args.imgsz}, batch {args.batch}"
             + (f", T={args.time_steps} D={args.max_level}" if args.kind == "spikeyolo" else ""))
    print(f"Profile of one training step ({label}; {args.threads} threads, torch {torch.__version__}; "
          f"`python {' '.join(sys.argv)}`): self CPU time per step, {args.steps} steps after {args.warmup} warm-up.")
    print()
    print("| category | ms per step | share |")
    print("|---|---|---|")
    for name, value in sorted(step_ms.items(), key=lambda item: -item[1]):
        print(f"| {name} | {value:.1f} | {100 * value / whole:.1f} % |")
    print(f"| total (profiled) | {whole:.1f} | 100 % |")



def self_device_us(event) -> float:
    """An event's self device time in microseconds (``self_cuda_time_total`` before torch 2.4)."""
    value = getattr(event, "self_device_time_total", None)
    return float(value if value is not None else getattr(event, "self_cuda_time_total", 0.0))


def main_cuda(args: argparse.Namespace) -> None:
    import time

    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    device = torch.device(args.device)
    model = build(args.kind, args.scale, args.time_steps, args.max_level, "fused").to(device).train()
    images = torch.rand(args.batch, 3, args.imgsz, args.imgsz, device=device)
    step = training_step(args.kind, model, images, synthetic_batch(args.batch, device), use_amp=args.amp)
    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - started) * 1000 / args.steps

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        for _ in range(args.steps):
            step()
        torch.cuda.synchronize()
    totals: dict[str, float] = defaultdict(float)
    kernels: dict[str, float] = defaultdict(float)
    for event in prof.key_averages(group_by_input_shape=True):
        if event.device_type == DeviceType.CPU:   # operators: their self device time is the kernels they launched
            totals[category(event, cuda=True)] += self_device_us(event)
        else:                                     # the kernels themselves (counted once, here)
            kernels[event.key] += self_device_us(event)
    kernel_ms = sum(kernels.values()) / 1000 / args.steps
    step_ms = {name: value / 1000 / args.steps for name, value in totals.items() if value > 0}
    attributed = sum(step_ms.values())
    if kernel_ms - attributed > 0.05 * kernel_ms:
        step_ms["(kernels under no operator)"] = kernel_ms - attributed
    whole = sum(step_ms.values())
    label = (f"{args.kind} {args.scale}, {args.imgsz}x{args.imgsz}, batch {args.batch}"
             + (f", T={args.time_steps} D={args.max_level}" if args.kind == "spikeyolo" else ""))
    print(f"Profile of one training step ({label}; {torch.cuda.get_device_name(device)}, AMP "
          f"{'on' if args.amp else 'off'}, torch {torch.__version__}, CUDA {torch.version.cuda}; "
          f"`python {' '.join(sys.argv)}`): self device time per step, {args.steps} steps after {args.warmup} "
          f"warm-up.")
    print()
    print("| category | ms per step | share |")
    print("|---|---|---|")
    for name, value in sorted(step_ms.items(), key=lambda item: -item[1]):
        print(f"| {name} | {value:.2f} | {100 * value / whole:.1f} % |")
    print(f"| total (device time) | {whole:.2f} | 100 % |")
    print()
    print(f"Step wall time (no profiler, synchronised, mean of {args.steps}): {wall_ms:.2f} ms, "
          f"{args.batch / wall_ms * 1000:.1f} img/s; device time {whole:.2f} ms; GPU idle share "
          f"{100 * max(0.0, 1 - whole / wall_ms):.1f} %; peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB.")
    print()
    print("| kernel (top 15 by device time) | ms per step | share |")
    print("|---|---|---|")
    for name, value in sorted(kernels.items(), key=lambda item: -item[1])[:15]:
        short = name if len(name) <= 110 else name[:107] + "..."
        print(f"| `{short.replace('|', '/')}` | {value / 1000 / args.steps:.2f} | "
              f"{100 * value / max(sum(kernels.values()), 1e-9):.1f} % |")


if __name__ == "__main__":
    main()
