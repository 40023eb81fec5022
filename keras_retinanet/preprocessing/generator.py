"""Base class of the dataset generators: images + annotations -> training batches.

A subclass (CSV, COCO, Pascal VOC, or your own) says where images and boxes come from
(``size``, ``load_image``, ``load_annotations``, the class names); this class turns a
group of image indices into a training batch:

    per image (``load_training_image``): load image and annotations -> drop invalid boxes
    -> visual effect -> affine transform -> resize -> preprocess
    per batch: pad to the batch's largest image (rounded up to a multiple of the largest
    anchor stride) -> anchor targets on the padded shape

``load_training_image`` is the one per-image training step: ``Generator[i]``, the tf.data
pipeline (``preprocessing.pipeline``) and ``retinanet-debug`` (``inspection``) all call it.
It goes through the per-image hooks a subclass may override (fizyr's names):
``load_image``, ``load_annotations``, ``filter_annotations``,
``random_visual_effect_group_entry``, ``random_transform_group_entry``,
``preprocess_group_entry`` (which calls ``resize_image`` and ``preprocess_image``). The
group methods (``random_transform_group``, ``preprocess_group``, ...) remain for scripts
that call them; they loop over the per-image hooks.

``Generator[i]`` returns ``(inputs, [regression, labels])`` for group ``i`` with
``inputs`` (B, H, W, 3) float32, ``regression`` (B, N, 4 + 1) and ``labels`` (B, N, C + 1)
float32 (last column: anchor state -1 ignore / 0 negative / 1 positive). For training,
``preprocessing.pipeline.build_dataset`` runs the same steps in parallel in tf.data.
"""
import random
import threading
import warnings
from typing import NamedTuple

import keras
import numpy as np

from ..constants import DEFAULT_IMAGE_MAX_SIDE, DEFAULT_IMAGE_MIN_SIDE

from ..utils.anchors import (
    aligned_zeros,
    anchor_targets_bbox,
    anchors_for_shape,
    check_anchor_levels,
    guess_shapes,
)
from ..utils.config import anchor_settings, read_config_file
from ..utils.image import (
    TransformParameters,
    adjust_transform_for_image,
    apply_transform,
    preprocess_image,
    resize_image,
)
from ..utils.transform import transform_aabb

GROUP_METHODS = ("none", "random", "ratio")
# Batches are padded to a multiple of this, the backbones' largest stride (C5): their feature
# maps then divide exactly, and P6 / P7 (stride-2 'same' convolutions) round up, as
# guess_shapes does. (A multiple of P7's 128 would make a 400-px image 512 px: 1.6x the work.)
PADDING_MULTIPLE = 32
# ``load_training_image``'s default for its augmentation: draw from the generator's own generators.
DRAW = "draw"


# Errors of an image file that training skips (the image is replaced by another one) instead of stopping.
UNREADABLE_IMAGE_ERRORS = (OSError,)
MAX_SUBSTITUTES = 10  # images tried in place of an unreadable one


class SkippedImages:
    """The images a run could not read, and why: filled by the loaders, read by the reports.

    Thread-safe (the tf.data pipeline loads images in parallel).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._reasons = {}  # image index -> (path, reason), in order of discovery
        self._reported = 0

    def add(self, index, path, reason):
        with self._lock:
            self._reasons.setdefault(int(index), (str(path), str(reason)))

    @property
    def indices(self):
        with self._lock:
            return set(self._reasons)

    def items(self):
        """[(index, path, reason)] in order of discovery."""
        with self._lock:
            return [(index, path, reason) for index, (path, reason) in self._reasons.items()]

    def new(self):
        """The items added since the last call (for a per-epoch report)."""
        with self._lock:
            items = list(self._reasons.items())[self._reported :]
            self._reported = len(self._reasons)
        return [(index, path, reason) for index, (path, reason) in items]

    def __len__(self):
        with self._lock:
            return len(self._reasons)


def describe_skipped(items, limit=3):
    """'2 unreadable images skipped: a.png (reason), b.png (reason)' of ``SkippedImages`` items."""
    listed = ", ".join(f"{path} ({reason})" for _, path, reason in items[:limit])
    more = f", and {len(items) - limit} more" if len(items) > limit else ""
    return f"{len(items)} unreadable image{'s' if len(items) != 1 else ''} skipped: {listed}{more}"


class TrainingImage(NamedTuple):
    """One image as a training step sees it.

    image: (H, W, 3) float32 after resizing and preprocessing (uint8, not preprocessed,
    with ``preprocess=False``); annotations: dict with ``bboxes`` (K, 4) float64 x1, y1,
    x2, y2 in that image and ``labels`` (K,); scale: the resize factor; dropped: how many
    annotation boxes were dropped as invalid (empty, or outside the image).
    """

    image: np.ndarray
    annotations: dict
    scale: float  # with preprocess=True, as the ratio of the image widths
    dropped: int


class Generator(keras.utils.PyDataset):
    """Abstract generator of training batches (see the module docstring).

    Args:
        transform_generator: iterator of (3, 3) transforms (``random_transform_generator``), or None.
        visual_effect_generator: iterator of ``VisualEffect`` (``random_visual_effect_generator``), or None.
        batch_size: images per batch.
        group_method: 'none' (dataset order), 'random', or 'ratio' (sorted by aspect
            ratio, so batches pad little).
        shuffle_groups: shuffle the order of the groups at every epoch.
        image_min_side, image_max_side: resize bounds (``utils.image.resize_image``).
        no_resize: keep images at their size.
        transform_parameters: ``TransformParameters`` (fill mode, interpolation, ...).
        compute_anchor_targets: ``f(anchors, image_group, annotations_group, num_classes)``
            -> (regression, labels) (default ``anchor_targets_bbox``).
        compute_shapes: ``f(image_shape, pyramid_levels)`` -> feature-map shapes
            (default ``guess_shapes``).
        preprocess_image: ``f(image)`` -> float image (default caffe mode).
        config: ``configparser.ConfigParser`` from ``read_config_file`` (or its path), for
            ``[anchor_parameters]`` and ``[pyramid_levels]``.
        seed: seed of the group order ('random' grouping, shuffling); None: not repeatable.
        anchor_params, pyramid_levels: the anchors and levels to build targets for (e.g.
            from a model's detector spec); they take the place of the config's.
        **kwargs: ``keras.utils.PyDataset`` arguments (workers, use_multiprocessing, max_queue_size).
    """

    def __init__(
        self,
        transform_generator=None,
        visual_effect_generator=None,
        batch_size=1,
        group_method="ratio",
        shuffle_groups=True,
        image_min_side=DEFAULT_IMAGE_MIN_SIDE,
        image_max_side=DEFAULT_IMAGE_MAX_SIDE,
        no_resize=False,
        transform_parameters=None,
        compute_anchor_targets=anchor_targets_bbox,
        compute_shapes=guess_shapes,
        preprocess_image=preprocess_image,
        config=None,
        seed=None,
        anchor_params=None,
        pyramid_levels=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if group_method not in GROUP_METHODS:
            raise ValueError(f"unknown group_method {group_method!r}; expected one of {GROUP_METHODS}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 < image_min_side <= image_max_side:
            raise ValueError(
                f"expected 0 < image_min_side <= image_max_side, got {image_min_side} and {image_max_side}"
            )
        self.transform_generator = transform_generator
        self.visual_effect_generator = visual_effect_generator
        self.batch_size = int(batch_size)
        self.group_method = group_method
        self.shuffle_groups = shuffle_groups
        self.image_min_side = image_min_side
        self.image_max_side = image_max_side
        self.no_resize = no_resize
        self.transform_parameters = transform_parameters or TransformParameters()
        self.compute_anchor_targets = compute_anchor_targets
        self.compute_shapes = compute_shapes
        self.preprocess_image = preprocess_image
        if isinstance(config, (str, bytes)) or hasattr(config, "__fspath__"):
            config = read_config_file(config)
        self.config = config
        config_anchors, config_levels = anchor_settings(config)
        self.anchor_params = config_anchors if anchor_params is None else anchor_params
        self.pyramid_levels = config_levels if pyramid_levels is None else list(pyramid_levels)
        if self.anchor_params is not None or self.pyramid_levels is not None:
            check_anchor_levels(self.anchor_params, self.pyramid_levels)
        self.padding_multiple = PADDING_MULTIPLE
        self._rng = random.Random(seed)
        #: the images this generator could not read during training or evaluation (skipped, reported)
        self.skipped_images = SkippedImages()

        self.group_images()
        if self.shuffle_groups:
            self.on_epoch_end()

    # -- what a subclass provides --------------------------------------------------------

    def size(self):
        """Number of images in the dataset."""
        raise NotImplementedError("size method not implemented")

    # Class mapping: subclasses set ``self.classes`` ({name: label}) and ``self.labels``
    # ({label: name}) before calling ``__init__``, or override these methods (fizyr's way).

    def _class_maps(self):
        if getattr(self, "classes", None) is None or getattr(self, "labels", None) is None:
            raise NotImplementedError(
                f"{type(self).__name__} must set self.classes and self.labels or override the class-mapping methods"
            )
        return self.classes, self.labels

    def num_classes(self):
        """Number of classes (labels are 0 .. num_classes - 1)."""
        return len(self._class_maps()[0])

    def has_label(self, label):
        """Whether ``label`` is a class of the dataset."""
        return label in self._class_maps()[1]

    def has_name(self, name):
        """Whether ``name`` is a class name of the dataset."""
        return name in self._class_maps()[0]

    def name_to_label(self, name):
        return self._class_maps()[0][name]

    def label_to_name(self, label):
        return self._class_maps()[1][label]

    def image_aspect_ratio(self, image_index):
        """Width / height of an image (used by group_method='ratio')."""
        raise NotImplementedError("image_aspect_ratio method not implemented")

    def image_path(self, image_index):
        """Path of an image file."""
        raise NotImplementedError("image_path method not implemented")

    def image_size(self, image_index):
        """(height, width) of an image, from its file's header (no decoding)."""
        from ..utils.image import read_image_size

        return read_image_size(self.image_path(image_index))

    def load_image(self, image_index):
        """(H, W, 3) uint8 BGR image."""
        raise NotImplementedError("load_image method not implemented")

    def load_annotations(self, image_index):
        """dict with ``bboxes`` (K, 4) float64 absolute x1, y1, x2, y2 and ``labels`` (K,)."""
        raise NotImplementedError("load_annotations method not implemented")

    # -- batch assembly ------------------------------------------------------------------

    def on_epoch_end(self):
        if self.shuffle_groups:
            self._rng.shuffle(self.groups)

    def _describe_image(self, image_index):
        try:
            return f"image {self.image_path(image_index)} (index {image_index})"
        except NotImplementedError:
            return f"image {image_index}"

    def load_annotations_group(self, group):
        """Annotations of a group of images; checks their structure."""
        annotations_group = [self.load_annotations(image_index) for image_index in group]
        for image_index, annotations in zip(group, annotations_group):
            if not isinstance(annotations, dict) or not {"bboxes", "labels"} <= annotations.keys():
                raise ValueError(
                    f"load_annotations of {self._describe_image(image_index)} must return a dict "
                    f"with 'bboxes' and 'labels', got {type(annotations).__name__}"
                )
            if len(annotations["bboxes"]) != len(annotations["labels"]):
                raise ValueError(
                    f"{self._describe_image(image_index)}: {len(annotations['bboxes'])} boxes but "
                    f"{len(annotations['labels'])} labels"
                )
        return annotations_group

    def filter_annotations(self, image_group, annotations_group, group):
        """Drop boxes that are empty or leave the image, with a warning naming the image."""
        for index, (image, annotations) in enumerate(zip(image_group, annotations_group)):
            boxes = np.asarray(annotations["bboxes"], dtype=np.float64).reshape(-1, 4)
            height, width = image.shape[:2]
            invalid = (
                (boxes[:, 2] <= boxes[:, 0])
                | (boxes[:, 3] <= boxes[:, 1])
                | (boxes[:, 0] < 0)
                | (boxes[:, 1] < 0)
                | (boxes[:, 2] > width)
                | (boxes[:, 3] > height)
            )
            if invalid.any():
                warnings.warn(
                    f"{self._describe_image(group[index])} of shape {image.shape} has invalid boxes "
                    f"{boxes[invalid].tolist()} (empty, or outside the image): they are dropped",
                    stacklevel=2,
                )
                annotations_group[index] = {
                    key: np.asarray(value)[~invalid] for key, value in annotations.items()
                }
        return image_group, annotations_group

    def load_image_group(self, group):
        return [self.load_image(image_index) for image_index in group]

    def random_visual_effect_group_entry(self, image, annotations):
        visual_effect = next(self.visual_effect_generator)
        return visual_effect(image), annotations

    def random_visual_effect_group(self, image_group, annotations_group):
        if self.visual_effect_generator is None:
            return image_group, annotations_group
        for index in range(len(image_group)):
            image_group[index], annotations_group[index] = self.random_visual_effect_group_entry(
                image_group[index], annotations_group[index]
            )
        return image_group, annotations_group

    def random_transform_group_entry(self, image, annotations, transform=None):
        """Apply ``transform`` (3x3, already adjusted to the image) or the next random one."""
        if transform is None and self.transform_generator is None:
            return image, annotations
        if transform is None:
            transform = adjust_transform_for_image(
                next(self.transform_generator), image, self.transform_parameters.relative_translation
            )
        image = apply_transform(transform, image, self.transform_parameters)
        annotations = dict(annotations)
        boxes = np.asarray(annotations["bboxes"], dtype=np.float64).reshape(-1, 4)
        annotations["bboxes"] = transform_aabb(transform, boxes)
        return image, annotations

    def random_transform_group(self, image_group, annotations_group):
        for index in range(len(image_group)):
            image_group[index], annotations_group[index] = self.random_transform_group_entry(
                image_group[index], annotations_group[index]
            )
        return image_group, annotations_group

    def resize_image(self, image):
        """(resized image, scale) by image_min_side / image_max_side, or (image, 1) with no_resize."""
        if self.no_resize:
            return image, 1.0
        return resize_image(image, min_side=self.image_min_side, max_side=self.image_max_side)

    def preprocess_group_entry(self, image, annotations):
        """Resize and preprocess one image; boxes follow the resize."""
        image, image_scale = self.resize_image(image)
        image = np.asarray(self.preprocess_image(image), dtype=np.float32)
        annotations = dict(annotations)
        annotations["bboxes"] = np.asarray(annotations["bboxes"], dtype=np.float64) * image_scale
        return image, annotations

    def preprocess_group(self, image_group, annotations_group):
        for index in range(len(image_group)):
            image_group[index], annotations_group[index] = self.preprocess_group_entry(
                image_group[index], annotations_group[index]
            )
        return image_group, annotations_group

    def group_images(self):
        """Split the image indices into groups of batch_size (the last one wraps around)."""
        order = list(range(self.size()))
        if not order:
            raise ValueError(f"{type(self).__name__} has no images")
        if self.group_method == "random":
            self._rng.shuffle(order)
        elif self.group_method == "ratio":
            order.sort(key=self.image_aspect_ratio)
        self.groups = [
            [order[x % len(order)] for x in range(i, i + self.batch_size)]
            for i in range(0, len(order), self.batch_size)
        ]

    def padded_shape(self, image_shapes):
        """(H, W, C) of the batch input: the largest image, rounded up to padding_multiple."""
        shape = np.max(np.array([s[:3] for s in image_shapes]), axis=0)
        multiple = self.padding_multiple
        shape[:2] = (shape[:2] + multiple - 1) // multiple * multiple
        return tuple(int(s) for s in shape)

    def compute_inputs(self, image_group):
        """(B, H, W, C) float32 batch, images top-left aligned, zero padding (see padded_shape)."""
        max_shape = self.padded_shape([image.shape for image in image_group])
        image_batch = aligned_zeros((len(image_group),) + max_shape, np.float32)
        for index, image in enumerate(image_group):
            image_batch[index, : image.shape[0], : image.shape[1], : image.shape[2]] = image
        return image_batch

    def generate_anchors(self, image_shape):
        """Anchors (N, 4) of an input of ``image_shape`` (read-only, cached per shape)."""
        return anchors_for_shape(
            tuple(int(s) for s in image_shape[:2]),
            anchor_params=self.anchor_params,
            pyramid_levels=self.pyramid_levels,
            shapes_callback=self.compute_shapes,
        )

    def compute_targets(self, image_group, annotations_group):
        """[regression (B, N, 5), labels (B, N, C + 1)] on the anchors of the padded batch."""
        max_shape = self.padded_shape([image.shape for image in image_group])
        anchors = self.generate_anchors(max_shape)
        batches = self.compute_anchor_targets(anchors, image_group, annotations_group, self.num_classes())
        return list(batches)

    def load_training_image(self, image_index, visual_effect=DRAW, transform=DRAW, preprocess=True):
        """One image through the training steps: the per-image step of every training path.

        Load the image and its annotations, drop invalid boxes (with a warning), apply the
        visual effect and the affine transform, resize, preprocess.

        Args:
            image_index: index of the image.
            visual_effect: a ``VisualEffect``; None for none; ``DRAW`` (default) for the
                next of ``visual_effect_generator`` (none if it is None).
            transform: a (3, 3) transform as ``transform_generator`` yields it (adjusted to
                the image here); None for none; ``DRAW`` for the next of
                ``transform_generator`` (none if it is None).
            preprocess: False keeps the resized image as uint8 BGR (for drawing).

        Returns:
            ``TrainingImage``.
        """
        group = [image_index]
        image_group = self.load_image_group(group)
        annotations_group = self.load_annotations_group(group)
        count = len(annotations_group[0]["bboxes"])
        image_group, annotations_group = self.filter_annotations(image_group, annotations_group, group)
        image, annotations = image_group[0], annotations_group[0]
        dropped = count - len(annotations["bboxes"])

        draw_effect = isinstance(visual_effect, str) and visual_effect == DRAW
        if draw_effect and self.visual_effect_generator is not None:
            image, annotations = self.random_visual_effect_group_entry(image, annotations)
        elif not draw_effect and visual_effect is not None:
            image = visual_effect(image)
        if isinstance(transform, str) and transform == DRAW:
            image, annotations = self.random_transform_group_entry(image, annotations)  # draws, if it augments
        elif transform is not None:
            transform = adjust_transform_for_image(transform, image, self.transform_parameters.relative_translation)
            image, annotations = self.random_transform_group_entry(image, annotations, transform)

        if preprocess:
            width = image.shape[1]
            image, annotations = self.preprocess_group_entry(image, annotations)
            image = np.asarray(image, dtype=np.float32)
            scale = image.shape[1] / width
        else:
            image, scale = self.resize_image(image)
            annotations = dict(annotations)
            annotations["bboxes"] = np.asarray(annotations["bboxes"], dtype=np.float64).reshape(-1, 4) * scale
        return TrainingImage(image, annotations, float(scale), dropped)

    def load_training_image_or_substitute(self, image_index, **kwargs):
        """``load_training_image``; an image that cannot be read is recorded in ``skipped_images``
        and replaced by the next readable one, so that a bad file does not stop a long run.

        Raises:
            OSError: ``MAX_SUBSTITUTES`` images in a row could not be read.
        """
        from ..errors import first_line

        for attempt in range(MAX_SUBSTITUTES + 1):
            index = (int(image_index) + attempt) % self.size()
            if attempt and index in self.skipped_images.indices:
                continue
            try:
                return self.load_training_image(index, **kwargs)
            except UNREADABLE_IMAGE_ERRORS as error:
                self.skipped_images.add(index, self._describe_path(index), first_line(error))
        raise OSError(
            f"{MAX_SUBSTITUTES + 1} images in a row could not be read, the last {self._describe_path(index)}: "
            "check the dataset (retinanet-debug --check-images)"
        )

    def _describe_path(self, image_index):
        try:
            return str(self.image_path(image_index))
        except NotImplementedError:
            return f"image {image_index}"

    def missing_images(self):
        """[(index, path)] of the images whose file does not exist (a cheap check before training)."""
        import os

        missing = []
        for index in range(self.size()):
            try:
                path = self.image_path(index)
            except NotImplementedError:
                return []
            if not os.path.isfile(path):
                missing.append((index, path))
        return missing

    def check_images(self, workers=2, progress=None):
        """Decode every image (``load_image``): [(index, path, reason)] of those that fail.

        Args:
            workers: threads (OpenCV decodes outside the GIL).
            progress: f(number done) called as images finish, or None.
        """
        from concurrent.futures import ThreadPoolExecutor

        from ..errors import first_line

        def check(index):
            try:
                self.load_image(index)
            except (OSError, ValueError) as error:
                return index, self._describe_path(index), first_line(error)
            return None

        failures = []
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for done, result in enumerate(pool.map(check, range(self.size())), start=1):
                if result is not None:
                    failures.append(result)
                if progress is not None:
                    progress(done)
        return failures

    def compute_input_output(self, group):
        """(inputs, targets) of a group of image indices (``load_training_image`` for each; see
        ``load_training_image_or_substitute`` for unreadable images)."""
        entries = [self.load_training_image_or_substitute(image_index) for image_index in group]
        image_group = [entry.image for entry in entries]
        annotations_group = [entry.annotations for entry in entries]
        inputs = self.compute_inputs(image_group)
        targets = self.compute_targets(image_group, annotations_group)
        return inputs, targets

    def __len__(self):
        """Number of batches (groups) in an epoch."""
        return len(self.groups)

    def __getitem__(self, index):
        if not 0 <= index < len(self.groups):
            raise IndexError(f"batch index {index} out of range for {len(self.groups)} batches")
        return self.compute_input_output(self.groups[index])
