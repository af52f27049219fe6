"""Write synthetic Prophesee-format recordings (Gen1 or 1 Megapixel scenes) into OUT_DIR/{train,val,test}/.

    python -m spikeyolo.data.events.make_synthetic OUT_DIR --recordings 2 --duration-s 2 [--camera gen4]

The command line of :mod:`spikeyolo.data.events.synthetic`, in a module of its own: ``spikeyolo.data`` imports the
generator, and ``python -m`` of a module that is already imported makes runpy warn.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from spikeyolo.data.events.cameras import GEN1, GEN4
from spikeyolo.data.events.synthetic import SCENES, generate_dataset


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m spikeyolo.data.events.make_synthetic",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder to create train/ val/ test/ in")
    parser.add_argument("--recordings", type=int, default=2, help="recordings per split (default 2)")
    parser.add_argument("--duration-s", type=float, default=2.0, help="seconds per recording (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--splits", nargs="+", default=["train", "val", "test"])
    parser.add_argument("--camera", choices=sorted(SCENES), default="gen1",
                        help=f"gen1 ({GEN1.size}, the default) or gen4 ({GEN4.size}, the 1 Megapixel format)")
    args = parser.parse_args(argv)
    for dat_path, box_path in generate_dataset(args.out_dir, args.recordings, args.duration_s, args.seed, args.splits,
                                               SCENES[args.camera]):
        print(f"{dat_path}  {box_path}")


if __name__ == "__main__":
    main()
