"""export: the graph's preprocessing is utils.image.preprocess_image, mode by mode."""
import numpy as np
import pytest

from keras_retinanet.export import preprocess_graph
from keras_retinanet.utils.image import PREPROCESS_MODES, preprocess_image


@pytest.mark.parametrize("mode", PREPROCESS_MODES)
def test_preprocess_graph_matches_preprocess_image(mode):
    images = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    np.testing.assert_allclose(preprocess_graph(images, mode).numpy(), preprocess_image(images, mode), atol=1e-5)
