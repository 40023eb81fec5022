"""Pairwise IoU of axis-aligned boxes, vectorised NumPy (replaces fizyr's Cython extension).

Boxes are absolute ``x1, y1, x2, y2`` corners on a continuous plane (no ``+ 1``): boxes
that only touch have IoU 0, identical boxes IoU 1, degenerate boxes IoU 0.

Most pairs of an image's ~200k anchors and its boxes do not overlap at all, so the work
is pruned before any IoU is computed: the boxes are cut into blocks of ``BLOCK_SIZE``
consecutive rows, and a (block, query box) pair is kept only when the block's extent and
areas allow an IoU above the threshold. Anchors from ``anchors_for_shape`` are laid out
row by row, so consecutive anchors are spatial neighbours and most blocks drop out;
for any other order the result is the same, only less work is saved.
"""
import numpy as np

# Rows of `boxes` tested together against a query box before any IoU is computed.
BLOCK_SIZE = 64
# Pruning is loosened by this relative margin so that rounding never drops a pair.
_PRUNE_SLACK = 1e-6


def _as_boxes(boxes, name):
    boxes = np.asarray(boxes)
    if boxes.size % 4:
        raise ValueError(f"{name} must have shape (N, 4), got {boxes.shape}")
    boxes = boxes.reshape(-1, 4)
    if not np.issubdtype(boxes.dtype, np.floating):
        boxes = boxes.astype(np.float64)
    return boxes


def _blocks(boxes):
    """Boxes as coordinate planes cut into blocks of BLOCK_SIZE rows, with each block's bounds.

    Args:
        boxes: (N, 4) float, N > 0.

    Returns:
        planes: (4, num_blocks, BLOCK_SIZE) x1, y1, x2, y2 planes; the last block is padded
            by repeating the last box, which changes no block's bounds.
        lo: (num_blocks, 3) float64 min x1, min y1, min area of each block.
        hi: (num_blocks, 3) float64 max x2, max y2, max area of each block.
    """
    n = len(boxes)
    num_blocks = -(-n // BLOCK_SIZE)
    planes = np.empty((4, num_blocks * BLOCK_SIZE), dtype=boxes.dtype)
    planes[:, :n] = boxes.T
    planes[:, n:] = boxes[-1][:, None]
    x1, y1, x2, y2 = planes
    areas = (x2 - x1) * (y2 - y1)
    starts = np.arange(0, n, BLOCK_SIZE)
    lo = np.column_stack([np.minimum.reduceat(v, starts) for v in (x1, y1, areas)])
    hi = np.column_stack([np.maximum.reduceat(v, starts) for v in (x2, y2, areas)])
    planes = planes.reshape(4, num_blocks, BLOCK_SIZE)
    return planes, lo.astype(np.float64, copy=False), hi.astype(np.float64, copy=False)


def _iou(a, b):
    """Element-wise IoU of broadcastable boxes given as (x1, y1, x2, y2) sequences of float64 arrays."""
    iw = np.minimum(a[2], b[2]) - np.maximum(a[0], b[0])
    ih = np.minimum(a[3], b[3]) - np.maximum(a[1], b[1])
    intersection = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
    area_a = np.maximum(a[2] - a[0], 0.0) * np.maximum(a[3] - a[1], 0.0)
    area_b = np.maximum(b[2] - b[0], 0.0) * np.maximum(b[3] - b[1], 0.0)
    union = area_a + area_b - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(intersection > 0, intersection / union, 0.0)


def overlapping_pairs(boxes, query_boxes, min_overlap=0.0):
    """All (box, query box) pairs whose IoU is above ``min_overlap``.

    Args:
        boxes: (N, 4) float, absolute x1, y1, x2, y2 (e.g. anchors).
        query_boxes: (K, 4) float, absolute x1, y1, x2, y2 (e.g. annotations).
        min_overlap: IoU threshold in [0, 1); only pairs with IoU > min_overlap are returned.

    Returns:
        box_indices: (P,) intp rows of ``boxes``.
        query_indices: (P,) intp rows of ``query_boxes``.
        ious: (P,) float64 IoU of each pair, computed in float64.
        Pairs come in no particular order.
    """
    boxes = _as_boxes(boxes, "boxes")
    query = _as_boxes(query_boxes, "query_boxes").astype(np.float64, copy=False)
    if not 0.0 <= min_overlap < 1.0:
        raise ValueError(f"min_overlap must be in [0, 1), got {min_overlap}")
    empty = (np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0, np.float64))
    if len(boxes) == 0 or len(query) == 0:
        return empty

    planes, lo, hi = _blocks(boxes)
    q_width = query[:, 2] - query[:, 0]
    q_height = query[:, 3] - query[:, 1]
    q_area = q_width * q_height
    # IoU > t needs an overlap longer than t times the query's side along each axis and,
    # since IoU <= smaller area / larger area, areas within a factor t of each other.
    t = min_overlap * (1.0 - _PRUNE_SLACK)
    overlap_x = np.minimum(hi[:, None, 0], query[:, 2]) - np.maximum(lo[:, None, 0], query[:, 0])
    overlap_y = np.minimum(hi[:, None, 1], query[:, 3]) - np.maximum(lo[:, None, 1], query[:, 1])
    candidate = (overlap_x > t * q_width) & (overlap_y > t * q_height)
    candidate &= (q_width > 0) & (q_height > 0)
    if t > 0:
        candidate &= (hi[:, None, 2] > t * q_area) & (t * lo[:, None, 2] < q_area)
    block_ids, query_ids = np.nonzero(candidate)
    if len(block_ids) == 0:
        return empty

    gathered = planes[:, block_ids].astype(np.float64, copy=False)  # (4, P, BLOCK_SIZE)
    ious = _iou(gathered, query[query_ids].T[:, :, None])
    pair, position = np.nonzero(ious > min_overlap)
    rows = block_ids[pair] * BLOCK_SIZE + position
    inside = rows < len(boxes)  # drop the padding rows of the last block
    return rows[inside], query_ids[pair][inside], ious[pair, position][inside]


def compute_overlap(boxes, query_boxes):
    """IoU between every box and every query box.

    Args:
        boxes: (N, 4) float array, absolute x1, y1, x2, y2.
        query_boxes: (K, 4) float array, absolute x1, y1, x2, y2.

    Returns:
        (N, K) float64 array of IoU values.
    """
    boxes = _as_boxes(boxes, "boxes")
    query = _as_boxes(query_boxes, "query_boxes")
    overlaps = np.zeros((len(boxes), len(query)), dtype=np.float64)
    box_indices, query_indices, ious = overlapping_pairs(boxes, query, 0.0)
    overlaps[box_indices, query_indices] = ious
    return overlaps
