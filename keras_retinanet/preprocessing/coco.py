"""Generator over a COCO-format dataset.

Layout::

    DATA_DIR/annotations/instances_<set_name>.json
    DATA_DIR/images/<set_name>/<file_name of each image>

Category ids (any integers, e.g. COCO's 1..90 with gaps) are mapped to contiguous labels
0..C-1 in increasing id order; ``label_to_coco_label`` maps back for COCO evaluation.
Crowd annotations and boxes narrower or lower than one pixel are skipped.
"""
import contextlib
import io
import json
import os

import numpy as np
from pycocotools.coco import COCO

from ..utils.files import read_utf8
from ..utils.image import read_image_bgr
from .generator import Generator

# Boxes smaller than this (width or height, pixels) are skipped, as in fizyr's generator.
MIN_BOX_SIDE = 1.0


def _load_coco_json(path):
    """The parsed and checked annotation json as a pycocotools ``COCO`` object."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"COCO annotations file not found: {path}")
    def fail(message):
        raise ValueError(f"invalid COCO annotations file: {path}: {message}")

    try:
        dataset = json.loads(read_utf8(path))
    except json.JSONDecodeError as error:
        fail(str(error))
    except RecursionError:
        fail("nested too deeply")
    except ValueError as error:  # not UTF-8 (read_utf8)
        fail(str(error))

    def is_id(value):
        return isinstance(value, (int, str)) and not isinstance(value, bool)

    def is_number(value):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)

    if not isinstance(dataset, dict):
        fail("the top level must be an object")
    for key in ("images", "categories"):
        if not isinstance(dataset.get(key), list):
            fail(f"missing list '{key}'")
    dataset.setdefault("annotations", [])
    if not isinstance(dataset["annotations"], list):
        fail("'annotations' must be a list")
    image_ids, category_ids = set(), set()
    for i, image in enumerate(dataset["images"]):
        if not isinstance(image, dict):
            fail(f"images[{i}] must be an object")
        missing = [k for k in ("id", "file_name", "width", "height") if k not in image]
        if missing:
            fail(f"images[{i}] misses {', '.join(missing)}")
        if not is_id(image["id"]) or not isinstance(image["file_name"], str):
            fail(f"images[{i}]: id must be a number or a string and file_name a string")
        if not (is_number(image["width"]) and is_number(image["height"]) and image["width"] > 0 and image["height"] > 0):
            fail(f"images[{i}]: width and height must be positive numbers, got {image['width']!r}, {image['height']!r}")
        image_ids.add(image["id"])
    for i, category in enumerate(dataset["categories"]):
        if not isinstance(category, dict):
            fail(f"categories[{i}] must be an object")
        missing = [k for k in ("id", "name") if k not in category]
        if missing:
            fail(f"categories[{i}] misses {', '.join(missing)}")
        if not is_id(category["id"]) or not isinstance(category["name"], str):
            fail(f"categories[{i}]: id must be a number or a string and name a string")
        if category["id"] in category_ids:
            fail(f"categories[{i}]: duplicate category id {category['id']}")
        category_ids.add(category["id"])
    for i, annotation in enumerate(dataset["annotations"]):
        if not isinstance(annotation, dict):
            fail(f"annotations[{i}] must be an object")
        where = f"annotations[{i}] (id {annotation.get('id', '?')})"
        missing = [k for k in ("image_id", "category_id", "bbox") if k not in annotation]
        if missing:
            fail(f"{where} misses {', '.join(missing)}")
        bbox = annotation["bbox"]
        if (
            not isinstance(bbox, list)
            or len(bbox) != 4
            or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in bbox)
        ):
            fail(f"{where}: bbox must be 4 numbers [x, y, width, height], got {bbox!r}")
        if not is_id(annotation["image_id"]) or not is_id(annotation["category_id"]):
            fail(f"{where}: image_id and category_id must be numbers or strings")
        if annotation["image_id"] not in image_ids:
            fail(f"{where}: unknown image_id {annotation['image_id']}")
        if annotation["category_id"] not in category_ids:
            fail(f"{where}: unknown category_id {annotation['category_id']}")
        annotation.setdefault("id", i + 1)
        annotation.setdefault("iscrowd", 0)
        annotation.setdefault("area", bbox[2] * bbox[3])

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


class CocoGenerator(Generator):
    """Generator over ``data_dir/annotations/instances_<set_name>.json``.

    Args:
        data_dir: dataset folder (holds ``annotations/`` and ``images/``).
        set_name: e.g. 'train2017'.
        **kwargs: ``Generator`` arguments.

    Attributes:
        coco: the pycocotools ``COCO`` object (for COCO evaluation).
        image_ids: COCO image id of each image index.
    """

    def __init__(self, data_dir, set_name, **kwargs):
        self.data_dir = data_dir
        self.set_name = set_name
        self.annotations_path = os.path.join(data_dir, "annotations", f"instances_{set_name}.json")
        self.coco = _load_coco_json(self.annotations_path)
        self.image_ids = self.coco.getImgIds()
        self.load_classes()
        super().__init__(**kwargs)

    def load_classes(self):
        """Contiguous labels for the categories, in increasing category id order."""
        categories = sorted(self.coco.loadCats(self.coco.getCatIds()), key=lambda c: c["id"])
        self.classes = {}
        self.coco_labels = {}
        self.coco_labels_inverse = {}
        for category in categories:
            label = len(self.classes)
            self.coco_labels[label] = category["id"]
            self.coco_labels_inverse[category["id"]] = label
            self.classes[category["name"]] = label
        self.labels = {label: name for name, label in self.classes.items()}

    def size(self):
        return len(self.image_ids)

    def coco_label_to_label(self, coco_label):
        return self.coco_labels_inverse[coco_label]

    def coco_label_to_name(self, coco_label):
        return self.label_to_name(self.coco_label_to_label(coco_label))

    def label_to_coco_label(self, label):
        return self.coco_labels[label]

    def _image_info(self, image_index):
        return self.coco.loadImgs(self.image_ids[image_index])[0]

    def image_path(self, image_index):
        return os.path.join(self.data_dir, "images", self.set_name, self._image_info(image_index)["file_name"])

    def image_aspect_ratio(self, image_index):
        info = self._image_info(image_index)
        return float(info["width"]) / float(info["height"])

    def load_image(self, image_index):
        return read_image_bgr(self.image_path(image_index))

    def load_annotations(self, image_index):
        """Boxes (x, y, w, h in the json) as x1, y1, x2, y2; crowd and sub-pixel boxes skipped."""
        ids = self.coco.getAnnIds(imgIds=self.image_ids[image_index], iscrowd=False)
        annotations = [a for a in self.coco.loadAnns(ids) if not a.get("iscrowd", 0)]
        boxes = np.array([a["bbox"] for a in annotations], dtype=np.float64).reshape(-1, 4)
        keep = (boxes[:, 2] >= MIN_BOX_SIDE) & (boxes[:, 3] >= MIN_BOX_SIDE)
        boxes = boxes[keep]
        boxes[:, 2:] += boxes[:, :2]
        labels = np.array(
            [self.coco_label_to_label(a["category_id"]) for a, k in zip(annotations, keep) if k],
            dtype=np.int64,
        )
        return {"bboxes": boxes, "labels": labels}
