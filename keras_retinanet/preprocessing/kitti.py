"""Generator over a KITTI object-detection dataset (fizyr's layout and class mapping).

Layout::

    BASE_DIR/<subset>/labels/<name>.txt    one object a line, space separated (below)
    BASE_DIR/<subset>/images/<name>.png    the image of each label file

A label line has KITTI's 15 columns (``KITTI_COLUMNS``; a 16th, the score of a results
file, is ignored)::

    Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59

Only the type and the 2D box are used: ``left, top, right, bottom`` (pixels, 0-based)
become the box ``x1, y1, x2, y2`` as they are. Classes are fizyr's (``kitti_classes``):
'Misc' and 'DontCare' share label 7 (whose name is 'DontCare'), so DontCare regions are
trained as objects of that class, as in fizyr. Label files are read in name order (fizyr
took the folder's listing order).
"""
import os

import numpy as np

from ..utils.files import read_utf8
from ..utils.image import read_image_bgr
from .generator import Generator

#: fizyr's class mapping: {KITTI type: label}; 'Misc' and 'DontCare' are both label 7.
kitti_classes = {
    "Car": 0,
    "Van": 1,
    "Truck": 2,
    "Pedestrian": 3,
    "Person_sitting": 4,
    "Cyclist": 5,
    "Tram": 6,
    "Misc": 7,
    "DontCare": 7,
}
#: The columns of a KITTI label line, in order.
KITTI_COLUMNS = (
    "type", "truncated", "occluded", "alpha", "left", "top", "right", "bottom",
    "height", "width", "length", "x", "y", "z", "rotation_y",
)  # fmt: skip
BOX_COLUMNS = slice(4, 8)  # left, top, right, bottom
LABEL_SUFFIX = ".txt"
IMAGE_SUFFIX = ".png"


def _parse_box_line(fields, line):
    """(x1, y1, x2, y2) of one split label line; ValueError 'line N: ...' naming the bad column."""
    values = []
    for name, text in zip(KITTI_COLUMNS[BOX_COLUMNS], fields[BOX_COLUMNS]):
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"line {line}: malformed {name}: {text!r} is not a number") from None
        if not np.isfinite(value):
            raise ValueError(f"line {line}: malformed {name}: {text!r} is not a finite number")
        values.append(value)
    return values


def read_kitti_labels(text, classes=None):
    """Boxes and labels of one KITTI label file's text.

    Args:
        text: the file's text.
        classes: {type: label} (default ``kitti_classes``).

    Returns:
        (boxes (K, 4) float64 x1, y1, x2, y2 in pixels, labels (K,) int64).

    Raises:
        ValueError: ``line N: ...`` for a wrong number of columns, an unknown type, a value
            that is not a number, or right < left / bottom < top.
    """
    classes = kitti_classes if classes is None else classes
    rows, lines = [], []
    for line, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split()
        if not fields:
            continue
        if len(fields) not in (len(KITTI_COLUMNS), len(KITTI_COLUMNS) + 1):
            raise ValueError(
                f"line {line}: expected {len(KITTI_COLUMNS)} space-separated values ({' '.join(KITTI_COLUMNS)}), "
                f"got {len(fields)}"
            )
        if fields[0] not in classes:
            raise ValueError(f"line {line}: unknown object type {fields[0]!r} (types: {', '.join(classes)})")
        rows.append(fields)
        lines.append(line)
    if not rows:
        return np.zeros((0, 4), dtype=np.float64), np.zeros((0,), dtype=np.int64)
    try:
        boxes = np.array([fields[BOX_COLUMNS] for fields in rows], dtype=np.float64)
        if not np.isfinite(boxes).all():
            raise ValueError
    except ValueError:  # find the line and the column to report
        for fields, line in zip(rows, lines):
            _parse_box_line(fields, line)
        raise
    for (low, high), (low_name, high_name) in (((0, 2), ("left", "right")), ((1, 3), ("top", "bottom"))):
        wrong = np.flatnonzero(boxes[:, high] < boxes[:, low])
        if len(wrong):
            row = wrong[0]
            raise ValueError(
                f"line {lines[row]}: {high_name} ({boxes[row, high]:g}) must not be lower than "
                f"{low_name} ({boxes[row, low]:g})"
            )
    labels = np.array([classes[fields[0]] for fields in rows], dtype=np.int64)
    return boxes, labels


class KittiGenerator(Generator):
    """Generator over ``base_dir/<subset>/labels/*.txt`` and ``base_dir/<subset>/images/*.png``.

    Every label file is read when the generator is made (as in fizyr), so a malformed
    line stops it at once.

    Args:
        base_dir: the dataset folder (holds one folder per subset).
        subset: 'train', 'val', ... (default 'train').
        **kwargs: ``Generator`` arguments.

    Raises:
        FileNotFoundError: the subset's labels folder does not exist.
        ValueError: ``invalid KITTI label file: PATH: line N: ...``, or no label files.
    """

    def __init__(self, base_dir, subset="train", **kwargs):
        self.base_dir = base_dir
        self.subset = subset
        self.label_dir = os.path.join(base_dir, subset, "labels")
        self.image_dir = os.path.join(base_dir, subset, "images")
        self.classes = dict(kitti_classes)
        self.labels = {label: name for name, label in self.classes.items()}  # 7 -> 'DontCare', as fizyr
        if not os.path.isdir(self.label_dir):
            raise FileNotFoundError(f"KITTI labels folder not found: {self.label_dir}")
        names = sorted(name for name in os.listdir(self.label_dir) if name.endswith(LABEL_SUFFIX))
        if not names:
            raise ValueError(f"invalid KITTI dataset: {self.label_dir} has no {LABEL_SUFFIX} label files")
        #: image paths, by image index (fizyr's name)
        self.images = []
        #: {image index: (boxes (K, 4) float64, labels (K,) int64)}
        self.image_data = {}
        for index, name in enumerate(names):
            path = os.path.join(self.label_dir, name)
            try:
                self.image_data[index] = read_kitti_labels(read_utf8(path), self.classes)
            except ValueError as error:
                raise ValueError(f"invalid KITTI label file: {path}: {error}") from None
            self.images.append(os.path.join(self.image_dir, name[: -len(LABEL_SUFFIX)] + IMAGE_SUFFIX))
        self._aspect_ratios = {}
        super().__init__(**kwargs)

    def size(self):
        return len(self.images)

    def num_classes(self):
        """max label + 1 = 8 ('Misc' and 'DontCare' share a label)."""
        return max(self.classes.values()) + 1

    def image_path(self, image_index):
        return self.images[image_index]

    def image_aspect_ratio(self, image_index):
        """Width / height, read from the image header only."""
        ratio = self._aspect_ratios.get(image_index)
        if ratio is None:
            height, width = self.image_size(image_index)
            ratio = self._aspect_ratios[image_index] = float(width) / float(height)
        return ratio

    def load_image(self, image_index):
        return read_image_bgr(self.image_path(image_index))

    def load_annotations(self, image_index):
        """dict with ``bboxes`` (K, 4) float64 x1, y1, x2, y2 (pixels) and ``labels`` (K,) int64."""
        boxes, labels = self.image_data[image_index]
        return {"bboxes": boxes.copy(), "labels": labels.copy()}
