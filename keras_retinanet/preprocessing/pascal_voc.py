"""Generator over a Pascal VOC-format dataset.

Layout::

    DATA_DIR/ImageSets/Main/<set_name>.txt   one image name a line (first token used)
    DATA_DIR/JPEGImages/<name><image_extension>
    DATA_DIR/Annotations/<name>.xml          <object><name>cat</name><bndbox><xmin>...

VOC boxes are 1-based inclusive pixel indices; they become continuous corners
``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax`` (fizyr subtracted 1 from xmax and
ymax too, which made every box one pixel too small).
"""
import os
import xml.etree.ElementTree as ET

import numpy as np

from ..utils.files import read_utf8
from ..utils.image import read_image_bgr, read_image_size
from .generator import Generator

voc_classes = {
    "aeroplane": 0,
    "bicycle": 1,
    "bird": 2,
    "boat": 3,
    "bottle": 4,
    "bus": 5,
    "car": 6,
    "cat": 7,
    "chair": 8,
    "cow": 9,
    "diningtable": 10,
    "dog": 11,
    "horse": 12,
    "motorbike": 13,
    "person": 14,
    "pottedplant": 15,
    "sheep": 16,
    "sofa": 17,
    "train": 18,
    "tvmonitor": 19,
}


def _find_node(parent, name, debug_name=None, parse=None):
    """Child element ``name`` of ``parent`` (or its parsed text); ValueError when missing or malformed."""
    debug_name = debug_name or name
    node = parent.find(name)
    if node is None:
        raise ValueError(f"missing element '{debug_name}'")
    if parse is None:
        return node
    try:
        return parse((node.text or "").strip())
    except ValueError as error:
        raise ValueError(f"illegal value for '{debug_name}': {error}") from None


def _optional_flag(parent, name):
    """Integer flag such as <truncated>, 0 when absent (many labelling tools omit it)."""
    if parent.find(name) is None:
        return 0
    return _find_node(parent, name, parse=lambda text: int(float(text)))


class PascalVocGenerator(Generator):
    """Generator over a VOC-style folder.

    Args:
        data_dir: dataset folder (holds ImageSets/, JPEGImages/, Annotations/).
        set_name: name of the image list in ImageSets/Main, e.g. 'trainval'.
        classes: {class name: label}, labels 0..C-1 (default: the 20 VOC classes).
        image_extension: extension of the image files.
        skip_truncated: leave out objects marked truncated.
        skip_difficult: leave out objects marked difficult.
        **kwargs: ``Generator`` arguments.
    """

    def __init__(
        self,
        data_dir,
        set_name,
        classes=voc_classes,
        image_extension=".jpg",
        skip_truncated=False,
        skip_difficult=False,
        **kwargs,
    ):
        self.data_dir = data_dir
        self.set_name = set_name
        self.classes = dict(classes)
        self.labels = {label: name for name, label in self.classes.items()}
        if sorted(self.labels) != list(range(len(self.classes))):
            raise ValueError(f"class labels must be 0..{len(self.classes) - 1}, got {sorted(self.labels)}")
        self.image_extension = image_extension
        self.skip_truncated = skip_truncated
        self.skip_difficult = skip_difficult
        set_file = os.path.join(data_dir, "ImageSets", "Main", f"{set_name}.txt")
        if not os.path.isfile(set_file):
            raise FileNotFoundError(f"Pascal VOC image set file not found: {set_file}")
        try:
            text = read_utf8(set_file)
        except ValueError as error:
            raise ValueError(f"invalid Pascal VOC image set file: {set_file}: {error}") from None
        self.image_names = [line.split()[0] for line in text.splitlines() if line.strip()]
        if not self.image_names:
            raise ValueError(f"invalid Pascal VOC image set file: {set_file}: no image names")
        super().__init__(**kwargs)

    def size(self):
        return len(self.image_names)

    def image_path(self, image_index):
        return os.path.join(self.data_dir, "JPEGImages", self.image_names[image_index] + self.image_extension)

    def annotation_path(self, image_index):
        return os.path.join(self.data_dir, "Annotations", self.image_names[image_index] + ".xml")

    def image_aspect_ratio(self, image_index):
        height, width = read_image_size(self.image_path(image_index))
        return float(width) / float(height)

    def load_image(self, image_index):
        return read_image_bgr(self.image_path(image_index))

    def _parse_object(self, element):
        truncated = _optional_flag(element, "truncated")
        difficult = _optional_flag(element, "difficult")
        class_name = (_find_node(element, "name").text or "").strip()
        if class_name not in self.classes:
            raise ValueError(f"class name '{class_name}' not found in classes: {list(self.classes)}")
        bndbox = _find_node(element, "bndbox")
        xmin = _find_node(bndbox, "xmin", "bndbox.xmin", parse=float)
        ymin = _find_node(bndbox, "ymin", "bndbox.ymin", parse=float)
        xmax = _find_node(bndbox, "xmax", "bndbox.xmax", parse=float)
        ymax = _find_node(bndbox, "ymax", "bndbox.ymax", parse=float)
        if xmax < xmin:
            raise ValueError(f"xmax ({xmax:g}) must not be lower than xmin ({xmin:g})")
        if ymax < ymin:
            raise ValueError(f"ymax ({ymax:g}) must not be lower than ymin ({ymin:g})")
        box = [xmin - 1, ymin - 1, xmax, ymax]
        return truncated, difficult, box, self.name_to_label(class_name)

    def load_annotations(self, image_index):
        path = self.annotation_path(image_index)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Pascal VOC annotations file not found: {path}")
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as error:
            raise ValueError(f"invalid annotations file: {path}: {error}") from None
        boxes, labels = [], []
        for i, element in enumerate(root.iter("object")):
            try:
                truncated, difficult, box, label = self._parse_object(element)
            except ValueError as error:
                raise ValueError(f"invalid annotations file: {path}: object #{i}: {error}") from None
            if (truncated and self.skip_truncated) or (difficult and self.skip_difficult):
                continue
            boxes.append(box)
            labels.append(label)
        return {
            "bboxes": np.array(boxes, dtype=np.float64).reshape(-1, 4),
            "labels": np.array(labels, dtype=np.int64),
        }
