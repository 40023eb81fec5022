"""FilterDetections / filter_detections: threshold, NMS, top-k, padding, batches, other tensors."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_retinanet.layers import FilterDetections, filter_detections
from keras_retinanet.utils.compute_overlap import compute_overlap


def _np(outputs):
    return [np.asarray(o) for o in outputs]


def _reference(boxes, scores, class_specific, nms, score_threshold, nms_threshold, max_detections):
    """Fizyr's algorithm for one image, in plain NumPy: per class greedy NMS, then global top-k."""
    if class_specific:
        anchors, labels = np.nonzero(scores > score_threshold)
        values = scores[anchors, labels]
    else:
        labels = scores.argmax(axis=1)
        values = scores.max(axis=1)
        anchors = np.nonzero(values > score_threshold)[0]
        labels, values = labels[anchors], values[anchors]
    keep = []
    for label in np.unique(labels) if class_specific else [None]:
        members = np.arange(len(anchors)) if label is None else np.nonzero(labels == label)[0]
        members = members[np.argsort(-values[members], kind="stable")]
        if nms:
            iou = compute_overlap(boxes[anchors[members]], boxes[anchors[members]])
            alive = np.ones(len(members), bool)
            for i in range(len(members)):
                if alive[i]:
                    alive[i + 1 :] &= iou[i, i + 1 :] <= nms_threshold
            members = members[alive]
        keep.extend(members.tolist())
    keep = np.array(keep, dtype=int)
    keep = keep[np.argsort(-values[keep], kind="stable")][:max_detections]
    return boxes[anchors[keep]], values[keep], labels[keep]


def test_score_threshold_is_strict():
    boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], np.float32)
    scores = np.array([[0.04], [0.05], [0.06]], np.float32)
    out_boxes, out_scores, out_labels = _np(filter_detections(boxes, scores, max_detections=4))
    np.testing.assert_allclose(out_scores, [0.06, -1, -1, -1])
    np.testing.assert_array_equal(out_boxes, [[40, 0, 50, 10]] + [[-1, -1, -1, -1]] * 3)
    np.testing.assert_array_equal(out_labels, [0, -1, -1, -1])
    assert out_labels.dtype == np.int32


def test_nms_suppresses_iou_above_threshold_only():
    boxes = np.array(
        [
            [0, 0, 10, 10],  # best
            [0, 0, 10, 20],  # IoU 100 / 200 = 0.5 with the best: kept
            [0, 0, 12, 10],  # IoU 100 / 120 = 0.83 with the best: suppressed
            [0, 10, 10, 20],  # IoU 0 with the best, 0.5 with the second: kept
        ],
        np.float32,
    )
    scores = np.array([[0.9], [0.8], [0.7], [0.6]], np.float32)
    out_boxes, out_scores, _ = _np(filter_detections(boxes, scores, max_detections=4))
    np.testing.assert_allclose(out_scores, [0.9, 0.8, 0.6, -1])
    np.testing.assert_array_equal(out_boxes[:3], boxes[[0, 1, 3]])
    # a stricter threshold suppresses the 0.5-overlaps too
    _, out_scores, _ = _np(filter_detections(boxes, scores, max_detections=4, nms_threshold=0.4))
    np.testing.assert_allclose(out_scores, [0.9, 0.6, -1, -1])


def test_suppressed_box_does_not_suppress_others():
    # B overlaps A and C; A suppresses B, so C (not overlapping A) must survive.
    boxes = np.array([[0, 0, 10, 10], [3, 0, 13, 10], [8, 0, 18, 10]], np.float32)
    scores = np.array([[0.9], [0.8], [0.7]], np.float32)
    _, out_scores, _ = _np(filter_detections(boxes, scores, max_detections=3, nms_threshold=0.3))
    np.testing.assert_allclose(out_scores, [0.9, 0.7, -1])


def test_class_specific_vs_class_agnostic():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([[0.9, 0.6], [0.3, 0.8], [0.1, 0.2]], np.float32)
    _, s, l = _np(filter_detections(boxes, scores, max_detections=5))
    # class 0: 0.9 (box 0) suppresses 0.3 (box 1); class 1: 0.8 (box 1) suppresses 0.6 (box 0), 0.2 kept
    np.testing.assert_allclose(s, [0.9, 0.8, 0.2, 0.1, -1], rtol=1e-6)
    np.testing.assert_array_equal(l, [0, 1, 1, 0, -1])
    _, s, l = _np(filter_detections(boxes, scores, class_specific_filter=False, max_detections=5))
    # best class per anchor: 0.9 (c0), 0.8 (c1), 0.2 (c1); class-agnostic NMS removes 0.8
    np.testing.assert_allclose(s, [0.9, 0.2, -1, -1, -1], rtol=1e-6)
    np.testing.assert_array_equal(l, [0, 1, -1, -1, -1])


def test_without_nms_overlaps_survive():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    scores = np.array([[0.9], [0.8]], np.float32)
    _, s, _ = _np(filter_detections(boxes, scores, nms=False, max_detections=3))
    np.testing.assert_allclose(s, [0.9, 0.8, -1])


def test_max_detections_keeps_the_best():
    boxes = np.array([[20 * i, 0, 20 * i + 10, 10] for i in range(6)], np.float32)
    scores = np.array([[0.3], [0.9], [0.5], [0.8], [0.2], [0.7]], np.float32)
    b, s, _ = _np(filter_detections(boxes, scores, max_detections=3))
    np.testing.assert_allclose(s, [0.9, 0.8, 0.7])
    np.testing.assert_array_equal(b, boxes[[1, 3, 5]])


def test_pre_nms_top_k_limits_candidates():
    boxes = np.array([[20 * i, 0, 20 * i + 10, 10] for i in range(4)], np.float32)
    scores = np.array([[0.3, 0.1], [0.9, 0.0], [0.5, 0.6], [0.8, 0.1]], np.float32)
    _, s, l = _np(filter_detections(boxes, scores, max_detections=4, pre_nms_top_k=2))
    np.testing.assert_allclose(s, [0.9, 0.8, -1, -1])
    _, s, l = _np(filter_detections(boxes, scores, max_detections=4, pre_nms_top_k=3))
    np.testing.assert_allclose(s, [0.9, 0.8, 0.6, -1])
    np.testing.assert_array_equal(l, [0, 0, 1, -1])


def test_batch_of_two_and_other_tensors():
    boxes = np.array(
        [
            [[0, 0, 10, 10], [0, 1, 10, 11], [30, 30, 40, 40]],
            [[5, 5, 15, 15], [60, 60, 70, 70], [61, 60, 71, 70]],
        ],
        np.float32,
    )
    scores = np.array(
        [[[0.9, 0.0], [0.8, 0.0], [0.0, 0.7]], [[0.01, 0.02], [0.0, 0.6], [0.0, 0.65]]], np.float32
    )
    ids = np.array([[10, 11, 12], [20, 21, 22]], np.int32)
    features = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    b, s, l, o_ids, o_features = _np(filter_detections(boxes, scores, other=[ids, features], max_detections=3))
    np.testing.assert_allclose(s, [[0.9, 0.7, -1], [0.65, -1, -1]])
    np.testing.assert_array_equal(l, [[0, 1, -1], [1, -1, -1]])
    np.testing.assert_array_equal(b[0, :2], boxes[0, [0, 2]])
    np.testing.assert_array_equal(b[1, 0], boxes[1, 2])
    np.testing.assert_array_equal(o_ids, [[10, 12, -1], [22, -1, -1]])
    assert o_ids.dtype == np.int32
    np.testing.assert_array_equal(o_features[0, :2], features[0, [0, 2]])
    np.testing.assert_array_equal(o_features[1], [features[1, 2], [-1, -1], [-1, -1]])


def test_fewer_anchors_than_max_detections_are_padded():
    boxes = np.array([[[0, 0, 10, 10]]], np.float32)
    scores = np.array([[[0.9, 0.8]]], np.float32)
    b, s, l = _np(filter_detections(boxes, scores, max_detections=300))
    assert b.shape == (1, 300, 4) and s.shape == (1, 300) and l.shape == (1, 300)
    np.testing.assert_allclose(s[0, :3], [0.9, 0.8, -1])
    assert (s[0, 2:] == -1).all() and (b[0, 2:] == -1).all()


def _random_boxes_and_scores(seed, batch, num_anchors, num_classes, extent):
    """(B, N, 4) boxes of 5-40 px inside ``extent`` + 40 px, (B, N, C) scores skewed to low values."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, extent, size=(batch, num_anchors, 2))
    wh = rng.uniform(5, 40, size=(batch, num_anchors, 2))
    boxes = np.concatenate([xy, xy + wh], axis=-1).astype(np.float32)
    scores = (rng.uniform(size=(batch, num_anchors, num_classes)) ** 4).astype(np.float32)
    return boxes, scores


@pytest.mark.parametrize("nms_op", ["overlaps", "matrix", "builtin"])
@pytest.mark.parametrize("class_specific", [True, False])
@pytest.mark.parametrize("nms", [True, False])
def test_matches_numpy_reference_on_random_input(class_specific, nms, nms_op):
    num_anchors, num_classes, max_detections = 400, 4, 50
    boxes, scores = _random_boxes_and_scores(3, 2, num_anchors, num_classes, extent=100)
    out = _np(
        filter_detections(
            boxes, scores, class_specific_filter=class_specific, nms=nms, max_detections=max_detections, nms_op=nms_op
        )
    )
    for i in range(2):
        ref_boxes, ref_scores, ref_labels = _reference(
            boxes[i], scores[i], class_specific, nms, 0.05, 0.5, max_detections
        )
        assert len(ref_scores) == max_detections  # enough survivors to fill the output
        np.testing.assert_allclose(out[1][i], ref_scores, rtol=1e-6)
        np.testing.assert_array_equal(out[2][i], ref_labels)
        np.testing.assert_allclose(out[0][i], ref_boxes, rtol=1e-6)


def test_layer_in_a_model_config_roundtrip_and_specs():
    layer = FilterDetections(
        nms=True, class_specific_filter=False, nms_threshold=0.4, score_threshold=0.1, max_detections=7,
        pre_nms_top_k=50, name="filtered",
    )
    clone = FilterDetections.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()

    boxes = keras.Input((None, 4))
    scores = keras.Input((None, 3))
    extra = keras.Input((None, 2), dtype="int32")
    outputs = clone([boxes, scores, extra])
    assert [tuple(o.shape) for o in outputs] == [(None, 7, 4), (None, 7), (None, 7), (None, 7, 2)]
    assert [o.dtype for o in outputs] == ["float32", "float32", "int32", "int32"]
    model = keras.Model([boxes, scores, extra], outputs)
    b = np.array([[[0, 0, 10, 10], [0, 0, 10, 10.5]]], np.float32)
    s = np.array([[[0.2, 0.5, 0.0], [0.05, 0.3, 0.0]]], np.float32)
    e = np.array([[[1, 2], [3, 4]]], np.int32)
    out = _np(model.predict_on_batch([b, s, e]))
    np.testing.assert_allclose(out[1][0, :2], [0.5, -1])
    np.testing.assert_array_equal(out[3][0, :2], [[1, 2], [-1, -1]])


def test_layer_rejects_nonpositive_max_detections():
    with pytest.raises(ValueError, match="max_detections"):
        FilterDetections(max_detections=0)


def test_unknown_nms_op_is_an_error():
    with pytest.raises(ValueError, match="unknown NMS op 'fast'"):
        filter_detections(np.zeros((1, 4, 4), np.float32), np.zeros((1, 4, 2), np.float32), nms_op="fast")


def test_nms_ops_agree_with_an_unknown_batch_size_and_uneven_valid_counts():
    """In a graph whose batch size is unknown (as in a Keras model), each NMS op gives the
    reference's detections; image 0 has few candidates above the threshold, image 1 many
    and image 2 none, so the candidates cut after the batch's last valid one include
    invalid ones of image 0, which must neither suppress nor be kept."""
    num_anchors, num_classes, max_detections = 300, 3, 40
    boxes, scores = _random_boxes_and_scores(5, 3, num_anchors, num_classes, extent=80)
    scores[0] *= 0.055  # a few pairs above 0.05
    scores[2] = 0.01  # none
    signature = [tf.TensorSpec([None, None, 4], tf.float32), tf.TensorSpec([None, None, num_classes], tf.float32)]
    for nms_op in ("overlaps", "matrix"):
        run = tf.function(
            lambda b, s, op=nms_op: filter_detections(b, s, max_detections=max_detections, nms_op=op),
            input_signature=signature,
        )
        out = _np(run(boxes, scores))
        for i in range(3):
            ref_boxes, ref_scores, ref_labels = _reference(boxes[i], scores[i], True, True, 0.05, 0.5, max_detections)
            valid = out[1][i] > -1
            assert valid.sum() == len(ref_scores), (nms_op, i)
            np.testing.assert_allclose(out[1][i][valid], ref_scores, rtol=1e-6)
            np.testing.assert_array_equal(out[2][i][valid], ref_labels)
            np.testing.assert_allclose(out[0][i][valid], ref_boxes, rtol=1e-6)
        assert 0 < (out[1][0] > -1).sum() < max_detections and (out[1][2] == -1).all()


def test_layer_nms_op_in_config_and_checked():
    layer = FilterDetections(nms_op="matrix")
    assert FilterDetections.from_config(layer.get_config()).nms_op == "matrix"
    config = layer.get_config()
    del config["nms_op"]  # a model saved before the option: the default op, the same boxes
    assert FilterDetections.from_config(config).nms_op == "overlaps"
    with pytest.raises(ValueError, match="unknown nms_op 'fast'"):
        FilterDetections(nms_op="fast")
