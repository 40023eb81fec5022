"""Anchors, UpsampleLike, RegressBoxes and ClipBoxes layers."""
import keras
import numpy as np
import pytest

from keras_retinanet import layers
from keras_retinanet.utils.anchors import AnchorParameters, anchors_for_shape, bbox_transform


def _roundtrip(layer):
    return layer.__class__.from_config(layer.get_config())


@pytest.mark.parametrize("image_shape", [(128, 128), (256, 384), (96, 160)])
def test_anchors_layers_reproduce_anchors_for_shape(image_shape):
    params = AnchorParameters.default
    per_level = []
    for i, level in enumerate(range(3, 8)):
        h = -(-image_shape[0] // 2**level)
        w = -(-image_shape[1] // 2**level)
        features = np.zeros((2, h, w, 1), dtype=np.float32)
        layer = layers.Anchors(size=params.sizes[i], stride=params.strides[i])
        out = layer(features).numpy()
        assert out.shape == (2, h * w * 9, 4)
        np.testing.assert_array_equal(out[0], out[1])
        per_level.append(out[0])
    np.testing.assert_allclose(np.concatenate(per_level), anchors_for_shape(image_shape), atol=1e-4)


def test_anchors_custom_ratios_scales_and_config():
    layer = layers.Anchors(size=16, stride=4, ratios=[1.0, 3.0], scales=[1.0])
    clone = _roundtrip(layer)
    assert clone.get_config()["ratios"] == [1.0, 3.0] and clone.num_anchors == 2
    out = clone(np.zeros((1, 2, 2, 1), np.float32)).numpy()
    assert out.shape == (1, 8, 4)
    # first cell centre (2, 2): ratio 1 -> 16x16, ratio 3 -> h = 3 w, w * h = 256
    w = np.sqrt(256 / 3.0)
    np.testing.assert_allclose(out[0, 0], [-6, -6, 10, 10], atol=1e-4)
    np.testing.assert_allclose(out[0, 1], [2 - w / 2, 2 - 1.5 * w, 2 + w / 2, 2 + 1.5 * w], atol=1e-4)


def test_anchors_symbolic_shape():
    features = keras.Input((10, 12, 4))
    assert layers.Anchors(32, 8)(features).shape == (None, 10 * 12 * 9, 4)
    assert layers.Anchors(32, 8)(keras.Input((None, None, 4))).shape == (None, None, 4)


@pytest.mark.parametrize("source_hw, target_hw", [((4, 5), (8, 10)), ((3, 3), (5, 6)), ((2, 1), (3, 2))])
def test_upsample_like_any_size(source_hw, target_hw):
    rng = np.random.default_rng(0)
    source = rng.normal(size=(2,) + source_hw + (3,)).astype(np.float32)
    target = np.zeros((2,) + target_hw + (7,), np.float32)
    out = _roundtrip(layers.UpsampleLike())([source, target]).numpy()
    assert out.shape == (2,) + target_hw + (3,)
    # every output value is copied from the source (nearest neighbour)
    assert np.isin(out, source).all()
    if target_hw == tuple(2 * s for s in source_hw):
        np.testing.assert_array_equal(out, source.repeat(2, axis=1).repeat(2, axis=2))


def test_regress_boxes_inverts_bbox_transform():
    anchors = np.array([[0, 0, 10, 10], [20, 30, 60, 50]], np.float32)
    gt = np.array([[1, -2, 12, 9], [25, 28, 50, 55]], np.float32)
    mean, std = [0.0, 0.1, 0.0, -0.1], [0.1, 0.1, 0.2, 0.2]
    deltas = bbox_transform(anchors, gt, mean=mean, std=std)
    layer = _roundtrip(layers.RegressBoxes(mean=mean, std=std))
    out = layer([anchors[None], deltas[None]]).numpy()
    np.testing.assert_allclose(out[0], gt, atol=1e-4)


def test_regress_boxes_rejects_bad_std():
    with pytest.raises(ValueError, match="4 values"):
        layers.RegressBoxes(std=[0.1, 0.2])


def test_clip_boxes():
    image = np.zeros((1, 50, 80, 3), np.float32)
    boxes = np.array([[[-5, -1, 100, 60], [10, 20, 30, 40]]], np.float32)
    out = _roundtrip(layers.ClipBoxes())([image, boxes]).numpy()
    np.testing.assert_array_equal(out, [[[0, 0, 80, 50], [10, 20, 30, 40]]])


def test_fizyr_signatures_positional_layer_args_and_call_kwargs():
    """fizyr's Anchors / RegressBoxes took Keras 2's positional layer arguments; call took **kwargs."""
    anchors = layers.Anchors(32, 8, None, None, True, "my_anchors")
    assert anchors.name == "my_anchors" and anchors.trainable and anchors.size == 32.0
    regress = layers.RegressBoxes(None, None, False, "my_regress")
    assert regress.name == "my_regress" and not regress.trainable
    with pytest.raises(TypeError, match="multiple values for argument 'name'"):
        layers.Anchors(32, 8, None, None, True, "a", name="b")
    features = np.zeros((1, 2, 3, 1), np.float32)
    assert anchors.call(features, training=False).shape == (1, 2 * 3 * 9, 4)
    boxes = regress.call([np.zeros((1, 2, 4), np.float32), np.zeros((1, 2, 4), np.float32)], mask=None)
    assert boxes.shape == (1, 2, 4)
    assert _roundtrip(anchors).get_config()["name"] == "my_anchors"
