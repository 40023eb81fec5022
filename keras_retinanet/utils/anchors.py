"""Anchor boxes (generation per pyramid level, placement over an image) and training targets.

All boxes are absolute ``x1, y1, x2, y2`` float32. Anchors of one image are ordered
level by level (P3 first), then by feature-map row, column, and last by anchor
(ratio-major, scale-minor) -- the order in which the model's submodels emit them.

Targets follow fizyr: an anchor whose best IoU with an annotation is >= 0.5 is positive,
in (0.4, 0.5) ignored, otherwise negative; anchors centred outside their image (in the
batch padding) are ignored. The state (-1 ignore, 0 negative, 1 positive) is the last
column of both target arrays.
"""
import collections
import threading

import numpy as np

from .compute_overlap import overlapping_pairs

DEFAULT_PYRAMID_LEVELS = (3, 4, 5, 6, 7)
DEFAULT_ANCHOR_SIZES = (32, 64, 128, 256, 512)
DEFAULT_ANCHOR_STRIDES = (8, 16, 32, 64, 128)
DEFAULT_ANCHOR_RATIOS = (0.5, 1.0, 2.0)
DEFAULT_ANCHOR_SCALES = (2.0**0.0, 2.0 ** (1.0 / 3.0), 2.0 ** (2.0 / 3.0))

# Regression targets are normalised with these (fizyr's convention).
DEFAULT_REGRESSION_MEAN = (0.0, 0.0, 0.0, 0.0)
DEFAULT_REGRESSION_STD = (0.2, 0.2, 0.2, 0.2)


class AnchorParameters:
    """Sizes and strides (one per pyramid level), ratios and scales (shared by all levels).

    Args:
        sizes: base anchor size per level, in pixels.
        strides: stride of each level's feature map, in pixels.
        ratios: height / width ratios.
        scales: multipliers of the base size.
    """

    def __init__(self, sizes, strides, ratios, scales):
        self.sizes = [float(s) for s in sizes]
        self.strides = [int(s) for s in strides]
        self.ratios = np.asarray(ratios, dtype=np.float32)
        self.scales = np.asarray(scales, dtype=np.float32)
        if len(self.sizes) != len(self.strides):
            raise ValueError(
                f"anchor parameters: {len(self.sizes)} sizes but {len(self.strides)} strides;"
                " give one size and one stride per pyramid level"
            )

    def num_anchors(self):
        """Number of anchors per feature-map location."""
        return len(self.ratios) * len(self.scales)

    def __repr__(self):
        return (
            f"AnchorParameters(sizes={self.sizes}, strides={self.strides}, "
            f"ratios={self.ratios.tolist()}, scales={self.scales.tolist()})"
        )


AnchorParameters.default = AnchorParameters(
    sizes=DEFAULT_ANCHOR_SIZES,
    strides=DEFAULT_ANCHOR_STRIDES,
    ratios=DEFAULT_ANCHOR_RATIOS,
    scales=DEFAULT_ANCHOR_SCALES,
)


def check_anchor_levels(anchor_params, pyramid_levels):
    """ValueError unless anchor entry i belongs to level ``pyramid_levels[i]``: stride 2 ** level.

    The model's level ``l`` is a feature map of stride ``2 ** l``; anchors of another stride
    placed on it cover another part of the image than the image (e.g. strides 8, 16, 32 on
    levels 5, 6, 7 cover its top-left quarter), and training learns nothing from them.

    Args:
        anchor_params: ``AnchorParameters`` (None: the defaults).
        pyramid_levels: the levels (None: 3..7).
    """
    anchor_params = AnchorParameters.default if anchor_params is None else anchor_params
    levels = list(DEFAULT_PYRAMID_LEVELS if pyramid_levels is None else pyramid_levels)
    if len(anchor_params.sizes) < len(levels):
        raise ValueError(
            f"anchor parameters give {len(anchor_params.sizes)} sizes for {len(levels)} pyramid levels {levels}"
        )
    expected = [2**level for level in levels]
    strides = list(anchor_params.strides[: len(levels)])
    if strides != expected:
        raise ValueError(
            f"pyramid levels {' '.join(map(str, levels))} have feature-map strides {' '.join(map(str, expected))} px, "
            f"but the anchor strides are {' '.join(map(str, strides))}: the anchors would not cover the image; "
            f"give strides {' '.join(map(str, expected))} in [anchor_parameters] (one size and stride per level)"
        )


def generate_anchors(base_size=16, ratios=None, scales=None):
    """Reference anchors centred on (0, 0).

    Args:
        base_size: side of the square anchor of ratio 1 and scale 1.
        ratios: height / width ratios (default ``AnchorParameters.default.ratios``).
        scales: size multipliers (default ``AnchorParameters.default.scales``).

    Returns:
        (len(ratios) * len(scales), 4) float32, ratio-major then scale.
    """
    if ratios is None:
        ratios = AnchorParameters.default.ratios
    if scales is None:
        scales = AnchorParameters.default.scales
    ratios = np.asarray(ratios, dtype=np.float64)
    scales = np.asarray(scales, dtype=np.float64)

    sides = base_size * np.tile(scales, len(ratios))  # square side per anchor
    per_anchor_ratio = np.repeat(ratios, len(scales))
    widths = np.sqrt(sides * sides / per_anchor_ratio)
    heights = widths * per_anchor_ratio
    anchors = np.stack([-0.5 * widths, -0.5 * heights, 0.5 * widths, 0.5 * heights], axis=1)
    return anchors.astype(np.float32)


def guess_shapes(image_shape, pyramid_levels):
    """Feature-map shapes (H, W) of each pyramid level for an image of ``image_shape``.

    Level ``p`` has stride ``2**p``; sizes are rounded up as strided convolutions do.
    """
    image_shape = np.array(image_shape[:2])
    return [(image_shape + 2**p - 1) // (2**p) for p in pyramid_levels]


def layer_shapes(image_shape, model):
    """Output shape of every layer of a functional ``model`` for an input of ``image_shape`` (fizyr's).

    Shapes are computed symbolically (no image is run). A layer used more than once (the
    shared regression / classification submodels) gets the shape of its last use, as in fizyr.

    Args:
        image_shape: (H, W, C) of the network input.
        model: a functional ``keras.Model`` with one input.

    Returns:
        {layer name: shape tuple, batch dimension None}.
    """
    import keras  # utils stays light: Keras only when this is called

    image_shape = tuple(int(s) for s in image_shape)
    names, tensors = [], []
    for layer in model.layers:
        nodes = [node for node in layer._inbound_nodes if node.outputs]
        if isinstance(layer, keras.layers.InputLayer) or not nodes:
            continue
        outputs = nodes[-1].outputs
        if len(outputs) == 1:
            names.append(layer.name)
            tensors.append(outputs[0])
    probe = keras.Model(model.inputs, tensors)
    specs = probe.compute_output_spec(keras.KerasTensor((None,) + image_shape, dtype="float32"))
    if not isinstance(specs, (list, tuple)):
        specs = [specs]
    shapes = {model.layers[0].name: (None,) + image_shape}
    shapes.update({name: tuple(spec.shape) for name, spec in zip(names, specs)})
    return shapes


def make_shapes_callback(model):
    """A ``shapes_callback`` for ``anchors_for_shape`` that reads the pyramid shapes off ``model`` (fizyr's).

    The returned ``f(image_shape, pyramid_levels)`` gives the (H, W) of the model's layers
    ``P<level>`` for an input of ``image_shape``: exact for any backbone, where
    ``guess_shapes`` assumes strided convolutions that round up.
    """

    computed = {}  # image shape -> layer shapes (building the probe costs more than the lookups)

    def get_shapes(image_shape, pyramid_levels):
        image_shape = tuple(int(s) for s in image_shape[:3])
        if len(image_shape) == 2:
            image_shape += (3,)
        if image_shape not in computed:
            computed[image_shape] = layer_shapes(image_shape, model)
        shapes = computed[image_shape]
        return [np.array(shapes[f"P{level}"][1:3]) for level in pyramid_levels]

    return get_shapes


def shift(shape, stride, anchors):
    """Place ``anchors`` at the centre of every cell of a feature map.

    Args:
        shape: (H, W) of the feature map.
        stride: its stride in pixels.
        anchors: (A, 4) reference anchors from ``generate_anchors``.

    Returns:
        (H * W * A, 4) float32 anchors, row-major over cells then anchor.
    """
    shift_x = (np.arange(0, shape[1], dtype=np.float32) + 0.5) * stride
    shift_y = (np.arange(0, shape[0], dtype=np.float32) + 0.5) * stride
    shift_x, shift_y = np.meshgrid(shift_x, shift_y)
    shifts = np.stack([shift_x.ravel(), shift_y.ravel(), shift_x.ravel(), shift_y.ravel()], axis=1)
    all_anchors = shifts[:, None, :] + np.asarray(anchors, dtype=np.float32)[None, :, :]
    return all_anchors.reshape(-1, 4).astype(np.float32)


# anchors_for_shape results kept for reuse: every batch of a shape needs the same anchors.
_ANCHOR_CACHE_SIZE = 16
_anchor_cache = collections.OrderedDict()
_anchor_cache_lock = threading.Lock()


def anchors_for_shape(image_shape, pyramid_levels=None, anchor_params=None, shapes_callback=None):
    """All anchors of an image, over every pyramid level.

    Args:
        image_shape: (H, W[, C]) of the network input.
        pyramid_levels: levels to use (default 3..7); ``anchor_params.sizes[i]`` and
            ``strides[i]`` belong to ``pyramid_levels[i]``.
        anchor_params: ``AnchorParameters`` (default ``AnchorParameters.default``).
        shapes_callback: ``f(image_shape, pyramid_levels) -> [(H, W), ...]``
            (default ``guess_shapes``).

    Returns:
        (N, 4) float32 anchors, absolute x1, y1, x2, y2. The array is read-only and
        shared by calls with the same arguments (the last few are cached), which also
        lets ``compute_overlap`` reuse its per-array preparation; copy it to modify it.
    """
    if pyramid_levels is None:
        pyramid_levels = list(DEFAULT_PYRAMID_LEVELS)
    if anchor_params is None:
        anchor_params = AnchorParameters.default
    if shapes_callback is None:
        shapes_callback = guess_shapes
    if len(anchor_params.sizes) < len(pyramid_levels):
        raise ValueError(
            f"anchor parameters give {len(anchor_params.sizes)} sizes for "
            f"{len(pyramid_levels)} pyramid levels {list(pyramid_levels)}"
        )
    key = (
        tuple(int(s) for s in image_shape),
        tuple(int(p) for p in pyramid_levels),
        tuple(anchor_params.sizes),
        tuple(anchor_params.strides),
        anchor_params.ratios.tobytes(),
        anchor_params.scales.tobytes(),
        shapes_callback,
    )
    with _anchor_cache_lock:
        anchors = _anchor_cache.get(key)
        if anchors is not None:
            _anchor_cache.move_to_end(key)
            return anchors

    image_shapes = shapes_callback(image_shape, pyramid_levels)
    all_anchors = [
        shift(
            image_shapes[i],
            anchor_params.strides[i],
            generate_anchors(anchor_params.sizes[i], anchor_params.ratios, anchor_params.scales),
        )
        for i in range(len(pyramid_levels))
    ]
    if all_anchors:
        anchors = np.concatenate(all_anchors, axis=0)
    else:
        anchors = np.zeros((0, 4), dtype=np.float32)
    anchors.flags.writeable = False
    with _anchor_cache_lock:
        _anchor_cache[key] = anchors
        while len(_anchor_cache) > _ANCHOR_CACHE_SIZE:
            _anchor_cache.popitem(last=False)
    return anchors


def bbox_transform(anchors, gt_boxes, mean=None, std=None):
    """Regression targets that move ``anchors`` onto ``gt_boxes`` (corner offsets / anchor size).

    Args:
        anchors: (N, 4) anchors, x1, y1, x2, y2.
        gt_boxes: (N, 4) matched ground-truth boxes, x1, y1, x2, y2.
        mean, std: normalisation (default 0 and 0.2 for every coordinate).

    Returns:
        (N, 4) float32 targets ``((gt - anchor) / (w, h, w, h) - mean) / std``.
    """
    mean = np.asarray(DEFAULT_REGRESSION_MEAN if mean is None else mean, dtype=np.float32)
    std = np.asarray(DEFAULT_REGRESSION_STD if std is None else std, dtype=np.float32)
    if mean.shape != (4,) or std.shape != (4,):
        raise ValueError(f"mean and std must be 1-D of 4 values, got {mean} and {std}")
    anchors = np.asarray(anchors, dtype=np.float32)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float32)
    widths = anchors[:, 2] - anchors[:, 0]
    heights = anchors[:, 3] - anchors[:, 1]
    scale = np.stack([widths, heights, widths, heights], axis=1)
    targets = (gt_boxes - anchors) / scale
    return ((targets - mean) / std).astype(np.float32)


# Data alignment TensorFlow needs to adopt a NumPy buffer without copying it.
TENSOR_ALIGNMENT = 64


def aligned_zeros(shape, dtype=np.float32):
    """``np.zeros`` whose data is TENSOR_ALIGNMENT-byte aligned.

    TensorFlow (``tf.numpy_function`` outputs, ``tf.constant``) takes such arrays over
    without a copy. Large zero arrays are mapped lazily by the OS: writing a few rows of
    one costs only those rows' pages, and untouched pages read as zeros for free.
    """
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in np.atleast_1d(shape))
    nbytes = int(np.prod(shape)) * dtype.itemsize
    buffer = np.zeros(nbytes + TENSOR_ALIGNMENT, dtype=np.uint8)
    offset = -buffer.ctypes.data % TENSOR_ALIGNMENT
    return buffer[offset : offset + nbytes].view(dtype).reshape(shape)


# IoU thresholds of the anchor assignment (fizyr's defaults).
DEFAULT_NEGATIVE_OVERLAP = 0.4
DEFAULT_POSITIVE_OVERLAP = 0.5

# Anchor states, stored in the last column of the regression and classification targets.
from ..constants import ANCHOR_IGNORE, ANCHOR_NEGATIVE, ANCHOR_POSITIVE  # noqa: E402,F401


def _check_overlaps(negative_overlap, positive_overlap):
    if not 0.0 <= negative_overlap <= positive_overlap <= 1.0:
        raise ValueError(
            "expected 0 <= negative_overlap <= positive_overlap <= 1, got "
            f"negative_overlap={negative_overlap}, positive_overlap={positive_overlap}"
        )


def _best_matches(anchors, annotations, negative_overlap, positive_overlap):
    """Best annotation of every anchor whose best IoU is > negative_overlap or >= positive_overlap.

    Returns:
        anchor_ids (M,), box_ids (M,) intp and ious (M,) float64, one entry per such
        anchor, sorted by anchor; ties go to the lowest box index.
    """
    _check_overlaps(negative_overlap, positive_overlap)
    # An IoU equal to positive_overlap must be seen even when both thresholds are equal.
    threshold = max(min(negative_overlap, np.nextafter(positive_overlap, -np.inf)), 0.0)
    anchor_ids, box_ids, ious = overlapping_pairs(anchors, annotations, threshold)
    # Sort by anchor, then IoU descending, then box index; keep the first of each anchor.
    order = np.lexsort((box_ids, -ious, anchor_ids))
    anchor_ids, box_ids, ious = anchor_ids[order], box_ids[order], ious[order]
    first = np.ones(len(anchor_ids), dtype=bool)
    first[1:] = anchor_ids[1:] != anchor_ids[:-1]
    return anchor_ids[first], box_ids[first], ious[first]


def compute_gt_annotations(
    anchors,
    annotations,
    negative_overlap=DEFAULT_NEGATIVE_OVERLAP,
    positive_overlap=DEFAULT_POSITIVE_OVERLAP,
):
    """Match every anchor to the annotation box it overlaps most.

    Args:
        anchors: (N, 4) float, absolute x1, y1, x2, y2.
        annotations: (K, 4) float annotation boxes, absolute x1, y1, x2, y2.
        negative_overlap: anchors whose best IoU is at most this are negatives.
        positive_overlap: anchors whose best IoU is at least this are positives; those
            in between are ignored.

    Returns:
        positive_indices: (N,) bool, best IoU >= positive_overlap.
        ignore_indices: (N,) bool, negative_overlap < best IoU < positive_overlap.
        argmax_overlaps_inds: (N,) intp index of the best annotation for every anchor
            whose best IoU is above negative_overlap (ties go to the lowest index), 0 for
            the others, whose match no loss looks at (fizyr computed it for them too).
    """
    num_anchors = len(anchors)
    anchor_ids, box_ids, ious = _best_matches(anchors, annotations, negative_overlap, positive_overlap)
    max_overlaps = np.zeros(num_anchors, dtype=np.float64)
    max_overlaps[anchor_ids] = ious
    argmax_overlaps_inds = np.zeros(num_anchors, dtype=np.intp)
    argmax_overlaps_inds[anchor_ids] = box_ids
    positive_indices = max_overlaps >= positive_overlap
    ignore_indices = (max_overlaps > negative_overlap) & ~positive_indices
    return positive_indices, ignore_indices, argmax_overlaps_inds


def anchors_outside_image(anchors, image_shape):
    """(N,) bool: anchors whose centre lies at or beyond the right or bottom image border.

    Args:
        anchors: (N, 4) float, absolute x1, y1, x2, y2.
        image_shape: (H, W[, C]) of the image without batch padding.
    """
    anchors = np.asarray(anchors)
    height, width = image_shape[:2]
    # centre >= side  <=>  x1 + x2 >= 2 * side
    return (anchors[:, 0] + anchors[:, 2] >= 2 * width) | (anchors[:, 1] + anchors[:, 3] >= 2 * height)


def anchor_assignment(
    anchors,
    image_shape,
    boxes,
    negative_overlap=DEFAULT_NEGATIVE_OVERLAP,
    positive_overlap=DEFAULT_POSITIVE_OVERLAP,
):
    """Which anchors of one image are positive (and their box) and which are ignored.

    Anchors whose best IoU with a box is >= positive_overlap are positive, those with
    best IoU in (negative_overlap, positive_overlap) are ignored, and so are all anchors
    whose centre falls outside the image (in the batch padding), whatever their IoU; all
    others are negative. The result is sparse: building dense targets from it costs only
    the rows that are not negative.

    Args:
        anchors: (N, 4) float32 anchors of the (padded) network input.
        image_shape: (H, W[, C]) of the image before batch padding, or None.
        boxes: (K, 4) float annotation boxes, absolute x1, y1, x2, y2.
        negative_overlap, positive_overlap: IoU thresholds.

    Returns:
        positive_indices: (P,) intp anchors with state 1, increasing.
        matched_boxes: (P,) intp index into ``boxes`` of each positive anchor's box.
        ignore_indices: (I,) intp anchors with state -1 (no overlap with positives).
    """
    anchors = np.asarray(anchors)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    empty = np.zeros(0, dtype=np.intp)
    positive, matched, ignored = empty, empty, empty
    if len(boxes):
        anchor_ids, box_ids, ious = _best_matches(anchors, boxes, negative_overlap, positive_overlap)
        is_positive = ious >= positive_overlap
        positive, matched = anchor_ids[is_positive], box_ids[is_positive]
        ignored = anchor_ids[~is_positive & (ious > negative_overlap)]
    if image_shape is not None:
        outside = anchors_outside_image(anchors, image_shape)
        if len(positive):
            inside = ~outside[positive]
            positive, matched = positive[inside], matched[inside]
        if len(ignored):
            ignored = ignored[~outside[ignored]]
        ignored = np.concatenate([ignored, np.flatnonzero(outside)])
    return positive, matched, ignored


def anchor_targets_bbox(
    anchors,
    image_group,
    annotations_group,
    num_classes,
    negative_overlap=DEFAULT_NEGATIVE_OVERLAP,
    positive_overlap=DEFAULT_POSITIVE_OVERLAP,
):
    """Regression and classification targets of a batch (fizyr's layout).

    Args:
        anchors: (N, 4) float32 anchors of the padded batch input
            (``anchors_for_shape(batch_image_shape, ...)``).
        image_group: B images (or their shapes (H, W[, C])) before batch padding; anchors
            whose centre falls outside its image are ignored.
        annotations_group: B dicts with ``bboxes`` (K, 4) absolute x1, y1, x2, y2 and
            ``labels`` (K,) in [0, num_classes).
        num_classes: number of classes C.
        negative_overlap: best IoU at most this -> negative (state 0).
        positive_overlap: best IoU at least this -> positive (state 1); in between ->
            ignored (state -1).

    Returns:
        regression_batch: (B, N, 4 + 1) float32: ``bbox_transform`` targets of positive
            anchors (zero elsewhere: the regression loss only reads positives), then the
            anchor state.
        labels_batch: (B, N, C + 1) float32: one-hot class of positive anchors (zero
            elsewhere), then the anchor state.
    """
    if len(image_group) != len(annotations_group):
        raise ValueError(
            f"got {len(image_group)} images but {len(annotations_group)} annotation sets"
        )
    anchors = np.asarray(anchors)
    batch_size, num_anchors = len(image_group), len(anchors)
    # Untouched zero pages cost nothing: only the rows written below do, and the result
    # (aligned) goes into TensorFlow without a copy.
    regression_batch = aligned_zeros((batch_size, num_anchors, 4 + 1), np.float32)
    labels_batch = aligned_zeros((batch_size, num_anchors, num_classes + 1), np.float32)

    for index, (image, annotations) in enumerate(zip(image_group, annotations_group)):
        image_shape = image.shape if hasattr(image, "shape") else image
        boxes, labels = check_annotations(annotations, num_classes, f"image {index} of the batch")
        positive, matched, ignored = anchor_assignment(
            anchors, image_shape, boxes, negative_overlap, positive_overlap
        )
        regression_batch[index, ignored, -1] = ANCHOR_IGNORE
        labels_batch[index, ignored, -1] = ANCHOR_IGNORE
        regression_batch[index, positive, -1] = ANCHOR_POSITIVE
        labels_batch[index, positive, -1] = ANCHOR_POSITIVE
        regression_batch[index, positive, :4] = bbox_transform(anchors[positive], boxes[matched])
        labels_batch[index, positive, labels[matched]] = 1.0
    return regression_batch, labels_batch


def check_annotations(annotations, num_classes, where="annotations"):
    """``(bboxes (K, 4) float64, labels (K,) int64)`` of an annotations dict, checked.

    Raises:
        ValueError: naming ``where``, when boxes and labels differ in number or a label
            is outside [0, num_classes).
    """
    boxes = np.asarray(annotations["bboxes"], dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(annotations["labels"]).reshape(-1)
    if len(labels) != len(boxes):
        raise ValueError(f"{where}: {len(boxes)} boxes but {len(labels)} labels")
    if len(labels) and not np.all(np.equal(np.mod(labels, 1), 0)):
        raise ValueError(f"{where}: labels must be integers, got {labels.tolist()}")
    labels = labels.astype(np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{where}: labels {sorted(set(labels.tolist()))} outside [0, {num_classes})"
        )
    return boxes, labels
