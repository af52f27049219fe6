#!/usr/bin/env python
"""Convert a local COCO 2017 folder to the YOLO layout read by ``spikeyolo/configs/data/coco.yaml``.

Input (the official zips unpacked into COCO_DIR)::

    COCO_DIR/annotations/instances_train2017.json  instances_val2017.json
    COCO_DIR/train2017/*.jpg  COCO_DIR/val2017/*.jpg        (or COCO_DIR/images/{train2017,val2017})

Output (in OUT, default COCO_DIR)::

    OUT/images/{train2017,val2017}   the image folders (a symlink when the images live elsewhere; never copied)
    OUT/labels/{train2017,val2017}/  one txt per image: ``class cx cy w h`` normalised; class = position of the
                                     category in the json's categories list (0..79); iscrowd skipped
    OUT/coco.yaml                    Ultralytics dataset yaml + val_json and category_ids (written last)

Nothing is downloaded. Missing inputs: exit status 2 and a one-line message saying what to download and where.

Usage: python scripts/prepare_coco.py [--coco-dir DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from spikeyolo.data.coco_json import convert_coco_json
from spikeyolo.errors import DatasetError

SPLITS = ("train2017", "val2017")
URLS = {
    "train2017": "http://images.cocodataset.org/zips/train2017.zip",
    "val2017": "http://images.cocodataset.org/zips/val2017.zip",
    "annotations": "http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
}


def find_inputs(coco_dir: Path) -> tuple[dict[str, Path], dict[str, Path], list[str]]:
    """The image folder and json of each split, and the names of the missing ones."""
    images, jsons, missing = {}, {}, []
    for split in SPLITS:
        candidates = [coco_dir / split, coco_dir / "images" / split]
        found = next((c for c in candidates if c.is_dir()), None)
        if found is None:
            missing.append(f"{split}/")
        else:
            images[split] = found
        json_path = coco_dir / "annotations" / f"instances_{split}.json"
        if json_path.is_file():
            jsons[split] = json_path
        else:
            missing.append(f"annotations/instances_{split}.json")
    return images, jsons, missing


def missing_message(coco_dir: Path, missing: list[str]) -> str:
    zips = [URLS[name.rstrip("/")] for name in ("train2017/", "val2017/") if name in missing]
    if any(m.startswith("annotations/") for m in missing):
        zips.append(URLS["annotations"])
    return (f"prepare_coco: missing {', '.join(missing)} in {coco_dir}; download {' '.join(zips)} and unzip them "
            f"into {coco_dir} (giving {coco_dir}/train2017, {coco_dir}/val2017, {coco_dir}/annotations)")


def link_images(source: Path, target: Path) -> None:
    """Make ``target`` (OUT/images/<split>) the image folder: nothing to do, or a symlink to ``source``."""
    if target.exists() and target.resolve() == source.resolve():
        return
    if target.is_symlink():
        target.unlink()
    elif target.exists():
        raise DatasetError(f"{target}: exists and is not the COCO image folder {source}")
    target.parent.mkdir(parents=True, exist_ok=True)
    source, root = source.resolve(), target.parent.parent.resolve()  # OUT
    inside = source.is_relative_to(root)  # keep the folder relocatable when the images live inside OUT
    target.symlink_to(os.path.relpath(source, target.parent.resolve()) if inside else source, target_is_directory=True)


def prepare(coco_dir: Path, out: Path) -> Path:
    """Write the labels and coco.yaml; returns the yaml path."""
    images, jsons, missing = find_inputs(coco_dir)
    if missing:
        raise FileNotFoundError(missing_message(coco_dir, missing))
    names = category_ids = None
    for split in SPLITS:
        link_images(images[split], out / "images" / split)
        converted = convert_coco_json(jsons[split], out / "images" / split, out / "labels" / split)
        absent = sum(not f.is_file() for f in converted.image_files)
        print(f"{split}: {len(converted.image_files)} images ({absent} missing on disk), {converted.num_boxes} "
              f"boxes, {converted.num_crowd} crowd skipped, {converted.num_empty} without boxes")
        if names is not None and (names, category_ids) != (converted.names, converted.category_ids):
            raise DatasetError(f"{jsons[split]}: categories differ between the train and val jsons")
        names, category_ids = converted.names, converted.category_ids
    val_json = jsons["val2017"].resolve()
    try:
        val_json_entry = str(val_json.relative_to(out.resolve()))
    except ValueError:
        val_json_entry = str(val_json)
    data = {"path": ".", "train": "images/train2017", "val": "images/val2017", "val_json": val_json_entry,
            "names": dict(enumerate(names)), "category_ids": category_ids}
    yaml_path = out / "coco.yaml"
    tmp = yaml_path.with_suffix(".yaml.tmp")
    tmp.write_text(f"# Written by scripts/prepare_coco.py from {coco_dir.resolve()}\n"
                   + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    os.replace(tmp, yaml_path)
    return yaml_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco-dir", type=Path, default=Path(os.environ.get("COCO_DIR", "datasets/coco")),
                        help="folder with train2017/, val2017/, annotations/ (default: $COCO_DIR or datasets/coco)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the COCO folder)")
    args = parser.parse_args(argv)
    try:
        yaml_path = prepare(args.coco_dir, args.out or args.coco_dir)
    except FileNotFoundError as err:
        print(err, file=sys.stderr)
        return 2
    except DatasetError as err:
        print(f"prepare_coco: {err}", file=sys.stderr)
        return 1
    print(f"wrote {yaml_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
