"""Calibration images for post-training int8 quantisation (``retinanet-convert-model --quantize int8``).

    from keras_retinanet.calibration import calibration_images

    images = calibration_images("data/train.csv", count=100)
    len(images), images.paths          # the images chosen, spread over the dataset
    for image in images: ...           # (H, W, 3) uint8 BGR, read when iterated

The quantiser runs the float model on these images to find the range of every
activation, so they should look like what the model will see: a few dozen to a few hundred
images of the training set (not the validation set the quantised model is measured on).
They are the original images: the exported graph preprocesses and resizes them itself,
as it does at inference.

A source is one of:

- a CSV annotations file (``path,x1,y1,x2,y2,class``, paths relative to its folder; the
  class names are not checked: only the images are used);
- a COCO dataset folder (``annotations/instances_<set>.json`` and ``images/<set>/``);
- a Pascal VOC dataset folder (``ImageSets/Main/<set>.txt``, ``JPEGImages/``);
- a folder of image files (``utils.image.IMAGE_EXTENSIONS``, not recursive).
"""
import csv
import glob
import os

import numpy as np

from .errors import CalibrationError
from .utils.image import IMAGE_EXTENSIONS, read_image_bgr

DEFAULT_CALIBRATION_IMAGES = 100
SOURCE_KINDS = ("csv", "coco", "pascal", "folder")
DEFAULT_SET_NAMES = {"coco": "train2017", "pascal": "trainval"}


def calibration_source_kind(path):
    """What a calibration source is: 'csv', 'coco', 'pascal' or 'folder'.

    Raises:
        CalibrationError: the path does not exist, or is a file that is not a CSV.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CalibrationError(f"calibration data not found: {path}")
    if os.path.isfile(path):
        if os.path.splitext(path)[1].lower() != ".csv":
            raise CalibrationError(
                f"calibration data {path}: expected a CSV annotations file, a COCO or Pascal VOC dataset folder, "
                "or a folder of images"
            )
        return "csv"
    if os.path.isdir(os.path.join(path, "annotations")) and glob.glob(os.path.join(path, "annotations", "instances_*.json")):
        return "coco"
    if os.path.isdir(os.path.join(path, "ImageSets", "Main")) and os.path.isdir(os.path.join(path, "JPEGImages")):
        return "pascal"
    return "folder"


class _AnyClass:
    """A class list that holds every name (calibration reads the images of a CSV, not its labels)."""

    def __contains__(self, name):
        return True


def _csv_image_paths(path):
    from .preprocessing.csv_format import _open_for_csv, _read_annotations

    try:
        with _open_for_csv(path) as file:
            images = _read_annotations(csv.reader(file, delimiter=","), _AnyClass())
    except (ValueError, csv.Error) as error:
        raise CalibrationError(f"invalid CSV annotations file: {path}: {error}") from None
    folder = os.path.dirname(os.path.abspath(path))
    return [os.path.join(folder, name) for name in images]


def _dataset_image_paths(kind, path, set_name):
    set_name = set_name or DEFAULT_SET_NAMES[kind]
    try:
        if kind == "coco":
            from .preprocessing.coco import CocoGenerator

            generator = CocoGenerator(path, set_name)
        else:
            from .preprocessing.pascal_voc import PascalVocGenerator

            generator = PascalVocGenerator(path, set_name)
    except (OSError, ValueError, KeyError) as error:
        raise CalibrationError(f"calibration data {path} ({kind}, set {set_name!r}): {error}") from None
    return [generator.image_path(index) for index in range(generator.size())]


def _folder_image_paths(path):
    names = sorted(
        name for name in os.listdir(path)
        if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, name))
    )  # fmt: skip
    return [os.path.join(path, name) for name in names]


def calibration_image_paths(path, set_name=None):
    """Every image path of a calibration source, in the dataset's order.

    Args:
        path: CSV file, COCO / Pascal VOC folder or folder of images (see the module docstring).
        set_name: the COCO / Pascal VOC set (default train2017 / trainval).

    Raises:
        CalibrationError: missing or malformed source, or one without images.
    """
    path = os.fspath(path)
    kind = calibration_source_kind(path)
    if set_name is not None and kind not in DEFAULT_SET_NAMES:
        raise CalibrationError(f"a set name ({set_name!r}) applies to COCO and Pascal VOC datasets, not to a {kind}")
    if kind == "csv":
        paths = _csv_image_paths(path)
    elif kind == "folder":
        paths = _folder_image_paths(path)
    else:
        paths = _dataset_image_paths(kind, path, set_name)
    if not paths:
        what = f"no images in folder {path} (looked for {', '.join(IMAGE_EXTENSIONS)})" if kind == "folder" else (
            f"calibration data {path} lists no images"
        )  # fmt: skip
        raise CalibrationError(what)
    return paths


def spread(items, count):
    """``count`` items spread evenly over ``items`` (all of them if there are no more), in order."""
    if count < 1:
        raise ValueError(f"the number of calibration images must be >= 1, got {count}")
    if len(items) <= count:
        return list(items)
    return [items[int(index)] for index in np.linspace(0, len(items) - 1, count).round()]


class CalibrationImages:
    """Calibration images, read from disk each time they are iterated.

    Args:
        paths: image files.
        source: where they were listed (for messages).

    Iterating (or indexing) gives (H, W, 3) uint8 BGR arrays (``utils.image.read_image_bgr``);
    an image that cannot be read raises ``CalibrationError`` naming it.
    """

    def __init__(self, paths, source=None):
        self.paths = list(paths)
        self.source = source

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        try:
            return read_image_bgr(self.paths[index])
        except OSError as error:  # FileNotFoundError included
            origin = f" (listed in {self.source})" if self.source else ""
            raise CalibrationError(f"calibration image{origin}: {error}") from None

    def __iter__(self):
        for index in range(len(self.paths)):
            yield self[index]

    def __repr__(self):
        return f"CalibrationImages({len(self)} images from {self.source})"


def calibration_images(path, count=DEFAULT_CALIBRATION_IMAGES, set_name=None):
    """``count`` images of a calibration source, spread over it (see the module docstring).

    Args:
        path: CSV file, COCO / Pascal VOC folder or folder of images.
        count: how many (all of them if the source has fewer).
        set_name: the COCO / Pascal VOC set (default train2017 / trainval).

    Returns:
        ``CalibrationImages`` (the files are checked to exist; they are read when iterated).

    Raises:
        CalibrationError: missing or malformed source, one without images, a listed image
            file that does not exist.
    """
    if count < 1:
        raise CalibrationError(f"the number of calibration images must be >= 1, got {count}")
    paths = spread(calibration_image_paths(path, set_name), count)
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CalibrationError(f"calibration image not found: {missing[0]}{more}, listed in {os.fspath(path)}")
    return CalibrationImages(paths, source=os.fspath(path))
