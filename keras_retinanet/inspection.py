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
from collections import Counter
from typing import NamedTuple

import numpy as np

from .utils.anchors import DEFAULT_POSITIVE_OVERLAP, AnchorParameters, anchor_assignment
from .utils.visualization import draw_annotations, draw_boxes

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


def _image_path(generator, index):
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
        path=_image_path(generator, index),
        image=np.ascontiguousarray(image, dtype=np.uint8),
        boxes=boxes,
        labels=labels,
        scale=float(scale),
        positive_anchors=anchors[positive],
        has_anchor=has_anchor,
        dropped=dropped,
    )


def draw_inspection(inspection, anchors=True, annotations=True, label_to_name=None):
    """A copy of the inspected image with positive anchors and annotations drawn.

    Anchors are thin cyan boxes; annotations with a positive anchor are green, those
    without one red (captioned with their class).

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
    return canvas


def _format_size(value):
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


class DatasetSummary:
    """Counts over inspected images: boxes per class, box sizes, boxes without an anchor.

    Args:
        label_to_name: label -> class name.
        anchor_params: ``AnchorParameters`` of the dataset (for the anchor size range).
    """

    def __init__(self, label_to_name=str, anchor_params=None):
        self.label_to_name = label_to_name
        self.anchor_params = anchor_params or AnchorParameters.default
        self.images = 0
        self.dropped = 0
        self.boxes_per_label = Counter()
        self.unmatched_per_label = Counter()
        self.sizes = []  # (K, 2) width, height arrays
        self.unmatched = []  # (path, box in the network input, label)

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
        per_class = ", ".join(f"{name(label)} {count}" for label, count in sorted(self.boxes_per_label.items()))
        lines.append(f"boxes: {self.num_boxes}" + (f" ({per_class})" if per_class else ""))
        if self.dropped:
            lines.append(f"invalid boxes dropped (empty, or outside the image): {self.dropped}")
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
