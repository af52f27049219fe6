"""NIR export (kept as an import path; the code lives in :mod:`spikeyolo.deploy.nir`)."""

from spikeyolo.deploy.nir.export import NirExportReport, export_nir, to_nir

__all__ = ["NirExportReport", "export_nir", "to_nir"]
