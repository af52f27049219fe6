"""Energy report: per-layer table and totals from the op counts, as JSON and Markdown.

Energy convention (reference section 7, SpikeYOLO Eq. 16-17, 45 nm numbers of Horowitz 2014):

    E_ANN = E_MAC * sum_l dense_ops_l                                   (Eq. 16, all convs)
    E_SNN = E_MAC * dense_ops_stem + E_AC * sum_{l > stem} SOPs_l        (Eq. 17)
    SOPs_l (reference) = dense_ops_l * mean_spikes_l * T = dense_ops_l * fr_l * T * D

``mean_spikes`` is the sheet's "fr" (mean integer value 0..D of the spikes entering the conv);
``fr`` in Eq. 17 is the rate per virtual binary step, mean_spikes / D. The stem runs once on the
image (not T times), as in the sheet and Eq. 17; an event clip's T distinct frames are T stem passes.
Energies are pJ per op; totals are reported in mJ (1 mJ = 1e9 pJ). One known quirk of the sheet is not copied: its stem row multiplies the MACs by
0.9 * 4.6 (= 4.14 pJ) instead of 4.6 pJ.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spikeyolo.energy.counting import ConvCount, ConvGeometry, OpCounter
from spikeyolo.energy.presets import EnergyPreset, load_preset

__all__ = ["LayerEnergy", "EnergyReport", "measure", "build_report"]

PJ_PER_MJ = 1e9


@dataclass
class LayerEnergy(ConvGeometry):
    """One row of the report (per image): the conv's geometry, then its counts and energies."""

    in_hw: list[int]
    out_hw: list[int]
    dense_ops: float
    valid_ops: float
    mean_spikes: float | None
    firing_rate: float | None
    sops_reference: float
    sops_reference_valid: float
    sops_exact: float
    sops: float
    ann_energy_pj: float
    snn_energy_pj: float


@dataclass
class EnergyReport:
    """Per-layer rows and totals (per image) for one model, preset and counting mode."""

    layers: list[LayerEnergy]
    total: dict[str, float]
    preset: EnergyPreset
    mode: str
    time_steps: int
    max_level: int
    num_images: int
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "preset": asdict(self.preset), "mode": self.mode,
                "time_steps": self.time_steps, "max_level": self.max_level, "num_images": self.num_images,
                "info": self.info, "layers": [asdict(row) for row in self.layers]}

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def _input_note(self) -> str:
        """', input 640x640' from ``info['input_shapes']`` (the [H, W] the model really saw), else ''."""
        shapes = self.info.get("input_shapes") or []
        return (", input " + ", ".join(f"{h}x{w}" for h, w in shapes)) if shapes else ""

    def to_markdown(self) -> str:
        t = self.total
        lines = [
            f"# Energy report ({self.mode} counting, preset {self.preset.name}: "
            f"E_MAC={self.preset.e_mac_pj} pJ, E_AC={self.preset.e_ac_pj} pJ)",
            "",
            f"T={self.time_steps}, D={self.max_level}, images={self.num_images}{self._input_note()}. "
            "Values are per image.",
            "",
            "| total | value |", "|---|---|",
            f"| dense ops (MACs) | {t['dense_ops']:,.0f} |",
            f"| stem MACs | {t['stem_ops']:,.0f} |",
            f"| SOPs ({self.mode}) | {t['sops']:,.0f} |",
            f"| SOPs reference / exact | {t['sops_reference']:,.0f} / {t['sops_exact']:,.0f} |",
            f"| modes agree, in-bounds taps: reference vs exact | {100 * t['modes_rel_diff_in_bounds']:+.2f} % |",
            f"| sheet convention (padding taps credited) vs exact | {100 * t['modes_rel_diff_sheet']:+.2f} % |",
            f"| mean spikes per element (0..D) | {t['mean_spikes']:.4f} |",
            f"| ANN energy (Eq. 16) | {t['ann_energy_mj']:.4f} mJ |",
            f"| SNN energy (Eq. 17) | {t['snn_energy_mj']:.4f} mJ |",
            f"| ANN / SNN | {t['ann_over_snn']:.2f}x |",
            "",
            "| # | layer | kind | Cin->Cout | k/s/g | out HxW | dense ops | mean spikes | fr/step | SOPs | "
            "energy (pJ) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for index, row in enumerate(self.layers):
            mean = "-" if row.mean_spikes is None else f"{row.mean_spikes:.4f}"
            rate = "-" if row.firing_rate is None else f"{row.firing_rate:.4f}"
            lines.append(f"| {index} | {row.name} | {row.kind} | {row.in_chs}->{row.out_chs} | "
                         f"{row.kernel_size}/{row.stride}/{row.groups} | {row.out_hw[0]}x{row.out_hw[1]} | "
                         f"{row.dense_ops:,.0f} | {mean} | {rate} | {row.sops:,.0f} | {row.snn_energy_pj:,.0f} |")
        return "\n".join(lines) + "\n"


@torch.no_grad()
def measure(spike_model: nn.Module, batches, channel_stats: bool = True) -> list[ConvCount]:
    """Run a spike-driven model over batches of images and return the per-conv counts.

    Args:
        spike_model: output of ``spikeyolo.deploy.to_spike_driven`` (eval mode).
        batches: iterable of image tensors [B, 3, H, W] in [0, 1] (or [T, B, C, H, W]).
    """
    spike_model.eval()
    with OpCounter(spike_model, spikes=True, channel_stats=channel_stats) as counter:
        for images in batches:
            spike_model(images)
    return counter.counts


def build_report(counts: list[ConvCount], preset: EnergyPreset | None = None,
                 mode: str = "reference", info: dict[str, Any] | None = None) -> EnergyReport:
    """Turn per-conv counts into a report.

    Args:
        counts: from :func:`measure` (or ``OpCounter``).
        preset: energies per op (default: :func:`~spikeyolo.energy.presets.load_preset`'s default, float32_45nm).
        mode: "reference" (dense ops x mean spikes x T, the sheet) or "exact" (1s x true fan-out).
    """
    if mode not in ("reference", "exact"):
        raise ValueError(f"mode must be 'reference' or 'exact', got {mode!r}")
    preset = preset if preset is not None else load_preset()
    rows = []
    for c in counts:
        sops = c.sops_reference if mode == "reference" else c.sops_exact
        snn = c.dense_ops * preset.e_mac_pj if c.kind == "stem" else sops * preset.e_ac_pj
        rows.append(LayerEnergy(
            **c.geometry(), in_hw=list(c.in_hw), out_hw=list(c.out_hw), dense_ops=c.dense_ops,
            valid_ops=c.valid_ops, mean_spikes=c.mean_spikes, firing_rate=c.firing_rate,
            sops_reference=c.sops_reference, sops_reference_valid=c.sops_reference_valid,
            sops_exact=c.sops_exact, sops=0.0 if c.kind == "stem" else sops,
            ann_energy_pj=c.dense_ops * preset.e_mac_pj, snn_energy_pj=snn))
    spike_counts = [c for c in counts if c.kind == "spike"]
    dense = sum(r.dense_ops for r in rows)
    stem = sum(r.dense_ops for r in rows if r.kind == "stem")
    sops = sum(r.sops for r in rows)
    ann_mj = dense * preset.e_mac_pj / PJ_PER_MJ
    snn_mj = (stem * preset.e_mac_pj + sops * preset.e_ac_pj) / PJ_PER_MJ
    ones = sum(c.ones_sum for c in spike_counts)
    elements = sum(c.elements_sum for c in spike_counts)
    time_steps = max((c.time_steps for c in spike_counts), default=1)
    max_level = max((c.max_level for c in spike_counts), default=1)
    total = {
        "dense_ops": dense, "stem_ops": stem, "valid_ops": sum(r.valid_ops for r in rows), "sops": sops,
        "sops_reference": sum(r.sops_reference for r in rows), "sops_exact": sum(r.sops_exact for r in rows),
        "sops_reference_valid": sum(r.sops_reference_valid for r in rows),
        "mean_spikes": ones / elements if elements else 0.0,
        "firing_rate": ones / elements / max_level if elements else 0.0,
        "ann_energy_mj": ann_mj, "snn_energy_mj": snn_mj,
        "ann_over_snn": ann_mj / snn_mj if snn_mj > 0 else float("inf"),
    }
    exact_sops = total["sops_exact"]
    total.update({
        # agreement of the two counting modes: on the same taps (padding excluded) they must agree
        # within 1 %; the sheet's credit for taps that read zero padding is reported separately
        "modes_rel_diff_in_bounds": total["sops_reference_valid"] / exact_sops - 1 if exact_sops else 0.0,
        "modes_rel_diff_sheet": total["sops_reference"] / exact_sops - 1 if exact_sops else 0.0,
        # Eq. 16-17 written with the firing rate per virtual step: identical to the reference mode
        "eq16_ann_energy_mj": ann_mj,
        "eq17_snn_energy_mj": (stem * preset.e_mac_pj + preset.e_ac_pj * sum(
            c.dense_ops * (c.firing_rate or 0.0) * c.time_steps * c.max_level for c in spike_counts)) / PJ_PER_MJ,
    })
    return EnergyReport(layers=rows, total=total, preset=preset, mode=mode, time_steps=time_steps,
                        max_level=max_level, num_images=max((c.images for c in counts), default=0),
                        info=dict(info or {}))
