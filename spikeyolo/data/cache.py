"""Where spikeyolo writes derived dataset files (label caches, COCO-json conversions).

Nothing is ever written beside a dataset (the embedded one lives inside the package, which may be read-only, and a
user's dataset folder is theirs): every derived file goes under ``$SPIKEYOLO_CACHE`` or ``~/.cache/spikeyolo``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_root() -> Path:
    """The writable cache folder: ``$SPIKEYOLO_CACHE`` if set, else ``~/.cache/spikeyolo`` (created)."""
    root = Path(os.environ.get("SPIKEYOLO_CACHE") or Path.home() / ".cache" / "spikeyolo").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def cache_key(*parts: object) -> str:
    """A short stable hash of ``parts`` (their ``str``), used to name cache entries."""
    digest = hashlib.sha256("\0".join(str(p) for p in parts).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:16]
