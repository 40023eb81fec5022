"""Generator over a CSV annotations file and a CSV classes file.

annotations.csv, one box a line (pixel corners; paths relative to the CSV's folder, or
to ``base_dir``); an image without objects has one line with empty fields::

    images/img_001.jpg,837,346,981,456,cow
    images/img_002.jpg,215,312,279,391,cat
    images/img_003.jpg,,,,,

classes.csv, ids from 0, no background class::

    cow,0
    cat,1
"""
import csv
import io
import os
import warnings
from collections import OrderedDict

import numpy as np

from ..utils.files import read_utf8
from ..utils.image import read_image_bgr, read_image_size
from .generator import Generator

MAX_LISTED_DUPLICATES = 5


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


class CSVGenerator(Generator):
    """Generator over ``csv_data_file`` (annotations) and ``csv_class_file`` (classes).

    Args:
        csv_data_file: annotations CSV path.
        csv_class_file: classes CSV path.
        base_dir: folder the image paths are relative to (default: the annotations CSV's folder).
        **kwargs: ``Generator`` arguments.

    Raises:
        ValueError: ``invalid CSV class file: PATH: line N: ...`` or
            ``invalid CSV annotations file: PATH: line N: ...``.
        FileNotFoundError: a CSV file does not exist.
    """

    def __init__(self, csv_data_file, csv_class_file, base_dir=None, **kwargs):
        self.base_dir = base_dir if base_dir is not None else os.path.dirname(os.path.abspath(csv_data_file))
        self.classes = self._load_csv(csv_class_file, "class", _read_classes)
        if not self.classes:
            raise ValueError(f"invalid CSV class file: {csv_class_file}: no classes (the file has no class_name,id line)")
        self.labels = {label: name for name, label in self.classes.items()}
        #: (line, line it repeats) of every annotation line that repeats an earlier one (kept once)
        self.duplicate_lines = []
        self.image_data = self._load_csv(
            csv_data_file, "annotations", lambda reader: _read_annotations(reader, self.classes, self.duplicate_lines)
        )
        if not self.image_data:
            raise ValueError(
                f"invalid CSV annotations file: {csv_data_file}: no images (the file has no annotation line)"
            )
        if self.duplicate_lines:
            listed = ", ".join(f"line {line} repeats line {first}" for line, first in self.duplicate_lines[:MAX_LISTED_DUPLICATES])
            more = len(self.duplicate_lines) - MAX_LISTED_DUPLICATES
            warnings.warn(
                f"{csv_data_file}: {len(self.duplicate_lines)} duplicate annotation lines, each box kept once "
                f"({listed}{f', and {more} more' if more > 0 else ''})",
                stacklevel=2,
            )
        self.image_names = list(self.image_data.keys())
        self._aspect_ratios = {}
        super().__init__(**kwargs)

    @staticmethod
    def _load_csv(path, kind, read):
        if os.path.isdir(path):
            raise ValueError(f"invalid CSV {kind} file: {path} is a folder, not a CSV file")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"CSV {kind} file not found: {path}")
        try:
            with _open_for_csv(path) as file:
                return read(csv.reader(file, delimiter=","))
        except (ValueError, csv.Error) as error:
            raise ValueError(f"invalid CSV {kind} file: {path}: {error}") from None


    def size(self):
        return len(self.image_names)

    def num_classes(self):
        """max class id + 1 (ids need not be contiguous)."""
        return max(self.classes.values()) + 1 if self.classes else 0

    def image_path(self, image_index):
        return os.path.join(self.base_dir, self.image_names[image_index])

    def image_aspect_ratio(self, image_index):
        """Width / height, read from the image header only."""
        ratio = self._aspect_ratios.get(image_index)
        if ratio is None:
            height, width = read_image_size(self.image_path(image_index))
            ratio = self._aspect_ratios[image_index] = float(width) / float(height)
        return ratio

    def load_image(self, image_index):
        return read_image_bgr(self.image_path(image_index))

    def load_annotations(self, image_index):
        boxes = self.image_data[self.image_names[image_index]]
        bboxes = np.array([[b["x1"], b["y1"], b["x2"], b["y2"]] for b in boxes], dtype=np.float64)
        labels = np.array([self.name_to_label(b["class"]) for b in boxes], dtype=np.int64)
        return {"bboxes": bboxes.reshape(-1, 4), "labels": labels}
