"""Pairwise IoU of axis-aligned boxes, vectorised NumPy (replaces fizyr's Cython extension)."""
import numpy as np


def compute_overlap(boxes, query_boxes):
    """IoU between every box and every query box.

    Boxes are absolute ``x1, y1, x2, y2`` corners on a continuous plane: boxes that
    only touch have IoU 0, identical boxes IoU 1, degenerate boxes IoU 0.

    Args:
        boxes: (N, 4) float array.
        query_boxes: (K, 4) float array.

    Returns:
        (N, K) float64 array of IoU values.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    query_boxes = np.asarray(query_boxes, dtype=np.float64).reshape(-1, 4)

    iw = np.minimum(boxes[:, None, 2], query_boxes[None, :, 2]) - np.maximum(
        boxes[:, None, 0], query_boxes[None, :, 0]
    )
    ih = np.minimum(boxes[:, None, 3], query_boxes[None, :, 3]) - np.maximum(
        boxes[:, None, 1], query_boxes[None, :, 1]
    )
    intersection = np.clip(iw, 0, None) * np.clip(ih, 0, None)

    area = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    query_area = (query_boxes[:, 2] - query_boxes[:, 0]).clip(0) * (
        query_boxes[:, 3] - query_boxes[:, 1]
    ).clip(0)
    union = area[:, None] + query_area[None, :] - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, intersection / union, 0.0)
    return iou
