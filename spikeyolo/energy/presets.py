"""Energy-per-operation presets. Their numbers live only in the packaged configs, configs/energy/*.yaml
(the group ``energy=`` of spikeyolo-energy and spikeyolo-eval); this module reads them.

    spikeyolo.energy.load_preset("int_spiking_yolo")   # EnergyPreset(name, e_mac_pj, e_ac_pj)
    spikeyolo.energy.presets()                         # {name: EnergyPreset} of every file
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from spikeyolo.config import CONFIG_DIR

__all__ = ["DEFAULT_PRESET", "EnergyPreset", "load_preset", "presets"]

PRESET_DIR = CONFIG_DIR / "energy"
DEFAULT_PRESET = "float32_45nm"  # the SpikeYOLO paper's and its energy sheet's (configs/energy.yaml's default)


@dataclass(frozen=True)
class EnergyPreset:
    """Energy per operation in pJ.

    Attributes:
        name: label written into the report.
        e_mac_pj: one multiply-accumulate.
        e_ac_pj: one accumulate (a synaptic operation driven by a binary spike).
    """

    name: str
    e_mac_pj: float
    e_ac_pj: float


def _read(path: Path) -> EnergyPreset:
    values = yaml.safe_load(path.read_text())
    return EnergyPreset(str(values["name"]), float(values["e_mac_pj"]), float(values["e_ac_pj"]))


def presets() -> dict[str, EnergyPreset]:
    """Every packaged preset by file name (configs/energy/NAME.yaml)."""
    return {path.stem: _read(path) for path in sorted(PRESET_DIR.glob("*.yaml"))}


def load_preset(name: str = DEFAULT_PRESET) -> EnergyPreset:
    """The preset of configs/energy/``name``.yaml.

    Raises:
        ValueError: no such preset (the message lists those there are).
    """
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"no energy preset {name!r}; presets: {', '.join(presets())}")
    return _read(path)
