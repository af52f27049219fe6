"""Spiking-YOLO's conversion experiment (seed 001, Fig. 6 / Table 1) on a trained Tiny YOLO checkpoint.

    python scripts/run_conversion.py --ann runs/tiny/weights/best.pt [--timesteps 8 16 32 ... 512]
        [--data trees] [--root runs/conversion] [--out docs/conversion.md]

For each variant (layer- vs channel-wise normalisation x IBT vs the symmetric signed neuron) it runs
`spikeyolo-convert` and then `spikeyolo-eval timesteps=[...]` (one simulation to the largest T per
batch, read out at every T with Vmem and spike-count decoding), evaluates the ANN itself, and writes
one Markdown section into --out (between `<!-- conversion start/end -->` markers) with mAP@50 vs T,
the energy comparison (ANN MACs vs SNN accumulates at both energy presets) and two figures:
map_vs_timesteps.png (Fig. 6 style) and firing_rates.png (per-layer rates, channel vs layer norm).
Resumable: finished conversions and evaluations are kept.

It rewrites tracked files of the repository by default: the section of docs/conversion.md between its markers
and the two PNGs in docs/figures/ (say where with --out and --figures to leave them alone); both paths are
printed before anything runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = [("channel", "ibt"), ("channel", "signed"), ("layer", "ibt"), ("layer", "signed")]
START, END = "<!-- conversion start -->", "<!-- conversion end -->"


def run(command: list[str]) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, cwd=REPO, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ann", type=Path, required=True, help="trained tiny_yolo checkpoint (spikeyolo-train)")
    parser.add_argument("--data", default="trees")
    parser.add_argument("--timesteps", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256, 512])
    parser.add_argument("--calibration-images", type=int, default=44)
    parser.add_argument("--time-chunk", type=int, default=32)
    parser.add_argument("--root", type=Path, default=REPO / "runs" / "conversion")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "conversion.md")
    parser.add_argument("--figures", type=Path, default=REPO / "docs" / "figures")
    args = parser.parse_args()
    print(f"this run rewrites {args.out} (its conversion section) and {args.figures}/conversion_*.png")
    if not args.ann.is_file():
        sys.exit(f"error: ANN checkpoint not found: {args.ann}")
    args.root.mkdir(parents=True, exist_ok=True)
    python = sys.executable

    ann_metrics = args.root / "ann" / "metrics.json"
    if not ann_metrics.exists():
        run([python, "-m", "spikeyolo.cli.eval", f"checkpoint={args.ann}", f"data={args.data}",
             f"run_dir={args.root / 'ann'}"])
    ann = json.loads(ann_metrics.read_text())

    steps = ",".join(str(t) for t in sorted(set(args.timesteps)))
    sweeps = {}
    for norm, neuron in VARIANTS:
        name = f"{norm}_{neuron}"
        snn = args.root / f"snn_{name}.pt"
        if not snn.exists():
            run([python, "-m", "spikeyolo.cli.convert", f"checkpoint={args.ann}", f"data={args.data}", f"norm={norm}",
                 f"spiking_neuron={neuron}", f"calibration.images={args.calibration_images}",
                 f"time_chunk={args.time_chunk}", f"output={snn}"])
        result = args.root / f"eval_{name}" / "timesteps.json"
        if not result.exists():
            run([python, "-m", "spikeyolo.cli.eval", f"checkpoint={snn}", f"data={args.data}",
                 f"timesteps=[{steps}]", f"run_dir={result.parent}"])
        sweeps[name] = json.loads(result.read_text())

    from spikeyolo.conversion.evaluation import TimestepPoint, TimestepSweep
    from spikeyolo.energy import presets
    from spikeyolo.plots import plot_firing_rates, plot_timesteps

    energy_presets = presets()  # configs/energy/*.yaml

    loaded = {name: TimestepSweep(**{**data, "points": [TimestepPoint(**p) for p in data["points"]]})
              for name, data in ((n, {k: v for k, v in d.items() if k in TimestepSweep.__dataclass_fields__})
                                 for n, d in sweeps.items())}
    args.figures.mkdir(parents=True, exist_ok=True)
    curve_png = args.figures / "conversion_map_vs_timesteps.png"
    rates_png = args.figures / "conversion_firing_rates.png"
    plot_timesteps({name.replace("_", " + "): sweep for name, sweep in loaded.items()}, curve_png,
                   ann_map50=ann["map50"], title=f"Spiking-YOLO conversion on {args.data}: mAP@50 vs T")
    plot_firing_rates({f"{norm}-norm": loaded[f"{norm}_ibt"].firing_rates for norm in ("channel", "layer")},
                      rates_png)
    print(f"figures: {curve_png}, {rates_png}")

    # every T any variant was evaluated at (a variant evaluated earlier with more steps keeps them; "-" = not run)
    marks = sorted({p.time_steps for sweep in loaded.values() for p in sweep.points})
    header = "| T | " + " | ".join(f"{n.replace('_', ' + ')} vmem | {n.replace('_', ' + ')} spike"
                                   for n in sweeps) + " |"
    lines = [START, f"### Measured on `{args.data}` ({datetime.date.today()})", "",
             f"ANN (Tiny YOLO, `{args.ann.name}`): mAP@50 **{ann['map50']:.4f}**, mAP@50:95 {ann['map50_95']:.4f}. "
             f"SNN mAP@50 at each T (Vmem / spike-count decoding):", "", header,
             "|" + "---|" * (1 + 2 * len(sweeps))]
    for t in marks:
        cells = []
        for sweep in loaded.values():
            by = {p.decoding: p for p in sweep.points if p.time_steps == t}
            cells += [f"{by['vmem'].map50:.4f}", f"{by['spike'].map50:.4f}"] if by else ["-", "-"]
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    best = loaded["channel_ibt"]
    best_marks = sorted({p.time_steps for p in best.points})
    final = {p.decoding: p for p in best.points if p.time_steps == best_marks[-1]}
    ratio = final["vmem"].map50 / ann["map50"] if ann["map50"] > 0 else float("nan")
    lines += ["", f"Channel-norm + IBT + Vmem at T={best_marks[-1]}: {final['vmem'].map50:.4f} = {100 * ratio:.1f} % "
              f"of the ANN's mAP@50.", "",
              "Energy per image (channel-norm + IBT; ANN: every conv's MACs; SNN: the first conv's MACs once plus "
              "one accumulate per spike per connection):", "",
              "| T | SOPs (G) | " + " | ".join(f"ANN {p} (mJ) | SNN {p} (mJ)" for p in energy_presets) + " |",
              "|---|---|" + "---|---|" * len(energy_presets)]
    for t in best_marks:
        point = next(p for p in best.points if p.time_steps == t and p.decoding == "vmem")
        cells = []
        for preset in energy_presets.values():
            cells += [f"{best.dense_macs * preset.e_mac_pj * 1e-9:.3f}",
                      f"{(best.first_layer_macs * preset.e_mac_pj + point.sops * preset.e_ac_pj) * 1e-9:.3f}"]
        lines.append(f"| {t} | {point.sops / 1e9:.3f} | " + " | ".join(cells) + " |")
    lines += ["", f"Dense MACs per image {best.dense_macs / 1e9:.3f} G (first conv {best.first_layer_macs / 1e9:.3f} G); "
              f"{best.images} validation images.", "",
              f"![mAP@50 vs T](figures/{curve_png.name})", "", f"![firing rates](figures/{rates_png.name})", "",
              f"Command: `python scripts/run_conversion.py --ann {args.ann} --data {args.data} --timesteps "
              f"{' '.join(map(str, sorted(set(args.timesteps))))}` (resumable: a variant already evaluated keeps "
              "its points)", END]
    section = "\n".join(lines)
    text = args.out.read_text() if args.out.exists() else "# Conversion\n"
    if START in text and END in text:
        text = text[:text.index(START)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    args.out.write_text(text)
    print(section)


if __name__ == "__main__":
    main()
