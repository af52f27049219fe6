"""ultralytics' environment: offline, a private config directory, a local font, torch's thread count kept.

Importing this module sets ``YOLO_OFFLINE=1``, ``YOLO_AUTOINSTALL=0``, ``YOLO_VERBOSE=False`` and a writable
``YOLO_CONFIG_DIR`` holding matplotlib's DejaVuSans under the font names ultralytics would download, then
imports ultralytics and checks its version.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch


def _prepare_environment() -> Path:
    """Set ultralytics' offline variables and a writable config dir with a local font."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    config_dir = os.environ.get("YOLO_CONFIG_DIR")
    if not config_dir:
        config_dir = str(Path(tempfile.gettempdir()) / f"spikeyolo-ultralytics-{os.getuid()}")
        os.environ["YOLO_CONFIG_DIR"] = config_dir
    config_path = Path(config_dir)
    config_path.mkdir(parents=True, exist_ok=True)
    # ultralytics' plotting asks for Arial and downloads it when missing: give it
    # matplotlib's bundled DejaVuSans under the names it looks for.
    try:
        import matplotlib

        dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        for name in ("Arial.ttf", "Arial.Unicode.ttf"):
            target = config_path / name
            if dejavu.exists() and not target.exists():
                shutil.copyfile(dejavu, target)
    except Exception:  # pragma: no cover - plotting is optional
        pass
    return config_path


YOLO_CONFIG_DIR = _prepare_environment()
_threads_before = torch.get_num_threads()

import ultralytics  # noqa: E402
import ultralytics.utils as _ul_utils  # noqa: E402
import ultralytics.utils.torch_utils as _ul_torch_utils  # noqa: E402
from ultralytics.utils import IterableSimpleNamespace  # noqa: E402

# ultralytics resets torch's thread count to its own NUM_THREADS (cpu_count - 1,
# i.e. 1 on a 2-core machine): keep the count torch had before the import.
_ul_utils.NUM_THREADS = max(_threads_before, 1)
_ul_torch_utils.NUM_THREADS = max(_threads_before, 1)
torch.set_num_threads(_threads_before)

ULTRALYTICS_VERSION = ultralytics.__version__
if not ULTRALYTICS_VERSION.startswith("8.4."):  # pragma: no cover - guarded by pyproject
    raise ImportError(f"spikeyolo is tested with ultralytics 8.4.x, found {ULTRALYTICS_VERSION}")

__all__ = ["YOLO_CONFIG_DIR", "ULTRALYTICS_VERSION", "IterableSimpleNamespace", "hyperparameters"]


def hyperparameters(**overrides: Any) -> IterableSimpleNamespace:
    """ultralytics' default hyper-parameter namespace (default.yaml) with overrides."""
    from ultralytics.cfg import get_cfg

    return get_cfg(overrides=overrides or None)
