"""Pairwise IoU of axis-aligned boxes, vectorised NumPy (replaces fizyr's Cython extension).

Boxes are absolute ``x1, y1, x2, y2`` corners on a continuous plane (no ``+ 1``): boxes
that only touch have IoU 0, identical boxes IoU 1, degenerate boxes IoU 0.

Most pairs of an image's ~200k anchors and its boxes do not overlap at all, so the work
is pruned before any IoU is computed: the boxes are cut into blocks of ``BLOCK_SIZE``
consecutive rows, and a (block, query box) pair is kept only when the block's extent and
areas allow an IoU above the threshold. Anchors from ``anchors_for_shape`` are laid out
row by row, so consecutive anchors are spatial neighbours and most blocks drop out;
for any other order the result is the same, only less work is saved. The blocks of a
read-only array that owns its data (the generators' cached anchors) are computed once
and reused: such arrays are taken to be immutable.
"""
import threading
import weakref

import numpy as np

# Rows of `boxes` tested together against a query box before any IoU is computed.
BLOCK_SIZE = 64
# compute_overlap evaluates up to this many pairs directly, without pruning.
_DENSE_LIMIT = 1 << 14
# Candidate (block, query) pairs whose IoUs are computed together (temporaries fit in cache).
_CHUNK_BLOCKS = 256
# Pruning is loosened by this relative margin so that rounding never drops a pair.
_PRUNE_SLACK = 1e-6


def _as_boxes(boxes, name):
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        if boxes.size % 4:
            raise ValueError(f"{name} must have shape (N, 4), got {boxes.shape}")
        boxes = boxes.reshape(-1, 4)
    if not np.issubdtype(boxes.dtype, np.floating):
        boxes = boxes.astype(np.float64)
    return boxes


def _blocks(boxes):
    """Boxes as float64 planes cut into blocks of BLOCK_SIZE rows, with each block's bounds.

    Args:
        boxes: (N, 4) float, N > 0.

    Returns:
        planes: (5, num_blocks, BLOCK_SIZE) float64 x1, y1, x2, y2 and area planes; the
            last block is padded by repeating the last box, which changes no bounds.
        lo: (num_blocks, 3) float64 min x1, min y1, min area of each block.
        hi: (num_blocks, 3) float64 max x2, max y2, max area of each block.
    """
    n = len(boxes)
    num_blocks = -(-n // BLOCK_SIZE)
    planes = np.empty((5, num_blocks * BLOCK_SIZE), dtype=np.float64)
    planes[:4, :n] = boxes.T
    planes[:4, n:] = boxes[-1][:, None]
    x1, y1, x2, y2, areas = planes
    np.multiply(np.maximum(x2 - x1, 0.0), np.maximum(y2 - y1, 0.0), out=areas)
    starts = np.arange(0, n, BLOCK_SIZE)
    lo = np.column_stack([np.minimum.reduceat(v, starts) for v in (x1, y1, areas)])
    hi = np.column_stack([np.maximum.reduceat(v, starts) for v in (x2, y2, areas)])
    return planes.reshape(5, num_blocks, BLOCK_SIZE), lo, hi


# Blocks of read-only arrays that own their data (e.g. a generator's cached anchors), by id.
_BLOCK_CACHE = {}
_BLOCK_CACHE_LOCK = threading.Lock()


def _cached_blocks(boxes):
    """``_blocks(boxes)``, reused across calls for a read-only array that owns its data."""
    if boxes.flags.writeable or boxes.base is not None:
        return _blocks(boxes)
    key = id(boxes)
    with _BLOCK_CACHE_LOCK:
        entry = _BLOCK_CACHE.get(key)
    if entry is not None and entry[0]() is boxes:
        return entry[1]
    result = _blocks(boxes)

    def forget(_, key=key):
        with _BLOCK_CACHE_LOCK:
            _BLOCK_CACHE.pop(key, None)

    with _BLOCK_CACHE_LOCK:
        _BLOCK_CACHE[key] = (weakref.ref(boxes, forget), result)
    return result


def _iou(a, b):
    """Element-wise IoU of broadcastable boxes given as (x1, y1, x2, y2, area) float64 planes."""
    iw = np.minimum(a[2], b[2])
    iw -= np.maximum(a[0], b[0])
    np.maximum(iw, 0.0, out=iw)
    ih = np.minimum(a[3], b[3])
    ih -= np.maximum(a[1], b[1])
    np.maximum(ih, 0.0, out=ih)
    intersection = np.multiply(iw, ih, out=iw)
    union = a[4] + b[4]
    union -= intersection
    # a zero union only comes with a zero intersection: 0 / tiny = 0
    np.maximum(union, np.finfo(np.float64).tiny, out=union)
    return np.divide(intersection, union, out=intersection)


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

    planes, lo, hi = _cached_blocks(boxes)
    q_width = query[:, 2] - query[:, 0]
    q_height = query[:, 3] - query[:, 1]
    q_area = q_width * q_height
    q_planes = np.concatenate([query.T, (np.maximum(q_width, 0.0) * np.maximum(q_height, 0.0))[None]])
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

    # Candidate blocks are evaluated a chunk at a time so that temporaries stay in cache.
    results = []
    for start in range(0, len(block_ids), _CHUNK_BLOCKS):
        chunk_blocks = block_ids[start : start + _CHUNK_BLOCKS]
        chunk_queries = query_ids[start : start + _CHUNK_BLOCKS]
        gathered = planes[:, chunk_blocks]  # (5, P, BLOCK_SIZE)
        ious = _iou(gathered, q_planes[:, chunk_queries, None])
        pair, position = np.nonzero(ious > min_overlap)
        results.append((chunk_blocks[pair] * BLOCK_SIZE + position, chunk_queries[pair], ious[pair, position]))
    rows, queries, values = (np.concatenate(parts) for parts in zip(*results))
    inside = rows < len(boxes)  # drop the padding rows of the last block
    return rows[inside], queries[inside], values[inside]


def _planes(boxes):
    """(5, N) float64 x1, y1, x2, y2, area planes of (N, 4) boxes."""
    boxes = boxes.astype(np.float64, copy=False)
    area = np.maximum(boxes[:, 2] - boxes[:, 0], 0.0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0.0)
    return np.concatenate([boxes.T, area[None]])


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
    if len(boxes) * len(query) <= _DENSE_LIMIT:  # small (e.g. detections vs annotations): no pruning
        return _iou(_planes(boxes)[:, :, None], _planes(query)[:, None, :])
    overlaps = np.zeros((len(boxes), len(query)), dtype=np.float64)
    box_indices, query_indices, ious = overlapping_pairs(boxes, query, 0.0)
    overlaps[box_indices, query_indices] = ious
    return overlaps
