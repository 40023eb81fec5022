import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_retinanet.utils import compute_overlap as co
from keras_retinanet.utils.anchors import anchors_for_shape
from keras_retinanet.utils.compute_overlap import compute_overlap, overlapping_pairs


def _reference(boxes, query):
    """Pair by pair, in plain Python floats."""
    result = np.zeros((len(boxes), len(query)))
    for i, (ax1, ay1, ax2, ay2) in enumerate(np.asarray(boxes, dtype=np.float64)):
        for j, (bx1, by1, bx2, by2) in enumerate(np.asarray(query, dtype=np.float64)):
            iw = min(ax2, bx2) - max(ax1, bx1)
            ih = min(ay2, by2) - max(ay1, by1)
            if iw <= 0 or ih <= 0:
                continue
            intersection = iw * ih
            union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - intersection
            result[i, j] = intersection / union
    return result


def _random_boxes(rng, n, extent=100.0, max_side=40.0):
    xy = rng.uniform(0, extent, size=(n, 2))
    wh = rng.uniform(0.5, max_side, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_equals_reference_on_random_boxes(dtype):
    rng = np.random.default_rng(0)
    boxes = _random_boxes(rng, 150).astype(dtype)  # not a multiple of BLOCK_SIZE
    query = _random_boxes(rng, 17).astype(dtype)
    result = compute_overlap(boxes, query)
    assert result.dtype == np.float64 and result.shape == (150, 17)
    np.testing.assert_allclose(result, _reference(boxes, query), rtol=1e-12, atol=1e-12)
    assert (result > 0).mean() > 0.02  # the test really has overlapping pairs


def test_equals_reference_on_anchors():
    anchors = anchors_for_shape((96, 128))
    rng = np.random.default_rng(1)
    query = _random_boxes(rng, 6, extent=120.0, max_side=90.0)
    np.testing.assert_allclose(compute_overlap(anchors, query), _reference(anchors, query), atol=1e-12)


def test_special_cases():
    boxes = np.array(
        [
            [0, 0, 10, 10],
            [10, 0, 20, 10],  # touches the first on its right side
            [0, 0, 10, 10],  # identical to the first
            [5, 5, 5, 15],  # zero width
            [2, 2, 7, 7],  # inside the first: 25 / 100
        ],
        dtype=np.float64,
    )
    result = compute_overlap(boxes, boxes[:1])
    np.testing.assert_array_equal(result[:, 0], [1.0, 0.0, 1.0, 0.0, 0.25])
    assert compute_overlap(boxes[3:4], boxes[3:4])[0, 0] == 0.0


def test_empty_inputs_and_bad_shapes():
    assert compute_overlap(np.zeros((0, 4)), np.ones((3, 4))).shape == (0, 3)
    assert compute_overlap(np.ones((3, 4)), np.zeros((0, 4))).shape == (3, 0)
    with pytest.raises(ValueError, match=r"boxes must have shape \(N, 4\), got \(3, 3\)"):
        compute_overlap(np.zeros((3, 3)), np.zeros((1, 4)))
    with pytest.raises(ValueError, match="min_overlap must be in"):
        overlapping_pairs(np.zeros((1, 4)), np.zeros((1, 4)), 1.0)


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7])
def test_overlapping_pairs_match_dense_threshold(threshold):
    anchors = anchors_for_shape((128, 160))
    rng = np.random.default_rng(2)
    query = _random_boxes(rng, 8, extent=150.0, max_side=120.0)
    dense = _reference(anchors, query)
    rows, cols, ious = overlapping_pairs(anchors, query, threshold)
    expected_rows, expected_cols = np.nonzero(dense > threshold)
    order = np.lexsort((cols, rows))
    np.testing.assert_array_equal(rows[order], expected_rows)
    np.testing.assert_array_equal(cols[order], expected_cols)
    np.testing.assert_allclose(ious[order], dense[expected_rows, expected_cols], atol=1e-12)


def test_read_only_arrays_reuse_blocks_without_stale_results():
    rng = np.random.default_rng(3)
    query = _random_boxes(rng, 5)
    entries = len(co._BLOCK_CACHE)
    for _ in range(4):
        boxes = _random_boxes(rng, 4000)  # big enough for the pruned path
        boxes.flags.writeable = False
        first = compute_overlap(boxes, query)
        np.testing.assert_allclose(first, _reference(boxes, query), atol=1e-12)
        assert id(boxes) in co._BLOCK_CACHE
        np.testing.assert_array_equal(compute_overlap(boxes, query), first)
        del boxes  # the cache entry goes with the array; a new array may get its id
    assert len(co._BLOCK_CACHE) <= entries + 1


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(*[st.integers(0, 40)] * 4), min_size=1, max_size=70),
    st.lists(st.tuples(*[st.integers(0, 40)] * 4), min_size=1, max_size=6),
)
def test_property_integer_boxes(boxes, query):
    # integer corners hit exact ties, touching edges and degenerate boxes often
    boxes = np.array(boxes, dtype=np.float64)
    query = np.array(query, dtype=np.float64)
    np.testing.assert_allclose(compute_overlap(boxes, query), _reference(boxes, query), atol=1e-12)
