import cv2
import numpy as np
import pytest

from keras_retinanet.utils.colors import label_color
from keras_retinanet.utils.visualization import (
    caption_size,
    draw_annotations,
    draw_box,
    draw_boxes,
    draw_caption,
    draw_detections,
    plot_precision_recall,
)

RED = (0, 0, 255)


def outline_mask(shape, box, thickness):
    """Pixels of the band of `thickness` just inside an integer box, written out plainly."""
    mask = np.zeros(shape[:2], dtype=bool)
    x1, y1, x2, y2 = box
    for y in range(y1, y2):
        for x in range(x1, x2):
            near_edge = x - x1 < thickness or x2 - 1 - x < thickness or y - y1 < thickness or y2 - 1 - y < thickness
            if near_edge and 0 <= y < shape[0] and 0 <= x < shape[1]:
                mask[y, x] = True
    return mask


@pytest.mark.parametrize(
    "box, thickness",
    [
        ((10, 12, 40, 30), 2),
        ((10, 12, 40, 30), 1),
        ((0, 0, 64, 48), 3),  # the whole image
        ((-5, 30, 20, 70), 2),  # partly outside: clipped
        ((20, 20, 23, 22), 2),  # smaller than two bands: filled
    ],
)
def test_draw_box_changes_exactly_its_outline(box, thickness):
    image = np.full((48, 64, 3), 7, dtype=np.uint8)
    draw_box(image, box, RED, thickness=thickness)
    changed = np.any(image != 7, axis=2)
    expected = outline_mask(image.shape, box, thickness)
    assert expected.any()
    np.testing.assert_array_equal(changed, expected)
    assert np.all(image[expected] == RED)


def test_draw_box_rounds_float_corners_and_ignores_empty_boxes():
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    draw_box(image, np.array([4.4, 5.6, 20.5, 9.2]), RED, thickness=1)
    np.testing.assert_array_equal(np.any(image > 0, axis=2), outline_mask(image.shape, (4, 6, 20, 9), 1))
    blank = np.zeros((32, 32, 3), dtype=np.uint8)
    draw_box(blank, (10, 10, 10, 20), RED)
    draw_box(blank, (40, 40, 50, 50), RED)  # outside the image
    assert not blank.any()
    with pytest.raises(ValueError, match="thickness must be >= 1"):
        draw_box(blank, (1, 1, 5, 5), RED, thickness=0)


def test_draw_boxes_draws_each_box():
    image = np.zeros((40, 40, 3), dtype=np.uint8)
    boxes = np.array([[1, 1, 10, 10, 0.9], [20, 20, 35, 30, 0.5]])
    draw_boxes(image, boxes, RED, thickness=1)
    expected = outline_mask(image.shape, (1, 1, 10, 10), 1) | outline_mask(image.shape, (20, 20, 35, 30), 1)
    np.testing.assert_array_equal(np.any(image > 0, axis=2), expected)
    draw_boxes(image, np.zeros((0, 4)), RED)  # nothing to draw is fine


@pytest.mark.parametrize(
    "box, below",
    [
        ((0, 0, 30, 30), False),  # top-left corner: no room above
        ((110, 2, 128, 20), False),  # top-right: shifted left
        ((100, 100, 128, 128), True),  # bottom-right: no room below
        ((-20, 50, 10, 80), False),  # partly outside on the left
        ((40, 50, 80, 70), False),  # room above
    ],
)
def test_caption_stays_inside_the_image(box, below):
    image = np.zeros((128, 128, 3), dtype=np.uint8)
    caption = "circle: 0.87"
    width, height = caption_size(caption)
    x1, y1, x2, y2 = draw_caption(image, box, caption, color=(255, 255, 255), below=below)
    assert (x2 - x1, y2 - y1) == (width, height)
    assert 0 <= x1 and x2 <= 128 and 0 <= y1 and y2 <= 128
    # everything drawn lies in that rectangle, which is mostly the fill colour
    changed = np.argwhere(np.any(image > 0, axis=2))
    assert changed[:, 0].min() == y1 and changed[:, 0].max() == y2 - 1
    assert changed[:, 1].min() == x1 and changed[:, 1].max() == x2 - 1
    region = image[y1:y2, x1:x2]
    assert 0.5 < np.mean(np.all(region == 255, axis=2)) < 0.99  # fill plus some dark text
    if box == (40, 50, 80, 70):
        assert (x1, y2) == (40, 50)  # directly above the box


@pytest.mark.parametrize("fill, text", [((255, 255, 255), (0, 0, 0)), ((40, 0, 20), (255, 255, 255))])
def test_caption_text_contrasts_with_its_background(fill, text):
    image = np.zeros((64, 128, 3), dtype=np.uint8)
    x1, y1, x2, y2 = draw_caption(image, (10, 40, 60, 60), "AB 0.5", color=fill)
    region = image[y1:y2, x1:x2].reshape(-1, 3)
    # the pixel farthest from the fill colour is (anti-aliased) text of the contrasting colour
    far = region[np.abs(region.astype(int) - fill).sum(axis=1).argmax()]
    assert tuple(int(c) for c in far) == text


def test_draw_detections_skips_low_scores_and_padding():
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    boxes = np.array([[10, 40, 40, 70], [60, 60, 90, 90], [-1, -1, -1, -1]], dtype=np.float32)
    scores = np.array([0.9, 0.3, -1.0])
    labels = np.array([2, 1, -1])
    names = {1: "circle", 2: "triangle"}
    draw_detections(image, boxes, scores, labels, label_to_name=names.get)
    assert tuple(image[55, 10]) == label_color(2)  # left edge of the first box
    assert not image[60:, 60:].any()  # the 0.3 detection is below the 0.5 default threshold
    draw_detections(image, boxes, scores, labels, color=RED, score_threshold=0.2)
    assert tuple(image[75, 60]) == RED


def test_draw_annotations_from_dict_or_array():
    from_dict = np.zeros((80, 80, 3), dtype=np.uint8)
    draw_annotations(from_dict, {"bboxes": np.array([[10, 10, 50, 40]]), "labels": np.array([1])}, label_to_name=str)
    from_array = np.zeros((80, 80, 3), dtype=np.uint8)
    draw_annotations(from_array, np.array([[10, 10, 50, 40, 1]]), label_to_name=str)
    np.testing.assert_array_equal(from_dict, from_array)
    assert tuple(from_dict[20, 10]) == (0, 255, 0)
    assert from_dict[40:].any()  # the caption goes under the box
    with pytest.raises(ValueError, match=r"must be \(K, 5\)"):
        draw_annotations(from_array, np.zeros((2, 4)))
    with pytest.raises(ValueError, match="lack \\['labels'\\]"):
        draw_annotations(from_array, {"bboxes": np.zeros((1, 4))})


def test_precision_recall_plot_is_a_real_picture(tmp_path):
    path = tmp_path / "curve.png"
    plot_precision_recall([0.25, 0.5, 0.5, 1.0], [1.0, 1.0, 0.67, 0.8], str(path), "circle", 0.85)
    picture = cv2.imread(str(path))
    assert picture.shape == (400, 500, 3)
    assert picture.std() > 10 and len(np.unique(picture.reshape(-1, 3), axis=0)) > 20
    empty = tmp_path / "empty.png"
    plot_precision_recall([], [], str(empty), "nothing")
    assert cv2.imread(str(empty)).shape == (400, 500, 3)
