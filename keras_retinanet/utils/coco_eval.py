"""COCO metrics (pycocotools' COCOeval) for any dataset: CSV, Pascal VOC or COCO.

``coco_metrics(all_detections, all_annotations)`` builds the ground truth and the
detections as in-memory pycocotools ``COCO`` objects from fizyr's per-image, per-label
lists (see ``utils.eval``) and returns COCOeval's 12 figures by name. Ground-truth areas
are box areas and nothing is crowd, so on a COCO dataset these differ slightly from the
official figures, which use segmentation areas and crowd regions: for a ``CocoGenerator``
(``.coco``, ``.image_ids``, ``label_to_coco_label``) ``evaluate_coco`` scores against
the dataset's own annotations instead.
"""
import contextlib
import io
import json

import numpy as np

from keras_retinanet.utils.eval import (
    DEFAULT_MAX_DETECTIONS,
    DEFAULT_SCORE_THRESHOLD,
    _labels_to_evaluate,
    _get_annotations,
    _get_detections,
    evaluated_labels,
)

# COCOeval.stats, in order.
COCO_METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
COCO_METRIC_DESCRIPTIONS = (
    "AP @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]",
    "AP @[ IoU=0.50      | area=   all | maxDets=100 ]",
    "AP @[ IoU=0.75      | area=   all | maxDets=100 ]",
    "AP @[ IoU=0.50:0.95 | area= small | maxDets=100 ]",
    "AP @[ IoU=0.50:0.95 | area=medium | maxDets=100 ]",
    "AP @[ IoU=0.50:0.95 | area= large | maxDets=100 ]",
    "AR @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ]",
    "AR @[ IoU=0.50:0.95 | area=   all | maxDets= 10 ]",
    "AR @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]",
    "AR @[ IoU=0.50:0.95 | area= small | maxDets=100 ]",
    "AR @[ IoU=0.50:0.95 | area=medium | maxDets=100 ]",
    "AR @[ IoU=0.50:0.95 | area= large | maxDets=100 ]",
)


def _xywh(boxes):
    """(K, 4) x1, y1, x2, y2 -> (K, 4) float64 x, y, width, height (COCO's bbox)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:4] - boxes[:, :2]], axis=1)


def _coco_object(dataset):
    """A pycocotools COCO built from an in-memory dataset dict (its index messages silenced)."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _annotation_records(per_image_lists, labels, with_scores):
    """COCO annotation dicts (ids from 1: COCOeval treats id 0 as 'unmatched')."""
    records = []
    for image_id, per_image in enumerate(per_image_lists):
        for label in labels:
            rows = per_image[label] if label < len(per_image) else None
            if rows is None or len(rows) == 0:
                continue
            rows = np.asarray(rows, dtype=np.float64)
            for row, bbox in zip(rows, _xywh(rows[:, :4]).tolist()):
                record = {
                    "id": len(records) + 1,
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "iscrowd": 0,
                }
                if with_scores:
                    record["score"] = float(row[4])
                records.append(record)
    return records


def _run_cocoeval(coco_true, coco_pred, image_ids=None, verbose=False):
    """COCOeval's 12 stats (bbox) as {name: float}; its printout only if verbose."""
    from pycocotools.cocoeval import COCOeval

    output = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with output:
        coco_eval = COCOeval(coco_true, coco_pred, "bbox")
        if image_ids is not None:
            coco_eval.params.imgIds = list(image_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return {name: float(value) for name, value in zip(COCO_METRIC_NAMES, coco_eval.stats)}


def coco_metrics(all_detections, all_annotations, labels=None, verbose=False):
    """COCO AP / AR figures of precomputed detections against box ground truth.

    Args:
        all_detections: all_detections[image][label] = (K, 5) x1, y1, x2, y2, score.
        all_annotations: all_annotations[image][label] = (K, 4) x1, y1, x2, y2.
        labels: labels to evaluate (default: every index of the per-image lists); each is
            a COCO category, images are numbered from 0, areas are box areas, no crowd.
        verbose: print COCOeval's own summary.

    Returns:
        {name: float} for COCO_METRIC_NAMES (AP, AP50, ..., ARl); COCOeval reports -1 for
        a figure with no ground truth in its area range.
    """
    labels = _labels_to_evaluate(all_detections, all_annotations, labels)
    images = [{"id": image_id} for image_id in range(len(all_annotations))]
    categories = [{"id": label, "name": str(label)} for label in labels]
    coco_true = _coco_object({
        "images": images,
        "categories": categories,
        "annotations": _annotation_records(all_annotations, labels, with_scores=False),
    })
    coco_pred = _coco_object({
        "images": images,
        "categories": categories,
        "annotations": _annotation_records(all_detections, labels, with_scores=True),
    })
    return _run_cocoeval(coco_true, coco_pred, verbose=verbose)


def evaluate_coco_metrics(
    generator,
    model,
    score_threshold=DEFAULT_SCORE_THRESHOLD,
    max_detections=DEFAULT_MAX_DETECTIONS,
    batch_size=1,
    progress=True,
):
    """COCO figures of an inference model on any generator (box ground truth, no crowd).

    Returns:
        {name: float} for COCO_METRIC_NAMES.
    """
    all_detections, _ = _get_detections(
        generator, model, score_threshold=score_threshold, max_detections=max_detections,
        batch_size=batch_size, progress=progress,
    )
    return coco_metrics(all_detections, _get_annotations(generator), evaluated_labels(generator))


def coco_results(generator, all_detections):
    """Detections as COCO result dicts in a CocoGenerator's own image and category ids.

    Args:
        generator: with ``image_ids`` (list, one per index) and ``label_to_coco_label``.
        all_detections: all_detections[image][label] = (K, 5) x1, y1, x2, y2, score.

    Returns:
        list of {image_id, category_id, bbox [x, y, w, h], score}.
    """
    results = []
    for index, per_image in enumerate(all_detections):
        for label, rows in enumerate(per_image):
            if rows is None or len(rows) == 0:
                continue
            category_id = generator.label_to_coco_label(label)
            for row, bbox in zip(rows, _xywh(np.asarray(rows)[:, :4]).tolist()):
                results.append({
                    "image_id": generator.image_ids[index],
                    "category_id": category_id,
                    "bbox": bbox,
                    "score": float(row[4]),
                })
    return results


def coco_stats_from_results(generator, results, verbose=True):
    """COCOeval stats of COCO result dicts against ``generator.coco`` (official annotations).

    Returns:
        (12,) numpy array of COCOeval.stats, or None when there are no results.
    """
    if not results:
        return None
    output = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with output:
        coco_pred = generator.coco.loadRes(results)
    stats = _run_cocoeval(generator.coco, coco_pred, image_ids=generator.image_ids, verbose=verbose)
    return np.array([stats[name] for name in COCO_METRIC_NAMES])


def evaluate_coco(generator, model, threshold=DEFAULT_SCORE_THRESHOLD, batch_size=1, progress=True, results_path=None):
    """Evaluate a model on a CocoGenerator with pycocotools against its own annotations.

    Args:
        generator: CocoGenerator (``coco``, ``image_ids``, ``label_to_coco_label``).
        model: inference model returning [boxes, scores, labels].
        threshold: keep detections with a higher score.
        batch_size: images per predict_on_batch call.
        progress: show a progress bar (COCOeval's summary prints too).
        results_path: if given, also write the results as COCO json there.

    Returns:
        COCOeval.stats, a (12,) array (see COCO_METRIC_NAMES), or None if the model made
        no detection above the threshold.
    """
    all_detections, _ = _get_detections(
        generator, model, score_threshold=threshold, max_detections=None, batch_size=batch_size, progress=progress
    )
    results = coco_results(generator, all_detections)
    if results_path is not None:
        with open(results_path, "w") as f:
            json.dump(results, f)
    return coco_stats_from_results(generator, results, verbose=progress)
