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
import os
import warnings

import numpy as np

from ..utils.image import read_image_bgr, read_image_size
from .csv_format import _fmt, _open_for_csv, _parse, _read_annotations, _read_classes  # noqa: F401 (fizyr's names)
from .generator import Generator

MAX_LISTED_DUPLICATES = 5


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
