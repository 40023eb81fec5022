import itertools

import numpy as np
import pytest

from keras_retinanet.utils.colors import label_color

MIN_DISTANCE = 45  # L-inf distance, in grey levels, between any two of the first 20 labels


def test_label_color_is_a_bgr_int_triple_and_deterministic():
    for label in range(200):
        color = label_color(label)
        assert isinstance(color, tuple) and len(color) == 3
        assert all(type(channel) is int and 0 <= channel <= 255 for channel in color)
        assert label_color(np.int64(label)) == color


def test_nearby_labels_get_distinct_colors():
    colors = [np.array(label_color(label)) for label in range(20)]
    distances = [np.abs(a - b).max() for a, b in itertools.combinations(colors, 2)]
    assert min(distances) >= MIN_DISTANCE
    assert len({label_color(label) for label in range(80)}) == 80


def test_negative_label_is_rejected():
    with pytest.raises(ValueError, match="label must be >= 0, got -1"):
        label_color(-1)


def test_colors_list_is_what_label_color_returns():
    from keras_retinanet.utils.colors import colors

    assert len(colors) == 80
    assert all(label_color(label) == tuple(colors[label]) for label in range(80))
    assert label_color(80) not in colors[-3:]  # labels past the list keep getting colours (fizyr: green)
