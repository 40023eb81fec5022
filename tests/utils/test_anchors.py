import numpy as np
import pytest

from keras_retinanet.utils.anchors import (
    AnchorParameters,
    anchor_assignment,
    anchor_targets_bbox,
    anchors_for_shape,
    bbox_transform,
    compute_gt_annotations,
    guess_shapes,
)
from keras_retinanet.utils.compute_overlap import compute_overlap


def test_anchors_for_shape_small_example():
    params = AnchorParameters(sizes=[12], strides=[8], ratios=[1, 2], scales=[1, 2])
    anchors = anchors_for_shape((16, 16), pyramid_levels=[3], anchor_params=params)
    assert anchors.shape == (16, 4)
    first = np.array(
        [
            [-2, -2, 10, 10],
            [-8, -8, 16, 16],
            [-0.2426, -4.4853, 8.2426, 12.4853],
            [-4.4853, -12.9706, 12.4853, 20.9706],
        ]
    )
    np.testing.assert_allclose(anchors[:4], first, atol=1e-4)
    np.testing.assert_allclose(anchors[4:8], first + [8, 0, 8, 0], atol=1e-4)
    np.testing.assert_allclose(anchors[8:12], first + [0, 8, 0, 8], atol=1e-4)
    np.testing.assert_allclose(anchors[12:16], first + 8, atol=1e-4)


def test_anchors_for_shape_three_levels():
    params = AnchorParameters(sizes=[32, 64, 128], strides=[8, 16, 32], ratios=[0.5, 1, 2, 3], scales=[1, 1.2, 1.6])
    anchors = anchors_for_shape((64, 64, 3), pyramid_levels=[3, 4, 5], anchor_params=params)
    assert anchors.shape == (1008, 4)  # (64 + 16 + 4) cells * 12 anchors


def test_anchors_are_shared_and_read_only():
    first = anchors_for_shape((64, 96, 3))
    assert anchors_for_shape((64, 96, 3)) is first
    assert not first.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        first[0, 0] = 1.0


def _dense_reference(anchors, image_shape, boxes, labels, num_classes, negative=0.4, positive=0.5):
    """fizyr's rules written directly on the full IoU matrix."""
    n = len(anchors)
    regression = np.zeros((n, 5), np.float32)
    classification = np.zeros((n, num_classes + 1), np.float32)
    if len(boxes):
        overlaps = compute_overlap(anchors, boxes)
        best = overlaps.argmax(axis=1)
        best_iou = overlaps.max(axis=1)
        pos = best_iou >= positive
        ign = (best_iou > negative) & ~pos
        regression[ign, 4] = classification[ign, -1] = -1
        regression[pos, 4] = classification[pos, -1] = 1
        classification[np.flatnonzero(pos), labels[best[pos]]] = 1
        regression[pos, :4] = bbox_transform(anchors[pos], boxes[best[pos]])
    centre_x = (anchors[:, 0] + anchors[:, 2]) / 2
    centre_y = (anchors[:, 1] + anchors[:, 3]) / 2
    outside = (centre_x >= image_shape[1]) | (centre_y >= image_shape[0])
    regression[outside] = 0
    classification[outside] = 0
    regression[outside, 4] = classification[outside, -1] = -1
    return regression, classification


def test_hand_built_states():
    box = [0, 0, 10, 10]
    anchors = np.array(
        [
            [0, 0, 10, 10],  # IoU 1 -> positive
            [0, 0, 10, 22],  # IoU 0.4545 -> ignored
            [0, 0, 10, 25],  # IoU 0.4 exactly -> negative
            [0, 0, 10, 20],  # IoU 0.5 exactly -> positive
            [0, 0, 10, 30],  # IoU 0.333 -> negative
            [20, 20, 30, 30],  # no overlap -> negative
            [38, 0, 48, 10],  # IoU 1 with the second box, centre x 43 >= 40 -> ignored
            [0, 35, 10, 47],  # centre y 41 >= 40 -> ignored
        ],
        dtype=np.float32,
    )
    annotations = {"bboxes": np.array([box, [38, 0, 48, 10]], np.float64), "labels": np.array([2, 0])}
    regression, labels = anchor_targets_bbox(anchors, [np.zeros((40, 40, 3))], [annotations], num_classes=3)
    assert regression.shape == (1, 8, 5) and labels.shape == (1, 8, 4)
    assert regression.dtype == labels.dtype == np.float32
    states = [1, -1, 0, 1, 0, 0, -1, -1]
    np.testing.assert_array_equal(regression[0, :, 4], states)
    np.testing.assert_array_equal(labels[0, :, 3], states)
    one_hot = np.zeros((8, 3))
    one_hot[[0, 3], 2] = 1  # the positives have the first box's class, 2
    np.testing.assert_array_equal(labels[0, :, :3], one_hot)
    np.testing.assert_allclose(regression[0, 0, :4], [0, 0, 0, 0])
    # anchor 3 is twice as high as the box: y2 moves by -10 / 20 / 0.2
    np.testing.assert_allclose(regression[0, 3, :4], [0, 0, 0, -2.5])
    np.testing.assert_array_equal(regression[0, [1, 2, 4, 5, 6, 7], :4], 0)


def test_image_without_boxes_is_all_negative():
    anchors = anchors_for_shape((128, 128))
    empty = {"bboxes": np.zeros((0, 4)), "labels": np.zeros((0,))}
    regression, labels = anchor_targets_bbox(anchors, [(128, 128, 3)], [empty], num_classes=2)
    assert not regression.any() and not labels.any()


def test_best_box_wins_and_ties_go_to_the_first():
    anchors = np.array([[0, 0, 10, 10]], dtype=np.float32)
    boxes = np.array([[0, 0, 10, 12], [0, 0, 10, 10.5], [0, 0, 10, 10.5]], np.float64)
    positive, ignore, argmax = compute_gt_annotations(anchors, boxes)
    assert positive.tolist() == [True] and ignore.tolist() == [False]
    assert argmax.tolist() == [1]  # IoU 0.952 beats 0.833; box 2 ties with box 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_dense_reference(seed):
    rng = np.random.default_rng(seed)
    image_shape = (100, 150)
    anchors = anchors_for_shape((128, 256))  # padded batch shape; part of it is outside
    xy = rng.uniform(0, 120, size=(7, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(8, 90, size=(7, 2))], axis=1)
    labels = rng.integers(0, 4, size=7)
    regression, classification = anchor_targets_bbox(
        anchors, [image_shape], [{"bboxes": boxes, "labels": labels}], num_classes=4
    )
    ref_regression, ref_classification = _dense_reference(anchors, image_shape, boxes, labels, 4)
    np.testing.assert_array_equal(classification[0], ref_classification)
    np.testing.assert_allclose(regression[0], ref_regression, atol=1e-6)
    assert (regression[0, :, 4] == 1).sum() >= 5


def test_compute_gt_annotations_matches_dense_argmax():
    rng = np.random.default_rng(5)
    anchors = anchors_for_shape((128, 128))
    xy = rng.uniform(0, 100, size=(5, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(10, 60, size=(5, 2))], axis=1)
    positive, ignore, argmax = compute_gt_annotations(anchors, boxes)
    overlaps = compute_overlap(anchors, boxes)
    best = overlaps.max(axis=1)
    np.testing.assert_array_equal(positive, best >= 0.5)
    np.testing.assert_array_equal(ignore, (best > 0.4) & (best < 0.5))
    matched = best > 0.4
    np.testing.assert_array_equal(argmax[matched], overlaps.argmax(axis=1)[matched])


def test_batch_of_two_images():
    anchors = anchors_for_shape((128, 128))
    annotations = [
        {"bboxes": np.array([[10, 10, 60, 60]], float), "labels": np.array([1])},
        {"bboxes": np.zeros((0, 4)), "labels": np.zeros(0)},
    ]
    regression, labels = anchor_targets_bbox(anchors, [(128, 128), (64, 128)], annotations, num_classes=2)
    assert regression.shape == (2, len(anchors), 5)
    assert (labels[0, :, 1] == 1).sum() > 0 and labels[0, :, 0].sum() == 0
    # second image: nothing positive, the lower half (padding) ignored
    assert not (labels[1, :, -1] == 1).any()
    centre_y = (anchors[:, 1] + anchors[:, 3]) / 2
    np.testing.assert_array_equal(labels[1, :, -1] == -1, centre_y >= 64)


def test_assignment_is_sparse_and_disjoint():
    anchors = anchors_for_shape((128, 128))
    boxes = np.array([[10, 10, 60, 60], [70, 20, 120, 50]], float)
    positive, matched, ignored = anchor_assignment(anchors, (100, 128), boxes)
    assert len(positive) == len(matched) > 0
    assert not set(positive) & set(ignored)
    assert set(matched) <= {0, 1}


def test_bad_arguments():
    anchors = anchors_for_shape((64, 64))
    bad_label = {"bboxes": np.array([[0, 0, 10, 10]], float), "labels": np.array([3])}
    with pytest.raises(ValueError, match=r"image 0 of the batch: labels \[3\] outside \[0, 3\)"):
        anchor_targets_bbox(anchors, [(64, 64)], [bad_label], num_classes=3)
    with pytest.raises(ValueError, match="1 boxes but 2 labels"):
        anchor_targets_bbox(anchors, [(64, 64)], [{"bboxes": np.zeros((1, 4)), "labels": [0, 1]}], 3)
    with pytest.raises(ValueError, match="negative_overlap <= positive_overlap"):
        compute_gt_annotations(anchors, np.zeros((1, 4)), negative_overlap=0.6, positive_overlap=0.5)
    with pytest.raises(ValueError, match="2 images but 1 annotation sets"):
        anchor_targets_bbox(anchors, [(64, 64), (64, 64)], [bad_label], 4)


def test_guess_shapes_on_padded_inputs_divide_exactly():
    for shape in [(896, 1152), (128, 256), (1408, 768)]:
        for level, (h, w) in zip(range(3, 8), guess_shapes(shape, range(3, 8))):
            assert (h * 2**level, w * 2**level) == shape


def test_layer_shapes_and_make_shapes_callback_read_the_model():
    """fizyr's names: the real pyramid shapes of a model, where guess_shapes rounds up."""
    from keras_retinanet import models
    from keras_retinanet.utils.anchors import layer_shapes, make_shapes_callback

    model = models.backbone("mobilenet128_0.25").retinanet(2, weights=None)
    shapes = layer_shapes((100, 130, 3), model)
    assert shapes[model.layers[0].name] == (None, 100, 130, 3)
    assert [shapes[f"P{level}"] for level in range(3, 8)] == [
        (None, 12, 16, 256), (None, 6, 8, 256), (None, 3, 4, 256), (None, 2, 2, 256), (None, 1, 1, 256),
    ]  # fmt: skip
    num_anchors = 9 * (12 * 16 + 6 * 8 + 3 * 4 + 2 * 2 + 1)
    assert shapes["regression"] == (None, num_anchors, 4) and shapes["classification"] == (None, num_anchors, 2)
    callback = make_shapes_callback(model)
    assert [tuple(s) for s in callback((100, 130, 3), [3, 4, 5, 6, 7])] == [(12, 16), (6, 8), (3, 4), (2, 2), (1, 1)]
    assert [tuple(s) for s in guess_shapes((100, 130), [3, 7])] == [(13, 17), (1, 2)]
    anchors = anchors_for_shape((100, 130, 3), shapes_callback=callback)
    assert anchors.shape == (num_anchors, 4)
