"""Reading the CSV formats of annotations.csv and classes.csv (pure Python: no TensorFlow).

``preprocessing.csv_generator`` re-exports these under fizyr's names; the tools use them
directly to check a classes file before loading anything heavy.
"""
import csv
import io
from collections import OrderedDict

import numpy as np

from ..utils.files import read_utf8

def _parse(value, function, fmt):
    """``function(value)``, or ValueError(fmt.format(error)) without the chained traceback."""
    try:
        return function(value)
    except ValueError as error:
        raise ValueError(fmt.format(error)) from None


def _read_classes(csv_reader):
    """{class name: id} from ``name,id`` rows; ids must be integers, names and ids unique.

    Raises:
        ValueError: ``line N: ...`` for a malformed line or a repeated name or id.
    """
    result = OrderedDict()
    ids = {}
    for line, row in enumerate(csv_reader, start=1):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(row) != 2:
            raise ValueError(f"line {line}: format should be 'class_name,class_id', got {','.join(row)!r}")
        class_name, class_id = row
        class_id = _parse(class_id, int, f"line {line}: malformed class ID: {{}}")
        if not class_name:
            raise ValueError(f"line {line}: empty class name")
        if class_id < 0:
            raise ValueError(f"line {line}: class ID must be >= 0, got {class_id}")
        if class_name in result:
            raise ValueError(f"line {line}: duplicate class name: {class_name!r}")
        if class_id in ids:
            raise ValueError(f"line {line}: duplicate class ID {class_id} (also used by {ids[class_id]!r})")
        result[class_name] = class_id
        ids[class_id] = class_name
    return result


def _read_annotations(csv_reader, classes, duplicates=None):
    """{image path: [{x1, y1, x2, y2, class}, ...]} from ``path,x1,y1,x2,y2,class`` rows.

    Coordinates may be integers or decimals; ``path,,,,,`` declares an image without boxes.
    A line that repeats an earlier line's box (same image, corners and class) is kept once.

    Args:
        duplicates: a list that gets (line, line it repeats) for every such line.

    Raises:
        ValueError: ``line N: ...`` for a wrong column count, malformed coordinates,
            x2 <= x1, y2 <= y1, or a class not in ``classes``.
    """
    result = OrderedDict()
    first_line = {}
    for line, row in enumerate(csv_reader, start=1):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != 6:
            raise ValueError(
                f"line {line}: format should be 'img_file,x1,y1,x2,y2,class_name' or "
                f"'img_file,,,,,', got {','.join(row)!r}"
            )
        img_file, x1, y1, x2, y2, class_name = row
        if not img_file:
            raise ValueError(f"line {line}: empty image path")
        boxes = result.setdefault(img_file, [])
        if (x1, y1, x2, y2, class_name) == ("", "", "", "", ""):
            continue

        x1 = _parse(x1, float, f"line {line}: malformed x1: {{}}")
        y1 = _parse(y1, float, f"line {line}: malformed y1: {{}}")
        x2 = _parse(x2, float, f"line {line}: malformed x2: {{}}")
        y2 = _parse(y2, float, f"line {line}: malformed y2: {{}}")
        for name, value in (("x1", x1), ("y1", y1), ("x2", x2), ("y2", y2)):
            if not np.isfinite(value):
                raise ValueError(f"line {line}: malformed {name}: {value} is not a finite number")
        if x2 <= x1:
            raise ValueError(f"line {line}: x2 ({_fmt(x2)}) must be higher than x1 ({_fmt(x1)})")
        if y2 <= y1:
            raise ValueError(f"line {line}: y2 ({_fmt(y2)}) must be higher than y1 ({_fmt(y1)})")
        if class_name not in classes:
            raise ValueError(f"line {line}: unknown class name: {class_name!r} (classes: {list(classes)})")
        key = (img_file, x1, y1, x2, y2, class_name)
        if key in first_line:
            if duplicates is not None:
                duplicates.append((line, first_line[key]))
            continue
        first_line[key] = line
        boxes.append({"x1": x1, "y1": y1, "x2": x2, "y2": y2, "class": class_name})
    return result


def _fmt(value):
    return str(int(value)) if float(value).is_integer() else str(value)


def _open_for_csv(path):
    """A CSV file as text for ``csv.reader``: UTF-8 (a leading byte-order mark is dropped).

    Raises:
        ValueError: ``line N: ...`` where the file is not UTF-8.
    """
    return io.StringIO(read_utf8(path), newline="")


def read_classes_file(path):
    """{class name: id} of a classes CSV file.

    Raises:
        ValueError: ``line N: ...`` (the caller names the file).
    """
    with _open_for_csv(path) as file:
        return _read_classes(csv.reader(file, delimiter=","))
