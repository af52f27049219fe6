"""Operation, spike and energy counting on the spike-driven model, with reports and plots.

    spike_model = spikeyolo.deploy.to_spike_driven(model)
    counts = spikeyolo.energy.measure(spike_model, [images])
    report = spikeyolo.energy.build_report(counts, load_preset("float32_45nm"), mode="reference")

Energy presets (pJ per MAC and per AC) are the packaged configs/energy/*.yaml: :func:`load_preset`, :func:`presets`.
"""

from pathlib import Path

from spikeyolo.energy.counting import ConvCount, ConvGeometry, OpCounter, count_dense_ops
from spikeyolo.energy.presets import DEFAULT_PRESET, EnergyPreset, load_preset, presets
from spikeyolo.energy.report import EnergyReport, LayerEnergy, build_report, measure
from spikeyolo.io import write_text
from spikeyolo.plots import plot_channel_rates, plot_energy_layers

__all__ = ["ConvCount", "ConvGeometry", "OpCounter", "count_dense_ops", "DEFAULT_PRESET", "EnergyPreset",
           "load_preset", "presets", "EnergyReport", "LayerEnergy", "build_report", "measure", "write_report"]


def write_report(report: EnergyReport, counts: list[ConvCount], out_dir: str | Path, plots: bool = True) -> dict:
    """Write energy.json, energy.md and (``plots``) the PNGs into ``out_dir``; returns {kind: path(s)}.

    ``layers.png``: per-layer firing rate per virtual step and SNN vs ANN energy (log scale);
    ``channels.png``: the per-channel firing-rate spread of every spiking conv input (Spiking-YOLO Fig. 3/4).
    """
    out_dir = Path(out_dir)
    report.to_json(out_dir / "energy.json")
    write_text(out_dir / "energy.md", report.to_markdown())
    written = {"json": out_dir / "energy.json", "markdown": out_dir / "energy.md", "plots": []}
    if plots:
        written["plots"].append(plot_energy_layers(report, out_dir / "layers.png"))
        rates = [(index, count.channel_firing_rates()) for index, count in enumerate(counts) if count.kind == "spike"]
        channels = plot_channel_rates([(index, r.numpy()) for index, r in rates if r is not None],
                                      out_dir / "channels.png", xlabel="conv index (execution order)",
                                      ylabel="per-channel firing rate / virtual step", ylim=(-0.02, 1.02),
                                      title="per-channel firing-rate distribution of each conv input")
        written["plots"] += [channels] if channels is not None else []
    return written
