"""The package's version, in a module of its own at the bottom of the layers: any module may read it without
importing ``spikeyolo`` (the public API, at the top)."""

__version__ = "0.1.0"
