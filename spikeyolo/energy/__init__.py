"""Operation, spike and energy counting on the spike-driven model, with reports and plots.

    spike_model = spikeyolo.deploy.to_spike_driven(model)
    counts = spikeyolo.energy.measure(spike_model, [images])
    report = spikeyolo.energy.build_report(counts, PRESETS["float32_45nm"], mode="reference")
"""

from spikeyolo.energy.counting import ConvCount, OpCounter, count_dense_ops
from spikeyolo.energy.report import PRESETS, EnergyPreset, EnergyReport, LayerEnergy, build_report, measure

__all__ = ["ConvCount", "OpCounter", "count_dense_ops", "PRESETS", "EnergyPreset", "EnergyReport", "LayerEnergy",
           "build_report", "measure", "write_report"]


def write_report(report: EnergyReport, counts: list[ConvCount], out_dir) -> dict:
    """Write energy.json, energy.md and the PNG plots into ``out_dir``; returns {kind: path}."""
    from pathlib import Path

    from spikeyolo.energy.plots import write_plots

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report.to_json(out_dir / "energy.json")
    (out_dir / "energy.md").write_text(report.to_markdown())
    pngs = write_plots(report, counts, out_dir)
    return {"json": out_dir / "energy.json", "markdown": out_dir / "energy.md", "plots": pngs}
