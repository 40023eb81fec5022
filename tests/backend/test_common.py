"""backend: graph box decoding and anchor shifting agree with the NumPy utilities."""
import numpy as np
import pytest

from keras_retinanet import backend
from keras_retinanet.utils import anchors as utils_anchors


def _random_boxes(rng, n, max_size=400):
    xy = rng.uniform(0, 600, size=(n, 2))
    wh = rng.uniform(4, max_size, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


@pytest.mark.parametrize("mean, std", [(None, None), ([0.1, -0.1, 0.0, 0.2], [0.1, 0.2, 0.3, 0.4])])
def test_bbox_transform_inv_inverts_bbox_transform(mean, std):
    rng = np.random.default_rng(0)
    anchors = _random_boxes(rng, 50)
    gt = _random_boxes(rng, 50)
    deltas = utils_anchors.bbox_transform(anchors, gt, mean=mean, std=std)
    decoded = backend.bbox_transform_inv(anchors[None], deltas[None], mean=mean, std=std).numpy()[0]
    np.testing.assert_allclose(decoded, gt, rtol=1e-5, atol=1e-3)


def test_bbox_transform_inv_hand_computed():
    anchors = np.array([[[10.0, 20.0, 30.0, 60.0]]], dtype=np.float32)  # w 20, h 40
    deltas = np.array([[[1.0, -1.0, 0.5, 0.0]]], dtype=np.float32)
    # std 0.2: offsets (0.2 * 20, -0.2 * 40, 0.1 * 20, 0) = (4, -8, 2, 0)
    decoded = backend.bbox_transform_inv(anchors, deltas).numpy()
    np.testing.assert_allclose(decoded, [[[14.0, 12.0, 32.0, 60.0]]], rtol=1e-6)


@pytest.mark.parametrize("shape, stride, size", [((5, 7), 8, 32), ((1, 1), 128, 512), ((4, 3), 16, 24)])
def test_shift_matches_numpy(shape, stride, size):
    reference = utils_anchors.generate_anchors(size)
    expected = utils_anchors.shift(shape, stride, reference)
    actual = backend.shift(shape, stride, reference).numpy()
    assert actual.shape == (shape[0] * shape[1] * 9, 4)
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-4)
