"""A synthetic Prophesee-layout dataset (:mod:`spikeyolo.data.events.synthetic`) generated once into the cache, in
parallel: the stand-in of ``data=gen1_synthetic`` (Gen1 scenes) and ``data=gen4_synthetic`` (1Mpx scenes) for tests
and smoke runs without the real data.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import shutil
import tempfile
import zlib
from collections.abc import Mapping
from pathlib import Path

from spikeyolo.data.cache import cache_key, cache_root
from spikeyolo.data.events.synthetic import SCENES, write_recording

log = logging.getLogger(__name__)

__all__ = ["ensure_synthetic_dataset"]


def _synthetic_job(job: tuple[Path, str, int, float, int, int, str]) -> str:
    out_dir, split, index, duration_s, seed, label_period_us, camera = job
    name = f"synthetic_{split}_{index:04d}"
    # the seed sequence of synthetic.generate_dataset: a file depends only on (seed, split, index)
    write_recording(out_dir / split, name, duration_s, (seed, zlib.crc32(split.encode()), index),
                    dataclasses.replace(SCENES[camera], label_period_us=int(label_period_us)))
    return name


def ensure_synthetic_dataset(recordings: Mapping[str, int], duration_s: float = 3.0, seed: int = 0,
                             label_period_us: int = 100_000, workers: int | None = None,
                             root: str | os.PathLike | None = None, camera: str = "gen1") -> Path:
    """A synthetic dataset in a release's layout (:mod:`spikeyolo.data.events.synthetic`), generated once.

    Args:
        recordings: recordings per split, e.g. ``{"train": 8, "test": 2}``.
        duration_s: seconds per recording.
        seed: base seed (recording i of split s uses the seed sequence (seed, crc32(s), i)).
        label_period_us: label rate (labels from 0.5 s on).
        workers: generator processes (default: the CPU count).
        root: where to write it; default ``cache_root()/<camera>_synthetic/<key of the arguments>``.
        camera: ``gen1`` (Gen1 scenes) or ``gen4`` (1Mpx scenes), a key of
            :data:`spikeyolo.data.events.synthetic.SCENES`.

    Returns:
        the dataset folder (``train/``, ``test/``, ...). It is written into a temp folder and renamed, so an
        interrupted generation is redone from scratch and a finished one is reused.
    """
    counts = {str(split): int(n) for split, n in dict(recordings).items()}
    if root is None:
        root = cache_root() / f"{camera}_synthetic" / cache_key(sorted(counts.items()), float(duration_s), int(seed),
                                                           int(label_period_us))
    root = Path(root)
    if (root / "COMPLETE").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        jobs = [(tmp, split, index, float(duration_s), int(seed), int(label_period_us), str(camera))
                for split, count in counts.items() for index in range(count)]
        for split in counts:
            (tmp / split).mkdir()
        workers = max(1, min((os.cpu_count() or 1) if workers is None else int(workers), len(jobs)))
        log.info("generating %d synthetic %s recordings into %s", len(jobs), camera, root)
        if workers == 1:
            for job in jobs:
                _synthetic_job(job)
        else:
            with multiprocessing.get_context().Pool(workers) as pool:
                list(pool.imap_unordered(_synthetic_job, jobs))
        (tmp / "COMPLETE").write_text(f"synthetic {camera} dataset, see spikeyolo.data.events.synthetic\n")
        if root.exists():   # an incomplete earlier attempt or a concurrent run
            if (root / "COMPLETE").is_file():
                return root
            shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
