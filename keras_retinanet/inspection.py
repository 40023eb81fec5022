"""What ``retinanet-debug`` shows: a dataset's images as training sees them, with their anchors.

For each image, ``inspect_image`` runs the training generator's per-image step
(``Generator.load_training_image``: drop invalid boxes, visual effect and transform when
the generator augments, resize) and the anchor
assignment of training (``utils.anchors.anchor_assignment`` on the anchors of the padded
input). A ground-truth box that gets no positive anchor (IoU >= 0.5 with none) adds
nothing to the loss: the model cannot learn it. Too many of those, e.g. objects smaller
than the smallest anchor, is the usual cause of a mAP that stays at 0.

``draw_inspection`` draws positive anchors and annotations (green: has a positive
anchor, red: has none); ``DatasetSummary`` gathers counts, box sizes and the boxes
without anchors over a dataset.
"""
import os
from collections import Counter
from typing import NamedTuple

import numpy as np

from .utils.anchors import DEFAULT_POSITIVE_OVERLAP, AnchorParameters, anchor_assignment
from .utils.visualization import draw_annotations, draw_boxes, draw_caption

ANCHOR_COLOR = (255, 255, 0)  # BGR cyan
MATCHED_COLOR = (0, 255, 0)
UNMATCHED_COLOR = (0, 0, 255)
ANCHOR_THICKNESS = 1
MAX_LISTED_UNMATCHED = 20


class ImageInspection(NamedTuple):
    """One image as the network sees it in training.

    image: (H, W, 3) uint8 BGR after augmentation and resizing (not preprocessed);
    boxes: (K, 4) float64 x1, y1, x2, y2 in that image; labels: (K,) int64;
    scale: resize factor from the (augmented) original image;
    positive_anchors: (P, 4) float32 anchors with a positive assignment;
    has_anchor: (K,) bool, the box got at least one positive anchor;
    dropped: number of annotation boxes dropped as invalid (empty or outside the image).
    """

    index: int
    path: str
    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    scale: float
    positive_anchors: np.ndarray
    has_anchor: np.ndarray
    dropped: int


def image_path_of(generator, index):
    """A generator's path of image ``index``, or 'image <index>' for a generator without paths."""
    try:
        return str(generator.image_path(index))
    except NotImplementedError:
        return f"image {index}"


def inspect_image(generator, index):
    """Load image ``index`` of a ``Generator`` and match its boxes to anchors as training does.

    Augmentation comes from the generator's ``transform_generator`` and
    ``visual_effect_generator`` (None: none); resizing from its min/max side settings;
    anchors from its config (anchor parameters, pyramid levels).

    Returns:
        ``ImageInspection``.
    """
    entry = generator.load_training_image(index, preprocess=False)
    image, scale, dropped = entry.image, entry.scale, entry.dropped
    boxes = np.asarray(entry.annotations["bboxes"], dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(entry.annotations["labels"]).reshape(-1).astype(np.int64)

    anchors = generator.generate_anchors(generator.padded_shape([image.shape]))
    positive, matched, _ = anchor_assignment(anchors, image.shape, boxes)
    has_anchor = np.zeros(len(boxes), dtype=bool)
    has_anchor[matched] = True
    return ImageInspection(
        index=index,
        path=image_path_of(generator, index),
        image=np.ascontiguousarray(image, dtype=np.uint8),
        boxes=boxes,
        labels=labels,
        scale=float(scale),
        positive_anchors=anchors[positive],
        has_anchor=has_anchor,
        dropped=dropped,
    )


def draw_inspection(inspection, anchors=True, annotations=True, label_to_name=None, display_name=False):
    """A copy of the inspected image with positive anchors and annotations drawn.

    Anchors are thin cyan boxes; annotations with a positive anchor are green, those
    without one red (captioned with their class); ``display_name`` writes the image's file
    name in the bottom left corner.

    Returns:
        (H, W, 3) uint8 BGR.
    """
    canvas = inspection.image.copy()
    if anchors:
        draw_boxes(canvas, inspection.positive_anchors, ANCHOR_COLOR, thickness=ANCHOR_THICKNESS)
    if annotations:
        for mask, color in ((inspection.has_anchor, MATCHED_COLOR), (~inspection.has_anchor, UNMATCHED_COLOR)):
            selected = {"bboxes": inspection.boxes[mask], "labels": inspection.labels[mask]}
            draw_annotations(canvas, selected, color=color, label_to_name=label_to_name)
    if display_name:
        height, width = canvas.shape[:2]
        draw_caption(canvas, (0, height, width, height), os.path.basename(inspection.path))
    return canvas


def _format_size(value):
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


class DatasetSummary:
    """Counts over inspected images: boxes per class, box sizes, boxes without an anchor.

    Args:
        label_to_name: label -> class name.
        anchor_params: ``AnchorParameters`` of the dataset (for the anchor size range).
        duplicates: annotation lines that repeated an earlier one (kept once), e.g.
            ``CSVGenerator.duplicate_lines``.
    """

    def __init__(self, label_to_name=str, anchor_params=None, duplicates=()):
        self.label_to_name = label_to_name
        self.anchor_params = anchor_params or AnchorParameters.default
        self.duplicates = list(duplicates)
        self.images = 0
        self.dropped = 0
        self.boxes_per_label = Counter()
        self.unmatched_per_label = Counter()
        self.sizes = []  # (K, 2) width, height arrays
        self.unmatched = []  # (path, box in the network input, label)
        self.unreadable = []  # (path, reason) of images that could not be decoded

    def add(self, inspection):
        self.images += 1
        self.dropped += inspection.dropped
        self.boxes_per_label.update(inspection.labels.tolist())
        self.unmatched_per_label.update(inspection.labels[~inspection.has_anchor].tolist())
        self.sizes.append(inspection.boxes[:, 2:] - inspection.boxes[:, :2])
        self.unmatched += [
            (inspection.path, box, int(label))
            for box, label in zip(inspection.boxes[~inspection.has_anchor], inspection.labels[~inspection.has_anchor])
        ]

    def skip(self, path, reason):
        """Count an image that could not be read."""
        self.unreadable.append((path, reason))

    @property
    def num_boxes(self):
        return sum(self.boxes_per_label.values())

    def anchor_side_range(self):
        """(smallest, largest) anchor side of ratio 1, in pixels."""
        params = self.anchor_params
        return min(params.sizes) * float(np.min(params.scales)), max(params.sizes) * float(np.max(params.scales))

    def lines(self):
        """The summary as lines of text."""
        name = self.label_to_name
        lines = [f"images: {self.images}"]
        if self.unreadable:
            lines.append(f"unreadable images skipped: {len(self.unreadable)}")
            lines += [f"  {path}: {reason}" for path, reason in self.unreadable[:MAX_LISTED_UNMATCHED]]
        per_class = ", ".join(f"{name(label)} {count}" for label, count in sorted(self.boxes_per_label.items()))
        lines.append(f"boxes: {self.num_boxes}" + (f" ({per_class})" if per_class else ""))
        if self.dropped:
            lines.append(f"invalid boxes dropped (empty, or outside the image): {self.dropped}")
        if self.duplicates:
            first = ", ".join(f"line {line} repeats line {original}" for line, original in self.duplicates[:3])
            lines.append(f"duplicate annotation lines (each box kept once): {len(self.duplicates)} ({first}"
                         f"{', ...' if len(self.duplicates) > 3 else ''})")
        sizes = np.concatenate(self.sizes) if self.sizes else np.zeros((0, 2))
        if len(sizes):
            lines.append(
                f"box width {_format_size(sizes[:, 0].min())} .. {_format_size(sizes[:, 0].max())} px, "
                f"height {_format_size(sizes[:, 1].min())} .. {_format_size(sizes[:, 1].max())} px "
                "(network input, after resizing)"
            )
        smallest, largest = self.anchor_side_range()
        lines.append(f"anchor sides (ratio 1): {_format_size(smallest)} .. {_format_size(largest)} px")
        count = len(self.unmatched)
        if count == 0:
            lines.append("boxes with no matching anchor: 0")
            return lines
        per_class = ", ".join(f"{name(label)} {n}" for label, n in sorted(self.unmatched_per_label.items()))
        lines.append(
            f"boxes with no matching anchor: {count} of {self.num_boxes} ({per_class}); no anchor overlaps them "
            f"with IoU >= {DEFAULT_POSITIVE_OVERLAP:g}, so training ignores them (too small, too elongated, "
            "or anchors that do not fit: see --config)"
        )
        for path, box, label in self.unmatched[:MAX_LISTED_UNMATCHED]:
            width, height = box[2] - box[0], box[3] - box[1]
            corners = ", ".join(_format_size(v) for v in box)
            lines.append(
                f"  {path}: {name(label)} [{corners}] ({_format_size(width)} x {_format_size(height)} px)"
            )
        if count > MAX_LISTED_UNMATCHED:
            lines.append(f"  ... and {count - MAX_LISTED_UNMATCHED} more")
        return lines


# Training refuses a dataset whose boxes none get a positive anchor, and warns above this share.
UNMATCHED_WARNING_FRACTION = 0.5
COVERAGE_SAMPLE = 200  # images checked before training (all of them for a smaller set)


class AnchorCoverage(NamedTuple):
    """How many of a dataset's boxes training can learn: those with a positive anchor.

    images: images checked; boxes: their valid boxes; unmatched: boxes that no anchor
    overlaps with IoU >= 0.5; box_sides: (min, max) of the boxes' shorter sides after
    resizing, px (None without boxes); anchor_sides: (min, max) anchor side of ratio 1, px.
    """

    images: int
    boxes: int
    unmatched: int
    box_sides: tuple
    anchor_sides: tuple

    def describe(self):
        sides = "" if self.box_sides is None else (
            f"; the boxes' shorter sides are {_format_size(self.box_sides[0])} .. {_format_size(self.box_sides[1])} px "
            "after resizing"
        )
        return (
            f"{self.unmatched} of {self.boxes} boxes in {self.images} training images get no positive anchor "
            f"(IoU >= {DEFAULT_POSITIVE_OVERLAP:g} with none){sides}, the anchors' sides "
            f"{_format_size(self.anchor_sides[0])} .. {_format_size(self.anchor_sides[1])} px"
        )


def _coverage_sample(generator, max_images, seed):
    """(images checked, [(padded input shape, resized image shape, boxes (K, 4) in the input)])."""
    from .utils.image import compute_resize_scale

    indices = np.arange(generator.size())
    if len(indices) > max_images:
        indices = np.sort(np.random.default_rng(seed).choice(indices, max_images, replace=False))
    checked, sample = 0, []
    for index in indices:
        try:
            height, width = generator.image_size(int(index))
            annotations = generator.load_annotations(int(index))
        except (OSError, ValueError, NotImplementedError):
            continue  # unreadable images are the business of the image checks
        checked += 1
        boxes = np.asarray(annotations["bboxes"], dtype=np.float64).reshape(-1, 4)
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & (boxes[:, :2] >= 0).all(axis=1)
        valid &= (boxes[:, 2] <= width) & (boxes[:, 3] <= height)
        boxes = boxes[valid]
        if not len(boxes):
            continue
        scale = 1.0 if generator.no_resize else compute_resize_scale(
            (height, width), generator.image_min_side, generator.image_max_side
        )
        shape = (int(round(height * scale)), int(round(width * scale)), 3)
        sample.append((generator.padded_shape([shape]), shape, boxes * scale))
    return checked, sample


def _count_unmatched(generator, sample, anchor_params):
    """(boxes, boxes without a positive anchor) of a coverage sample under ``anchor_params``."""
    from .utils.anchors import anchors_for_shape

    total = unmatched = 0
    for padded, shape, boxes in sample:
        anchors = anchors_for_shape(
            padded[:2], anchor_params=anchor_params, pyramid_levels=generator.pyramid_levels,
            shapes_callback=generator.compute_shapes,
        )
        _, matched, _ = anchor_assignment(anchors, shape, boxes)
        total += len(boxes)
        unmatched += len(boxes) - len(np.unique(matched))
    return total, unmatched


def _anchor_sides(params):
    return (min(params.sizes) * float(np.min(params.scales)), max(params.sizes) * float(np.max(params.scales)))


def anchor_coverage(generator, max_images=COVERAGE_SAMPLE, seed=0, anchor_params=None):
    """Match a sample of a generator's boxes to its anchors as training does, without decoding images.

    Image sizes come from the files' headers (``Generator.image_size``); boxes are resized
    with the image (no augmentation) and matched on the anchors of the padded input, with
    ``utils.anchors.anchor_assignment``, as ``inspect_image`` (retinanet-debug) does.

    Args:
        generator: a ``Generator``.
        max_images: images checked at most (a seeded random sample of a larger set).
        seed: seed of the sample.
        anchor_params: anchors to match against (default: the generator's).

    Returns:
        ``AnchorCoverage``.
    """
    checked, sample = _coverage_sample(generator, max_images, seed)
    params = anchor_params or generator.anchor_params or AnchorParameters.default
    return _coverage(generator, checked, sample, params)


def _coverage(generator, checked, sample, params, unmatched=None):
    """``AnchorCoverage`` of a coverage sample (``unmatched``: the count if known already)."""
    counted = _count_unmatched(generator, sample, params)[1] if unmatched is None else unmatched
    total = sum(len(b) for _, _, b in sample)
    sides = np.concatenate([np.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) for _, _, b in sample]) if sample else None
    return AnchorCoverage(
        checked, total, counted, None if sides is None else (float(sides.min()), float(sides.max())), _anchor_sides(params)
    )


FIT_FACTORS = tuple(float(f) for f in np.round(np.geomspace(0.25, 2.0, 13), 3))
FIT_SAMPLE = 64


class AnchorFit(NamedTuple):
    """Anchor sizes fitted to a dataset: the parameters and the coverage before and after."""

    anchor_params: AnchorParameters
    factor: float
    before: AnchorCoverage
    after: AnchorCoverage


def fit_anchors(generator, max_images=FIT_SAMPLE, seed=0, factors=FIT_FACTORS):
    """Scale the generator's anchor sizes to leave the fewest boxes without a positive anchor.

    Every level's size is multiplied by the same factor (so the sizes keep their ratio to
    the strides, and the levels still split the scales between them); ratios, scales and
    strides stay. The factor is the one of ``factors`` with the fewest unmatched boxes on
    a sample of the images (training's matching, see ``anchor_coverage``); on a tie, the
    one closest to 1 (the paper's sizes).

    Returns:
        ``AnchorFit``.
    """
    base = generator.anchor_params or AnchorParameters.default
    checked, sample = _coverage_sample(generator, max_images, seed)
    if not sample:
        coverage = anchor_coverage(generator, max_images, seed)
        return AnchorFit(base, 1.0, coverage, coverage)

    def scaled(factor):
        return AnchorParameters([size * factor for size in base.sizes], base.strides, base.ratios, base.scales)

    unmatched = {factor: _count_unmatched(generator, sample, scaled(factor))[1] for factor in sorted(set(factors) | {1.0})}
    factor = min(unmatched, key=lambda f: (unmatched[f], abs(np.log(f))))
    params = scaled(factor)
    return AnchorFit(
        params,
        factor,
        _coverage(generator, checked, sample, base, unmatched[1.0]),
        _coverage(generator, checked, sample, params, unmatched[factor]),
    )
