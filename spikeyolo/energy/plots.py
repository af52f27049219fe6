"""PNG plots of an energy report (matplotlib, Agg backend, bundled DejaVu font; no display, no download).

- ``layers.png``: per-layer firing rate per virtual step, and per-layer SNN vs ANN energy (log scale).
- ``channels.png``: per-channel firing-rate distribution of every spiking conv input (box per layer),
  in the spirit of Spiking-YOLO Fig. 3/4 (per-channel activity spread that layer-wise statistics hide).
"""

from __future__ import annotations

from pathlib import Path

from spikeyolo.energy.counting import ConvCount
from spikeyolo.energy.report import EnergyReport

__all__ = ["plot_layers", "plot_channel_rates", "write_plots"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams["font.family"] = "DejaVu Sans"
    return plt


def plot_layers(report: EnergyReport, path: str | Path) -> Path:
    """Bars of the firing rate per virtual step and of the energy of every counted conv."""
    plt = _pyplot()
    rows = report.layers
    index = list(range(len(rows)))
    rates = [row.firing_rate or 0.0 for row in rows]
    fig, (ax_rate, ax_energy) = plt.subplots(2, 1, figsize=(max(8.0, 0.12 * len(rows)), 7), sharex=True)
    ax_rate.bar(index, rates, color="tab:blue")
    ax_rate.set_ylabel("firing rate / virtual step")
    ax_rate.set_title(f"T={report.time_steps}, D={report.max_level}, mean spikes/element "
                      f"{report.total['mean_spikes']:.3f} (0..D)")
    ax_energy.bar(index, [row.ann_energy_pj / 1e6 for row in rows], color="tab:gray", label="ANN (MAC)")
    ax_energy.bar(index, [row.snn_energy_pj / 1e6 for row in rows], color="tab:orange", label="SNN (stem MAC, AC)")
    ax_energy.set_yscale("log")
    ax_energy.set_ylabel("energy per image (uJ)")
    ax_energy.set_xlabel("conv index (execution order; 0 = stem)")
    ax_energy.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_channel_rates(counts: list[ConvCount], path: str | Path) -> Path | None:
    """Box plot of per-channel firing rates (per virtual step) for every spiking conv input."""
    data = [(i, c.channel_firing_rates()) for i, c in enumerate(counts) if c.kind == "spike"]
    data = [(i, rates.numpy()) for i, rates in data if rates is not None]
    if not data:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(8.0, 0.12 * len(data)), 4))
    ax.boxplot([rates for _, rates in data], positions=[i for i, _ in data], widths=0.6, showfliers=True,
               flierprops={"markersize": 2})
    ax.set_xlabel("conv index (execution order)")
    ax.set_ylabel("per-channel firing rate / virtual step")
    ax.set_ylim(-0.02, 1.02)
    ticks = [i for i, _ in data][:: max(1, len(data) // 20)]
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.set_title("per-channel firing-rate distribution of each conv input")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(report: EnergyReport, counts: list[ConvCount], out_dir: str | Path) -> list[Path]:
    """Write ``layers.png`` and ``channels.png`` into ``out_dir``; returns the written paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [plot_layers(report, out_dir / "layers.png")]
    channels = plot_channel_rates(counts, out_dir / "channels.png")
    if channels is not None:
        written.append(channels)
    return written
