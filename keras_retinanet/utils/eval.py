"""VOC-style mean average precision (mAP) of a detector over a generator's images.

Two stages, usable separately:

1. ``_get_detections(generator, model, ...)`` and ``_get_annotations(generator)`` run the
   inference model and read the ground truth into fizyr's per-image, per-label lists::

       all_detections[image][label]  = (K, 5) float: x1, y1, x2, y2, score (score descending)
       all_annotations[image][label] = (K, 4) float: x1, y1, x2, y2

   Boxes are absolute pixel corners in the original (unresized) image.
2. ``compute_average_precisions(all_detections, all_annotations, iou_threshold)`` turns
   those into ``{label: (AP, num_annotations)}`` with no model involved; it is what
   ``evaluate``, the ``Evaluate`` callback, ``retinanet-evaluate`` and ``bench/evaluate.py``
   use. ``mean_average_precision`` and ``weighted_mean_average_precision`` average it.
"""
import os
import re
from collections import namedtuple

import cv2
import numpy as np

from keras_retinanet import constants
from keras_retinanet.utils.compute_overlap import compute_overlap
from keras_retinanet.utils.files import write_atomically
from keras_retinanet.utils.visualization import draw_annotations, draw_detections, plot_precision_recall

DEFAULT_IOU_THRESHOLD = constants.DEFAULT_IOU_THRESHOLD
DEFAULT_SCORE_THRESHOLD = constants.DEFAULT_SCORE_THRESHOLD
DEFAULT_MAX_DETECTIONS = constants.DEFAULT_EVAL_MAX_DETECTIONS
PRECISION_RECALL_FOLDER = "precision_recall"

PrecisionRecallCurve = namedtuple("PrecisionRecallCurve", ["recall", "precision", "scores", "num_annotations"])
PrecisionRecallCurve.__doc__ = """One class's detections ranked by score over the whole dataset.

recall, precision: (D,) float64 after each ranked detection; scores: (D,) descending;
num_annotations: int, ground-truth boxes of the class."""


# --------------------------------------------------------------------------------------
# Metric on precomputed detections
# --------------------------------------------------------------------------------------


def average_precision(recall, precision):
    """VOC all-point interpolated AP: the area under the precision envelope.

    The envelope at recall r is the highest precision reached at any recall >= r; the AP
    sums it over every recall step (no 11-point sampling).

    Args:
        recall: (D,) non-decreasing recall after each ranked detection.
        precision: (D,) precision after each ranked detection.

    Returns:
        float in [0, 1]; 0 when there are no detections.
    """
    recall = np.concatenate(([0.0], np.asarray(recall, dtype=np.float64), [1.0]))
    precision = np.concatenate(([0.0], np.asarray(precision, dtype=np.float64), [0.0]))
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))


_compute_ap = average_precision  # fizyr's name


def _default_labels(all_detections, all_annotations):
    lengths = [len(per_image) for per_image in all_detections] + [len(per_image) for per_image in all_annotations]
    return list(range(max(lengths, default=0)))


def _labels_to_evaluate(all_detections, all_annotations, labels):
    """Check that both lists cover the same images; ``labels`` as ints (default: every label index)."""
    if len(all_detections) != len(all_annotations):
        raise ValueError(
            f"detections are given for {len(all_detections)} images but annotations for {len(all_annotations)}"
        )
    if labels is None:
        labels = _default_labels(all_detections, all_annotations)
    return [int(label) for label in labels]


def _flatten(per_image_lists, labels, min_columns, what):
    """Concatenate per-image, per-label arrays, grouped by image.

    Returns:
        rows: (M, min_columns) float64; label_of: (M,) int64; image_of: (M,) int64.
    """
    chunks, chunk_labels, chunk_images = [], [], []
    for image_index, per_image in enumerate(per_image_lists):
        available = len(per_image)
        for label in labels:
            if label < available:
                rows = per_image[label]
                if rows is not None and len(rows):
                    chunks.append(rows)
                    chunk_labels.append(label)
                    chunk_images.append(image_index)
    if not chunks:
        empty = np.zeros((0,), dtype=np.int64)
        return np.zeros((0, min_columns)), empty, empty
    try:
        flat = np.concatenate(chunks).astype(np.float64, copy=False)
    except ValueError:
        flat = None
    if flat is None or flat.ndim != 2 or flat.shape[1] < min_columns:
        # locate the offending entry for the message
        for rows, label, image_index in zip(chunks, chunk_labels, chunk_images):
            shape = np.shape(rows)
            if len(shape) != 2 or shape[1] < min_columns or (flat is None and shape[1:] != np.shape(chunks[0])[1:]):
                raise ValueError(
                    f"{what}[{image_index}][{label}] must be (K, {min_columns}) "
                    f"(x1, y1, x2, y2{', score' if min_columns == 5 else ''}); got shape {shape}"
                )
        raise ValueError(f"{what}: every entry must be a (K, {min_columns}) array with the same number of columns")
    counts = [len(rows) for rows in chunks]
    return (
        flat[:, :min_columns],
        np.repeat(np.asarray(chunk_labels, dtype=np.int64), counts),
        np.repeat(np.asarray(chunk_images, dtype=np.int64), counts),
    )


def _assign_ground_truth(det_boxes, det_labels, det_images, gt_boxes, gt_labels, gt_images, num_images, iou_threshold):
    """Index of each detection's best same-class ground truth in its image, or -1.

    -1 when the image has no ground truth of the detection's class or the best IoU is
    below ``iou_threshold``. One compute_overlap call per image holding both.
    """
    assigned = np.full(len(det_boxes), -1, dtype=np.int64)
    det_bounds = np.searchsorted(det_images, np.arange(num_images + 1))
    gt_bounds = np.searchsorted(gt_images, np.arange(num_images + 1))
    has_both = np.flatnonzero((np.diff(det_bounds) > 0) & (np.diff(gt_bounds) > 0))
    for image_index in has_both:
        d0, d1 = det_bounds[image_index], det_bounds[image_index + 1]
        g0, g1 = gt_bounds[image_index], gt_bounds[image_index + 1]
        iou = compute_overlap(det_boxes[d0:d1], gt_boxes[g0:g1])
        iou[det_labels[d0:d1, None] != gt_labels[None, g0:g1]] = -1.0
        best = iou.argmax(axis=1)
        hit = iou[np.arange(d1 - d0), best] >= iou_threshold
        assigned[d0:d1][hit] = g0 + best[hit]
    return assigned


def precision_recall_curves(all_detections, all_annotations, iou_threshold=DEFAULT_IOU_THRESHOLD, labels=None):
    """Match detections to ground truth and rank them per class.

    Matching rule (Pascal VOC's and fizyr's): within an image, detections of a class are
    taken in descending score order; each looks only at the ground-truth box of its class
    with which it has the highest IoU. It is a true positive if that IoU is
    >= ``iou_threshold`` and that box has not been claimed by a higher-scoring detection;
    otherwise it is a false positive (even if it overlaps another, unclaimed box enough).
    Because a detection claims only its own best box, this equals: true positive = the
    highest-scoring of the detections whose best box is that box with IoU >= threshold,
    which is computed without any sequential loop. Equal scores keep the input order.

    Args:
        all_detections: all_detections[image][label] = (K, 5) x1, y1, x2, y2, score
            (None or missing = no detections).
        all_annotations: all_annotations[image][label] = (K, 4) x1, y1, x2, y2.
        iou_threshold: minimum IoU of a true positive.
        labels: labels to evaluate (default: every index of the per-image lists).

    Returns:
        {label: PrecisionRecallCurve}.
    """
    labels = _labels_to_evaluate(all_detections, all_annotations, labels)
    num_images = len(all_annotations)

    detections, det_labels, det_images = _flatten(all_detections, labels, 5, "all_detections")
    gt_boxes, gt_labels, gt_images = _flatten(all_annotations, labels, 4, "all_annotations")
    assigned = _assign_ground_truth(
        detections[:, :4], det_labels, det_images, gt_boxes, gt_labels, gt_images, num_images, iou_threshold
    )

    scores = detections[:, 4]
    order = np.lexsort((-scores, det_labels))  # by label, then score descending; stable
    sorted_assigned = assigned[order]
    candidates = np.flatnonzero(sorted_assigned >= 0)
    _, first_claim = np.unique(sorted_assigned[candidates], return_index=True)
    true_positive = np.zeros(len(order), dtype=bool)
    true_positive[candidates[first_claim]] = True

    sorted_labels = det_labels[order]
    sorted_scores = scores[order]
    num_annotations = {label: int(n) for label, n in zip(*np.unique(gt_labels, return_counts=True))}
    curves = {}
    for label in labels:
        start, stop = np.searchsorted(sorted_labels, [label, label + 1])
        true_positives = np.cumsum(true_positive[start:stop], dtype=np.float64)
        ranks = np.arange(1, stop - start + 1, dtype=np.float64)
        count = num_annotations.get(label, 0)
        recall = true_positives / count if count else np.zeros_like(true_positives)
        curves[label] = PrecisionRecallCurve(recall, true_positives / ranks, sorted_scores[start:stop], count)
    return curves


def compute_average_precisions(all_detections, all_annotations, iou_threshold=DEFAULT_IOU_THRESHOLD, labels=None):
    """AP per class from precomputed detections (see ``precision_recall_curves`` for the matching).

    Returns:
        {label: (AP, num_annotations)}; a class without ground truth gets (0.0, 0).
    """
    curves = precision_recall_curves(all_detections, all_annotations, iou_threshold, labels)
    return average_precisions_from_curves(curves)


def average_precisions_from_curves(curves):
    """{label: (AP, num_annotations)} from ``precision_recall_curves``' output."""
    return {
        label: ((average_precision(curve.recall, curve.precision) if curve.num_annotations else 0.0), curve.num_annotations)
        for label, curve in curves.items()
    }


def mean_average_precision(average_precisions):
    """Plain mean of the APs of the classes that have ground truth (nan if none has).

    Args:
        average_precisions: {label: (AP, num_annotations)}.
    """
    values = [ap for ap, count in average_precisions.values() if count > 0]
    return float(np.mean(values)) if values else float("nan")


def weighted_mean_average_precision(average_precisions):
    """Mean of the APs weighted by each class's number of ground-truth boxes (nan if none)."""
    total = sum(count for _, count in average_precisions.values())
    if total == 0:
        return float("nan")
    return float(sum(ap * count for ap, count in average_precisions.values()) / total)


# --------------------------------------------------------------------------------------
# Running the model over a generator
# --------------------------------------------------------------------------------------


def _get_detections(
    generator,
    model,
    score_threshold=DEFAULT_SCORE_THRESHOLD,
    max_detections=DEFAULT_MAX_DETECTIONS,
    save_path=None,
    batch_size=1,
    progress=True,
):
    """Run a detector over every image of a generator.

    The one path from images to detections (``inference.Detector.predict_iter``): for a
    bare inference model, each image is ``generator.preprocess_image``-d and
    ``generator.resize_image``-d, ``batch_size`` images are zero-padded to the largest and
    passed to ``model.predict_on_batch``, and boxes are scaled back by 1 / scale. A
    ``Detector`` (``inference.load_detector``) brings its own preprocessing and sizes.
    Boxes are matched as the model returns them: only boxes of an image padded in its
    batch are clipped, to that image.

    Args:
        generator: Generator-like (size, num_classes, load_image; preprocess_image and
            resize_image for a bare model; load_annotations and label_to_name when
            save_path is given).
        model: an ``inference.Detector``, or an inference model: predict_on_batch ->
            [boxes (B, D, 4), scores (B, D), labels (B, D)].
        score_threshold: keep detections with a higher score.
        max_detections: keep at most this many per image (the best; None: all).
        save_path: folder to write ``<index>.png`` with ground truth and detections drawn.
        batch_size: images per model call.
        progress: show a tqdm progress bar.

    Returns:
        all_detections[image][label] = (K, 5) x1, y1, x2, y2, score (score descending);
        inference_times: (num_images,) seconds in the model per image (a batch's time
        divided among its images).
    """
    from tqdm import tqdm

    from keras_retinanet.inference import as_detector

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    detector = as_detector(model, generator, batch_size)
    if save_path is not None:
        os.makedirs(save_path, exist_ok=True)
    num_images, num_classes = generator.size(), generator.num_classes()
    all_detections = [[None] * num_classes for _ in range(num_images)]
    inference_times = np.zeros(num_images)

    # With whole ops (utils.threads) one model call leaves a core idle: run several at once.
    calls = detector.model_calls
    timings = []

    def images(bar):
        for index in range(num_images):
            image = _load_or_skip(generator, index)
            if image is None:
                all_detections[index] = [np.zeros((0, 5)) for _ in range(num_classes)]
                bar.update(1)
                continue
            yield index, image

    # disable=None: no bar when the output is not a terminal (a log file)
    with tqdm(total=num_images, desc="Running network", unit="image", disable=None if progress else True) as bar:
        stream = detector.predict_iter(
            images(bar), workers=calls if calls > 1 else 0, timings=timings,
            score_threshold=score_threshold, max_detections=max_detections, clip_boxes=False,
        )  # fmt: skip
        for index, image, detections in stream:
            rows = np.concatenate(
                [detections.boxes.astype(np.float64), detections.scores[:, None].astype(np.float64)], axis=1
            )
            for label in range(num_classes):
                all_detections[index][label] = rows[detections.labels == label]
            if save_path is not None:
                canvas = np.ascontiguousarray(image, dtype=np.uint8)
                draw_annotations(canvas, generator.load_annotations(index), label_to_name=generator.label_to_name)
                draw_detections(
                    canvas, detections.boxes, detections.scores, detections.labels,
                    label_to_name=generator.label_to_name, score_threshold=score_threshold,
                )
                write_image(drawn_image_path(save_path, index), canvas)
            bar.update(1)
    for indices, seconds in timings:  # a call's time divided among its images
        inference_times[indices] = seconds / len(indices)
    return all_detections, inference_times


def _load_or_skip(generator, index):
    """``generator.load_image(index)``, or None for an unreadable image (recorded in ``skipped_images``).

    A skipped image takes no part in the evaluation: no detections, and ``_get_annotations``
    leaves its boxes out.
    """
    from keras_retinanet.errors import first_line

    skipped = getattr(generator, "skipped_images", None)
    try:
        return generator.load_image(index)
    except OSError as error:
        if skipped is None:
            raise
        try:
            path = generator.image_path(index)
        except NotImplementedError:
            path = f"image {index}"
        skipped.add(index, path, first_line(error))
        return None


def _get_annotations(generator):
    """Ground truth of every image: all_annotations[image][label] = (K, 4) x1, y1, x2, y2.

    Images that ``_get_detections`` could not read (``generator.skipped_images``) get none.
    """
    num_classes = generator.num_classes()
    skipped = getattr(generator, "skipped_images", None)
    skipped = skipped.indices if skipped is not None else set()
    all_annotations = []
    for index in range(generator.size()):
        if index in skipped:  # an image evaluation could not read: left out (see _load_or_skip)
            all_annotations.append([np.zeros((0, 4)) for _ in range(num_classes)])
            continue
        annotations = generator.load_annotations(index)
        try:
            bboxes = np.asarray(annotations["bboxes"], dtype=np.float64).reshape(-1, 4)
            labels = np.asarray(annotations["labels"]).reshape(-1).astype(np.int64)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"annotations of image {index} must be a dict with bboxes (K, 4) and labels (K,): {error}"
            ) from None
        if len(bboxes) != len(labels):
            raise ValueError(f"annotations of image {index}: {len(bboxes)} bboxes but {len(labels)} labels")
        all_annotations.append([bboxes[labels == label] for label in range(num_classes)])
    return all_annotations


# Public names for the two stages (fizyr kept them private; the tools use them).
get_detections = _get_detections
get_annotations = _get_annotations


def evaluated_labels(generator):
    """The labels a generator knows (``has_label``), in order."""
    return [label for label in range(generator.num_classes()) if generator.has_label(label)]


def _safe_file_name(name):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_") or "class"


def drawn_image_path(save_path, index):
    """Where ``save_path`` gets image ``index`` drawn with its ground truth and detections."""
    return os.path.join(save_path, f"{index}.png")


def precision_recall_plot_path(save_path, label, name):
    """Where ``save_path`` gets the precision-recall plot of class ``label`` named ``name``."""
    return os.path.join(save_path, PRECISION_RECALL_FOLDER, f"{label}_{_safe_file_name(name)}.png")


def write_image(path, image):
    """Write a BGR image atomically (``utils.files.write_atomically``); OutputError if it cannot be written."""

    def write(temporary):
        if not cv2.imwrite(temporary, image):
            raise OSError(f"OpenCV could not write {path}")

    write_atomically(path, write)


def save_precision_recall_plots(curves, average_precisions, save_path, label_to_name=None):
    """Write one precision-recall PNG per class into ``save_path/precision_recall/``.

    Returns:
        {label: path} of the files written.
    """
    paths = {}
    for label, curve in curves.items():
        name = label_to_name(label) if label_to_name else str(label)
        path = precision_recall_plot_path(save_path, label, name)
        title = f"{name} ({curve.num_annotations} instances)"
        plot_precision_recall(curve.recall, curve.precision, path, title, average_precisions[label][0])
        paths[label] = path
    return paths


def evaluate(
    generator,
    model,
    iou_threshold=DEFAULT_IOU_THRESHOLD,
    score_threshold=DEFAULT_SCORE_THRESHOLD,
    max_detections=DEFAULT_MAX_DETECTIONS,
    save_path=None,
    batch_size=1,
    progress=True,
):
    """Average precision per class of an inference model on a generator's images.

    Args:
        generator: Generator-like (see ``_get_detections``), also ``has_label`` and
            ``load_annotations``.
        model: ``inference.Detector`` or inference model returning [boxes, scores, labels]
            (see ``_get_detections``).
        iou_threshold: minimum IoU of a true positive.
        score_threshold: detections with a lower score are ignored.
        max_detections: best detections kept per image.
        save_path: if given, each image with ground truth (green, caption below) and
            detections (class colour, ``name: score`` above) drawn as ``<index>.png``, and a
            precision-recall plot per class in ``precision_recall/``.
        batch_size: images per model call.
        progress: show a progress bar.

    Returns:
        ({label: (AP, num_annotations)} for labels with ``has_label``, mean seconds of
        inference per image).
    """
    all_detections, inference_times = _get_detections(
        generator, model, score_threshold=score_threshold, max_detections=max_detections,
        save_path=save_path, batch_size=batch_size, progress=progress,
    )
    all_annotations = _get_annotations(generator)
    curves = precision_recall_curves(all_detections, all_annotations, iou_threshold, evaluated_labels(generator))
    average_precisions = average_precisions_from_curves(curves)
    if save_path is not None:
        save_precision_recall_plots(curves, average_precisions, save_path, generator.label_to_name)
    mean_time = float(np.mean(inference_times)) if len(inference_times) else 0.0
    return average_precisions, mean_time
