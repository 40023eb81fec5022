"""Focal and smooth L1 losses against hand-computed values."""
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_retinanet import losses


def _with_state(values, states):
    values = np.asarray(values, np.float32)
    states = np.asarray(states, np.float32)[..., None]
    return np.concatenate([values, states], axis=-1)


def test_smooth_l1_hand_computed():
    targets = _with_state([[[0, 0, 0, 1], [0, 0, 1, 0], [0, 0, 0.05, 0], [0, 0, 1, 0]]], [[1, 1, 1, 0]])
    prediction = np.zeros((1, 4, 4), np.float32)
    loss = float(losses.smooth_l1()(targets, prediction))
    expected = ((1 - 0.5 / 9) * 2 + 0.5 * 9 * 0.05**2) / 3
    assert loss == pytest.approx(expected, rel=1e-6)


def test_smooth_l1_ignores_non_positive_and_handles_zero_positives():
    targets = _with_state([[[5, 5, 5, 5], [3, 0, 0, 0]]], [[-1, 0]])
    prediction = np.zeros((1, 2, 4), np.float32)
    assert float(losses.smooth_l1()(targets, prediction)) == 0.0


def test_smooth_l1_sigma_and_batch_normalisation():
    # sigma 1: quadratic below 1, linear above; 3 positives over a batch of 2
    targets = _with_state([[[0.5, 0, 0, 0], [2, 0, 0, 0]], [[0, 0, 0, -3], [9, 9, 9, 9]]], [[1, 1], [1, -1]])
    prediction = np.zeros((2, 2, 4), np.float32)
    loss = float(losses.smooth_l1(sigma=1.0)(targets, prediction))
    assert loss == pytest.approx((0.5 * 0.25 + 1.5 + 2.5) / 3, rel=1e-6)


def _focal_term(p, positive, alpha=0.25, gamma=2.0):
    if positive:
        return -alpha * (1 - p) ** gamma * np.log(p)
    return -(1 - alpha) * p**gamma * np.log(1 - p)


def test_focal_easy_and_hard_examples():
    # one class; anchors: easy positive, hard positive, easy negative, hard negative, ignored
    probabilities = np.array([[[0.9], [0.1], [0.1], [0.9], [0.99]]], np.float32)
    targets = _with_state([[[1], [1], [0], [0], [0]]], [[1, 1, 0, 0, -1]])
    loss = float(losses.focal()(targets, probabilities))
    expected = (
        _focal_term(0.9, True) + _focal_term(0.1, True) + _focal_term(0.1, False) + _focal_term(0.9, False)
    ) / 2
    assert loss == pytest.approx(expected, rel=1e-5)
    # the hard examples dominate: easy terms are 1/81 of the hard ones up to alpha and log
    assert _focal_term(0.1, True) > 50 * _focal_term(0.9, True)


def test_focal_multi_class_and_zero_positives():
    probabilities = np.array([[[0.2, 0.7], [0.4, 0.05]]], np.float32)
    targets = _with_state([[[0, 0], [0, 0]]], [[0, 0]])
    loss = float(losses.focal(alpha=0.5, gamma=1.0)(targets, probabilities))
    expected = sum(_focal_term(p, False, 0.5, 1.0) for p in (0.2, 0.7, 0.4, 0.05)) / 1
    assert loss == pytest.approx(expected, rel=1e-5)


def test_focal_gamma_zero_is_weighted_cross_entropy():
    probabilities = np.array([[[0.3, 0.6]]], np.float32)
    targets = _with_state([[[1, 0]]], [[1]])
    loss = float(losses.focal(alpha=0.5, gamma=0.0)(targets, probabilities))
    assert loss == pytest.approx(0.5 * (-np.log(0.3) - np.log(0.4)), rel=1e-5)


def test_focal_cutoff_for_soft_labels():
    probabilities = np.array([[[0.5]]], np.float32)
    targets = _with_state([[[0.7]]], [[1]])
    # 0.7 > cutoff 0.5 -> positive weighting; with cutoff 0.8 -> negative weighting
    bce = -(0.7 * np.log(0.5) + 0.3 * np.log(0.5))
    assert float(losses.focal(cutoff=0.5)(targets, probabilities)) == pytest.approx(0.25 * 0.25 * bce, rel=1e-5)
    assert float(losses.focal(cutoff=0.8)(targets, probabilities)) == pytest.approx(0.75 * 0.25 * bce, rel=1e-5)


def test_losses_compute_in_float32_from_float16_predictions():
    probabilities = np.array([[[0.9], [0.1]]], np.float16)
    targets = _with_state([[[1], [0]]], [[1, 0]])
    loss = losses.focal()(targets, tf.constant(probabilities))
    assert loss.dtype == tf.float32
    expected = _focal_term(np.float32(np.float16(0.9)), True) + _focal_term(np.float32(np.float16(0.1)), False)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    regression = losses.smooth_l1()(_with_state([[[1, 0, 0, 0]]], [[1]]), tf.zeros((1, 1, 4), tf.float16))
    assert regression.dtype == tf.float32


@pytest.mark.parametrize(
    "factory, kwargs",
    [
        (losses.focal, {"alpha": 0.3, "gamma": 1.5, "cutoff": 0.4}),
        (losses.smooth_l1, {"sigma": 2.0}),
        (losses.GIoULoss, {"std": 0.1}),
    ],
)
def test_losses_serialize(factory, kwargs):
    loss = factory(**kwargs)
    config = keras.saving.serialize_keras_object(loss)
    assert config["registered_name"].startswith("keras_retinanet>")
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is type(loss)
    for key, value in kwargs.items():
        assert getattr(clone, key) == value


def test_losses_under_mirrored_strategy_with_two_replicas():
    """Replicas normalise by the positives of the global batch: their sum is the one-device loss."""
    script = textwrap.dedent(
        """
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from keras_retinanet import losses
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        # replica 0: 2 positives with loss 1 each (p=0.5, gamma 0, alpha 0.5 -> 0.5*log2 each)
        y_true = np.array([[[1, 1], [1, 1]], [[1, 1], [0, 0]]], np.float32)
        y_pred = np.full((2, 2, 1), 0.5, np.float32)
        dataset = strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensor_slices((y_true, y_pred)).batch(2))
        loss = losses.focal(alpha=0.5, gamma=0.0)
        for batch in dataset:
            per_replica = strategy.run(lambda t, p: loss(t, p), args=batch)
            total = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
        print(strategy.num_replicas_in_sync, float(total))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    replicas, total = result.stdout.split()
    assert replicas == "2"
    # replica 0 sums 2 * 0.5 log 2 over 2 positives, replica 1 sums 0.5 log 2 + 0.5 log 2 over
    # 1 positive and 1 negative: one device sees 2 log 2 over 3 positives
    expected = 2 * np.log(2) / 3
    assert float(total) == pytest.approx(expected, rel=1e-5)


def _offsets(anchor, box, std=0.2):
    """bbox_transform of one box against one anchor, as the training targets are."""
    from keras_retinanet.utils.anchors import bbox_transform

    return bbox_transform(np.asarray([anchor], np.float64), np.asarray([box], np.float64))[0] / 1.0


def _giou(a, b):
    area = lambda r: max(r[2] - r[0], 0) * max(r[3] - r[1], 0)  # noqa: E731
    inter = area([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])])
    union = area(a) + area(b) - inter
    hull = area([min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])])
    return inter / union - (hull - union) / hull


def test_giou_loss_equals_one_minus_the_giou_of_the_decoded_pixel_boxes():
    anchor = [100.0, 40.0, 164.0, 72.0]  # 64 x 32 px
    target_box = [110.0, 44.0, 150.0, 70.0]
    predictions = {
        "exact": target_box,
        "shifted": [120.0, 44.0, 160.0, 70.0],
        "disjoint": [300.0, 200.0, 340.0, 230.0],
    }
    target = _offsets(anchor, target_box)
    for name, predicted_box in predictions.items():
        y_true = _with_state([[target]], [[1]])
        y_pred = np.asarray([[_offsets(anchor, predicted_box)]], np.float32)
        expected = 1 - _giou(predicted_box, target_box)
        assert float(losses.GIoULoss()(y_true, y_pred)) == pytest.approx(expected, abs=1e-5), name
    # disjoint boxes still have a gradient (the enclosing-box term); only positives count
    assert 1 - _giou(predictions["disjoint"], target_box) > 1.0
    y_true = _with_state([[target, target, target]], [[1, 0, -1]])
    y_pred = np.asarray([[_offsets(anchor, predictions["shifted"])] * 3], np.float32)
    assert float(losses.GIoULoss()(y_true, y_pred)) == pytest.approx(1 - _giou(predictions["shifted"], target_box), abs=1e-5)
    assert float(losses.GIoULoss()(_with_state([[target]], [[0]]), y_pred[:, :1])) == 0.0
    assert losses.box_loss("giou").name == "giou" and losses.box_loss("smooth_l1").name == "smooth_l1"
    with pytest.raises(ValueError, match="unknown box loss 'iou'"):
        losses.box_loss("iou")
