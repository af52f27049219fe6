"""Strict checks of YOLO label files (one ``class cx cy w h`` line per box, normalised to [0, 1]).

ultralytics drops a bad label file silently as "corrupt" together with its image. spikeyolo's rule is stricter: a
malformed line or a class id out of range is a :class:`DatasetError` naming the file and line, so that a broken dataset
is fixed instead of trained on with missing images. The tolerances match ultralytics' own verification (coordinates
in [-0.01, 1.01], integer class ids), so every file that passes here is accepted by ultralytics unchanged.
"""

from __future__ import annotations

import math
import os

from spikeyolo.errors import DatasetError

_BOX_COLUMNS = 5  # class cx cy w h
_MIN_POLYGON_COLUMNS = 7  # class + at least 3 (x, y) points; ultralytics turns polygons into boxes
_COORD_LOW, _COORD_HIGH = -0.01, 1.01  # ultralytics' 1 % tolerance


def check_label_file(path: str | os.PathLike, num_classes: int) -> int:
    """Check one label file; a missing file is an image without boxes.

    Args:
        path: the label ``.txt`` file.
        num_classes: class ids must lie in ``[0, num_classes)``.

    Returns:
        the number of label rows.

    Raises:
        DatasetError: unreadable file, wrong column count, non-numeric or non-finite value, non-integer or
            out-of-range class id, coordinates outside [0, 1], negative width/height, box and polygon rows mixed.
    """
    if not os.path.isfile(path):
        return 0
    try:
        with open(path, encoding="utf-8-sig") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: unreadable label file ({err})") from None
    rows, kinds = 0, set()
    for line_no, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{line_no}"
        num_fields = len(fields)
        is_box = num_fields == _BOX_COLUMNS
        if not is_box and (num_fields < _MIN_POLYGON_COLUMNS or num_fields % 2 == 0):
            raise DatasetError(f"{where}: malformed label line, expected 5 columns (class cx cy w h), got {num_fields}")
        kinds.add(is_box)
        if len(kinds) > 1:
            raise DatasetError(f"{where}: label file mixes box rows (5 columns) and polygon rows")
        try:
            values = [float(field) for field in fields]
        except ValueError:
            raise DatasetError(f"{where}: malformed label line, non-numeric value in {line.strip()!r}") from None
        if not all(math.isfinite(v) for v in values):
            raise DatasetError(f"{where}: malformed label line, non-finite value in {line.strip()!r}")
        class_id, coords = values[0], values[1:]
        if class_id != int(class_id):
            raise DatasetError(f"{where}: class id {fields[0]} is not an integer")
        if not 0 <= class_id < num_classes:
            raise DatasetError(f"{where}: class id {int(class_id)} out of range, the dataset has {num_classes} "
                               f"class(es) (ids 0..{num_classes - 1})")
        if min(coords) < _COORD_LOW or max(coords) > _COORD_HIGH:
            raise DatasetError(f"{where}: coordinates outside [0, 1] (labels must be normalised): {line.strip()!r}")
        if is_box and min(coords[2:]) < 0:
            raise DatasetError(f"{where}: negative box width or height: {line.strip()!r}")
        rows += 1
    return rows
