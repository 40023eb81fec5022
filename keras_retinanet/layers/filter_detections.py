"""Post-processing of RetinaNet outputs: score threshold, non-maximum suppression, top-k.

Everything runs batched in the graph (no per-image Python loop):

1. candidates: the ``pre_nms_top_k`` best (anchor, class) pairs of each image (or the best
   class of each anchor when ``class_specific_filter=False``); pairs scoring at or below
   ``score_threshold`` are dropped;
2. greedy NMS over the candidates that passed the threshold, per class or class-agnostic,
   exact (suppress IoU > ``nms_threshold``), computed by one of three ops that give the same
   boxes (``nms_op``: TensorFlow's greedy NMS on the IoU matrix, the default; a fixed-point
   iteration on that matrix, for ONNX; TensorFlow's NMS op, for TFLite);
3. the ``max_detections`` best survivors, padded with -1.

Fizyr's version kept every candidate above the threshold; the pre-NMS cap bounds the cost
at about 200k anchors x 80 classes and only changes results when more than
``pre_nms_top_k`` pairs pass the score threshold (torchvision caps at 1000 per level).
"""
import keras
import tensorflow as tf

from ..constants import (  # noqa: F401 (public names of this module)
    DEFAULT_MAX_DETECTIONS,
    DEFAULT_NMS_THRESHOLD,
    DEFAULT_PRE_NMS_TOP_K,
    DEFAULT_SCORE_THRESHOLD,
    PADDING_VALUE,
)


def _pairwise_iou(boxes):
    """IoU of every pair of boxes, as ``utils.compute_overlap`` (no +1 on widths).

    A box whose corners are swapped (x2 < x1 or y2 < y1: a prediction clipped to the image
    border can be) counts by its extent, as in ``tf.image.non_max_suppression`` (what
    fizyr's filtering used), so such a box is suppressed like any other.

    Args:
        boxes: (B, K, 4) float32, x1, y1, x2, y2.

    Returns:
        (B, K, K) float32.
    """
    a1, b1, a2, b2 = tf.unstack(boxes, axis=-1)
    x1, x2 = tf.minimum(a1, a2), tf.maximum(a1, a2)
    y1, y2 = tf.minimum(b1, b2), tf.maximum(b1, b2)
    inter_w = tf.minimum(x2[:, :, None], x2[:, None, :]) - tf.maximum(x1[:, :, None], x1[:, None, :])
    inter_h = tf.minimum(y2[:, :, None], y2[:, None, :]) - tf.maximum(y1[:, :, None], y1[:, None, :])
    intersection = tf.maximum(inter_w, 0.0) * tf.maximum(inter_h, 0.0)
    area = tf.maximum(x2 - x1, 0.0) * tf.maximum(y2 - y1, 0.0)
    union = area[:, :, None] + area[:, None, :] - intersection
    return tf.math.divide_no_nan(intersection, union)


def _greedy_nms_keep(boxes, valid, labels, iou_threshold, parallel_iterations):
    """Which candidates greedy NMS keeps.

    Candidate ``j`` is kept iff it is valid and no kept candidate ``i < j`` (higher score)
    of the same label overlaps it by IoU > ``iou_threshold``. The fixed point of that rule
    is found by iteration: after ``t`` rounds the first ``t`` candidates are final, so at
    most K rounds are needed and in practice a handful (the longest suppression chain).

    Args:
        boxes: (B, K, 4) float32, sorted by descending score.
        valid: (B, K) bool, candidates above the score threshold.
        labels: (B, K) int32, or None for class-agnostic NMS.

    Returns:
        (B, K) bool.
    """
    overlap = _pairwise_iou(boxes) > iou_threshold
    num = tf.shape(boxes)[1]
    earlier = tf.range(num)[:, None] < tf.range(num)[None, :]  # i before j
    suppresses = overlap & earlier[None] & valid[:, :, None]
    if labels is not None:
        suppresses &= tf.equal(labels[:, :, None], labels[:, None, :])
    suppresses = tf.cast(suppresses, tf.float32)

    def step(keep):
        suppressed = tf.linalg.matvec(suppresses, tf.cast(keep, tf.float32), transpose_a=True) > 0.0
        return valid & ~suppressed

    def cond(keep, previous, rounds):
        return tf.logical_and(rounds < num, tf.reduce_any(tf.not_equal(keep, previous)))

    def body(keep, previous, rounds):
        return step(keep), keep, rounds + 1

    keep, _, _ = tf.while_loop(
        cond,
        body,
        (step(valid), valid, tf.constant(1)),
        parallel_iterations=parallel_iterations,
    )
    return keep


def _overlaps_nms_keep(boxes, valid, labels, scores, iou_threshold):
    """What ``_greedy_nms_keep`` computes, by ``tf.image.non_max_suppression_overlaps``.

    The same IoU matrix (boxes of two labels never overlap), then TensorFlow's greedy
    suppression of one image at a time: on a CPU several times faster than the fixed-point
    iteration, and exact. Any batch size (``tf.map_fn`` when it is not static); TensorFlow
    graphs only (ONNX and TFLite have no such op).

    Args:
        boxes: (B, K, 4) float32, sorted by descending score; valid: (B, K) bool;
        labels: (B, K) int32 or None (class-agnostic); scores: (B, K) float32.

    Returns:
        (B, K) bool.
    """
    overlaps = _pairwise_iou(boxes)
    if labels is not None:
        overlaps = tf.where(tf.equal(labels[:, :, None], labels[:, None, :]), overlaps, 0.0)
    # invalid candidates take part in no suppression (as in _greedy_nms_keep)
    overlaps = tf.where(valid[:, :, None] & valid[:, None, :], overlaps, 0.0)
    num = tf.shape(boxes)[1]

    def image_keep(args):
        image_overlaps, image_scores, image_valid = args
        selected = tf.image.non_max_suppression_overlaps(
            image_overlaps, image_scores, max_output_size=num, overlap_threshold=iou_threshold,
            score_threshold=float("-inf"),
        )  # fmt: skip
        return (tf.scatter_nd(selected[:, None], tf.ones_like(selected), shape=num[None]) > 0) & image_valid

    if boxes.shape[0] is not None:
        return tf.stack([image_keep((overlaps[i], scores[i], valid[i])) for i in range(boxes.shape[0])])
    return tf.map_fn(image_keep, (overlaps, scores, valid), fn_output_signature=tf.bool)


NMS_OPS = ("overlaps", "matrix", "builtin")


def _builtin_nms_keep(boxes, valid, labels, scores, iou_threshold):
    """What ``_greedy_nms_keep`` computes, by ``tf.image.non_max_suppression`` image by image.

    One op per image that TFLite has as a builtin (the fixed-point loop of
    ``_greedy_nms_keep`` becomes a WHILE subgraph, which TFLite's int8 calibrator cannot
    run). Classes are kept apart by shifting each label's boxes by a multiple of the
    largest coordinate, so that boxes of two classes never overlap. Needs a static batch
    size (an exported TFLite graph has batch 1).

    Args:
        boxes: (B, K, 4) float32, sorted by descending score; valid: (B, K) bool;
        labels: (B, K) int32 or None (class-agnostic); scores: (B, K) float32.

    Returns:
        (B, K) bool.
    """
    if boxes.shape[0] is None:
        raise ValueError("builtin NMS needs a static batch size")
    keeps = []
    for index in range(boxes.shape[0]):
        image_boxes, image_valid = boxes[index], valid[index]
        if labels is not None:
            extent = tf.reduce_max(tf.abs(image_boxes)) + 1.0
            image_boxes = image_boxes + tf.cast(labels[index], tf.float32)[:, None] * extent
        # invalid candidates take part in no suppression (as in _greedy_nms_keep)
        image_scores = tf.where(image_valid, scores[index], tf.reduce_min(scores[index]) - 1.0)
        num = tf.shape(image_boxes)[0]
        selected = tf.image.non_max_suppression(
            image_boxes, image_scores, max_output_size=num, iou_threshold=iou_threshold,
            score_threshold=tf.reduce_min(scores[index]) - 0.5,
        )  # fmt: skip
        chosen = tf.scatter_nd(selected[:, None], tf.ones_like(selected), shape=num[None]) > 0
        keeps.append(chosen & image_valid)
    return tf.stack(keeps)


def _pad_to(x, size, axis=1):
    """Pad ``x`` with ``PADDING_VALUE`` along ``axis`` up to ``size`` (it is never longer)."""
    missing = size - tf.shape(x)[axis]
    paddings = [[0, 0]] * x.shape.rank
    paddings[axis] = [0, missing]
    return tf.pad(x, paddings, constant_values=tf.cast(PADDING_VALUE, x.dtype))


def _set_length(x, length):
    shape = x.shape.as_list()
    shape[1] = length
    x.set_shape(shape)
    return x


def filter_detections(
    boxes,
    classification,
    other=None,
    class_specific_filter=True,
    nms=True,
    score_threshold=DEFAULT_SCORE_THRESHOLD,
    max_detections=DEFAULT_MAX_DETECTIONS,
    nms_threshold=DEFAULT_NMS_THRESHOLD,
    pre_nms_top_k=DEFAULT_PRE_NMS_TOP_K,
    parallel_iterations=32,
    nms_op="overlaps",
):
    """Filter detections by score, NMS and top-k; batched, or one image as fizyr's version.

    Args:
        boxes: (B, N, 4) or (N, 4) float, absolute x1, y1, x2, y2.
        classification: (B, N, C) or (N, C) float scores.
        other: list of (B, N, ...) or (N, ...) tensors to filter alongside the boxes.
        class_specific_filter: NMS per class over (anchor, class) pairs, an anchor can give
            several detections; otherwise only the best class of each anchor, class-agnostic NMS.
        nms: apply non-maximum suppression.
        score_threshold: keep scores strictly above this.
        max_detections: number of detections returned per image.
        nms_threshold: IoU above which a lower-scoring box is suppressed.
        pre_nms_top_k: candidates per image entering NMS (the best-scoring ones).
        parallel_iterations: passed to the NMS ``tf.while_loop``.
        nms_op: how greedy NMS is computed (the same boxes either way): 'overlaps'
            (TensorFlow's greedy NMS of each image on the exact IoU matrix, the fastest on
            a CPU; TensorFlow graphs only), 'matrix' (the batched fixed-point iteration, a
            ``tf.while_loop``: what the ONNX exports use) or 'builtin'
            (``tf.image.non_max_suppression`` per image: needs a static batch size; what
            the TFLite exports use, whose int8 calibrator runs no loops).

    Returns:
        [boxes (B, D, 4) float32, scores (B, D) float32, labels (B, D) int32, *other
        (B, D, ...)], D = ``max_detections``, sorted by descending score, padded with -1
        (the batch axis is absent for unbatched inputs).
    """
    if nms_op not in NMS_OPS:
        raise ValueError(f"unknown NMS op {nms_op!r}; expected one of {NMS_OPS}")
    other = list(other or [])
    boxes = tf.convert_to_tensor(boxes)
    unbatched = boxes.shape.rank == 2
    if unbatched:
        boxes = boxes[None]
        classification = tf.convert_to_tensor(classification)[None]
        other = [tf.convert_to_tensor(o)[None] for o in other]
    boxes = tf.cast(boxes, tf.float32)
    scores = tf.cast(classification, tf.float32)
    num_anchors = tf.shape(scores)[1]
    num_classes = tf.shape(scores)[2]

    best_scores = tf.reduce_max(scores, axis=-1)  # (B, N)
    if class_specific_filter:
        # The best pre_nms_top_k (anchor, class) pairs all lie among the pre_nms_top_k
        # anchors of highest best score, so search those only (C times fewer values).
        num_top_anchors = tf.minimum(pre_nms_top_k, num_anchors)
        _, top_anchors = tf.math.top_k(best_scores, k=num_top_anchors, sorted=False)
        pair_scores = tf.reshape(tf.gather(scores, top_anchors, batch_dims=1), [tf.shape(scores)[0], -1])
        num_candidates = tf.minimum(pre_nms_top_k, tf.shape(pair_scores)[1])
        candidate_scores, pair_index = tf.math.top_k(pair_scores, k=num_candidates)
        candidate_anchors = tf.gather(top_anchors, pair_index // num_classes, batch_dims=1)
        candidate_labels = pair_index % num_classes
    else:
        num_candidates = tf.minimum(pre_nms_top_k, num_anchors)
        candidate_scores, candidate_anchors = tf.math.top_k(best_scores, k=num_candidates)
        best_labels = tf.argmax(scores, axis=-1, output_type=tf.int32)
        candidate_labels = tf.gather(best_labels, candidate_anchors, batch_dims=1)
    candidate_labels = tf.cast(candidate_labels, tf.int32)
    candidate_boxes = tf.gather(boxes, candidate_anchors, batch_dims=1)  # (B, K, 4)

    keep = candidate_scores > score_threshold
    if nms and nms_op in ("matrix", "overlaps"):
        # The NMS cost grows with the square of the candidates, and most of the
        # pre_nms_top_k score at or below the threshold once a model is trained: they
        # take part in no suppression and are never kept, so cut them off (the candidates
        # are sorted by score, so the kept ones come first; cut after the batch's last).
        positions = tf.range(1, tf.shape(keep)[1] + 1)[None]
        num_candidates = tf.maximum(tf.reduce_max(tf.where(keep, positions, 0)), 0)
        candidate_scores, candidate_anchors, candidate_labels, candidate_boxes, keep = (
            tensor[:, :num_candidates]
            for tensor in (candidate_scores, candidate_anchors, candidate_labels, candidate_boxes, keep)
        )  # fmt: skip
    nms_labels = candidate_labels if class_specific_filter else None  # None: suppression across labels
    if nms and nms_op == "builtin":
        keep = _builtin_nms_keep(candidate_boxes, keep, nms_labels, candidate_scores, nms_threshold)
    elif nms and nms_op == "overlaps":
        keep = _overlaps_nms_keep(candidate_boxes, keep, nms_labels, candidate_scores, nms_threshold)
    elif nms:
        keep = _greedy_nms_keep(candidate_boxes, keep, nms_labels, nms_threshold, parallel_iterations)

    # Candidates are sorted by score; top_k is stable, so this keeps that order.
    num_selected = tf.minimum(max_detections, num_candidates)
    ranked = tf.where(keep, candidate_scores, float("-inf"))
    _, selected = tf.math.top_k(ranked, k=num_selected)
    selected_valid = tf.gather(keep, selected, batch_dims=1)

    def pick(values, index=selected):
        picked = tf.gather(values, index, batch_dims=1)
        mask = tf.reshape(selected_valid, tf.concat([tf.shape(selected_valid), tf.ones([picked.shape.rank - 2], tf.int32)], 0))
        picked = tf.where(mask, picked, tf.cast(PADDING_VALUE, picked.dtype))
        return _set_length(_pad_to(picked, max_detections), max_detections)

    outputs = [pick(candidate_boxes), pick(candidate_scores), pick(candidate_labels)]
    selected_anchors = tf.gather(candidate_anchors, selected, batch_dims=1)
    outputs += [pick(o, selected_anchors) for o in other]
    if unbatched:
        outputs = [o[0] for o in outputs]
    return outputs


@keras.saving.register_keras_serializable(package="keras_retinanet")
class FilterDetections(keras.layers.Layer):
    """Keras layer around ``filter_detections`` (see there for the algorithm and arguments).

    Call: [boxes (B, N, 4), classification (B, N, C), *other (B, N, ...)] ->
    [boxes (B, D, 4) float32, scores (B, D) float32, labels (B, D) int32, *other (B, D, ...)],
    D = ``max_detections``, padded with -1.
    """

    def __init__(
        self,
        nms=True,
        class_specific_filter=True,
        nms_threshold=DEFAULT_NMS_THRESHOLD,
        score_threshold=DEFAULT_SCORE_THRESHOLD,
        max_detections=DEFAULT_MAX_DETECTIONS,
        parallel_iterations=32,
        pre_nms_top_k=DEFAULT_PRE_NMS_TOP_K,
        nms_op="overlaps",
        **kwargs,
    ):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if int(max_detections) < 1 or int(pre_nms_top_k) < 1:
            raise ValueError(
                f"FilterDetections: max_detections ({max_detections}) and pre_nms_top_k "
                f"({pre_nms_top_k}) must be positive"
            )
        self.nms = bool(nms)
        self.class_specific_filter = bool(class_specific_filter)
        self.nms_threshold = float(nms_threshold)
        self.score_threshold = float(score_threshold)
        self.max_detections = int(max_detections)
        self.parallel_iterations = int(parallel_iterations)
        self.pre_nms_top_k = int(pre_nms_top_k)
        if nms_op not in NMS_OPS:
            raise ValueError(f"FilterDetections: unknown nms_op {nms_op!r}; expected one of {NMS_OPS}")
        self.nms_op = nms_op

    def call(self, inputs, **kwargs):
        boxes, classification, *other = inputs
        return filter_detections(
            boxes,
            classification,
            other,
            class_specific_filter=self.class_specific_filter,
            nms=self.nms,
            score_threshold=self.score_threshold,
            max_detections=self.max_detections,
            nms_threshold=self.nms_threshold,
            pre_nms_top_k=self.pre_nms_top_k,
            parallel_iterations=self.parallel_iterations,
            nms_op=self.nms_op,
        )

    def compute_output_spec(self, inputs):
        boxes, classification, *other = inputs
        batch, detections = boxes.shape[0], self.max_detections
        specs = [
            keras.KerasTensor((batch, detections, 4), dtype="float32"),
            keras.KerasTensor((batch, detections), dtype="float32"),
            keras.KerasTensor((batch, detections), dtype="int32"),
        ]
        specs += [keras.KerasTensor((batch, detections) + tuple(o.shape[2:]), dtype=o.dtype) for o in other]
        return specs

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "nms": self.nms,
                "class_specific_filter": self.class_specific_filter,
                "nms_threshold": self.nms_threshold,
                "score_threshold": self.score_threshold,
                "max_detections": self.max_detections,
                "parallel_iterations": self.parallel_iterations,
                "pre_nms_top_k": self.pre_nms_top_k,
                "nms_op": self.nms_op,
            }
        )
        return config
