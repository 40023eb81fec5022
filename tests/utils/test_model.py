"""utils.model: freeze and fold_batch_normalization."""
import keras
import numpy as np

from keras_retinanet import models
from keras_retinanet.utils.model import fold_batch_normalization, freeze


def _randomise_batch_norm(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape).astype(np.float32),
                    rng.normal(0, 0.1, beta.shape).astype(np.float32),
                    rng.normal(0, 0.1, mean.shape).astype(np.float32),
                    rng.uniform(0.5, 1.5, variance.shape).astype(np.float32),
                ]
            )


def _count(model, cls):
    return sum(isinstance(layer, cls) for layer in model.layers)


def test_freeze_makes_every_layer_untrainable():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(3)(inputs)))
    assert freeze(model) is model
    assert not model.trainable_weights and len(model.non_trainable_weights) == 4


def test_fold_batch_normalization_small_graph():
    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(inputs)
    folded_bn = keras.layers.BatchNormalization(name="bn")(conv)
    depthwise = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(folded_bn)
    dw_bn = keras.layers.BatchNormalization(name="dw_bn")(depthwise)
    relu = keras.layers.ReLU()(dw_bn)
    shared = keras.layers.Conv2D(8, 1, name="shared")(relu)  # also feeds the Add: must stay
    shared_bn = keras.layers.BatchNormalization(name="shared_bn")(shared)
    outputs = keras.layers.Add()([shared_bn, shared])
    model = keras.Model(inputs, outputs)
    _randomise_batch_norm(model)

    folded = fold_batch_normalization(model)
    assert [l.name for l in folded.layers if isinstance(l, keras.layers.BatchNormalization)] == ["shared_bn"]
    assert folded.get_layer("conv").use_bias and folded.get_layer("dw").use_bias
    assert folded.get_layer("shared") is not model.get_layer("shared")  # an independent copy
    x = np.random.default_rng(1).normal(size=(2, 9, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(folded(x), model(x, training=False), rtol=1e-5, atol=1e-5)


def test_fold_batch_normalization_retinanet_inference_model(tmp_path):
    model = models.backbone("mobilenet128_0.25").retinanet(3)
    _randomise_batch_norm(model)
    folded = fold_batch_normalization(model)
    assert _count(model, keras.layers.BatchNormalization) == 27
    assert _count(folded, keras.layers.BatchNormalization) == 0
    assert folded.output_names == ["regression", "classification"]
    x = np.random.default_rng(2).uniform(-1, 1, (1, 128, 128, 3)).astype(np.float32)
    expected = model(x)
    actual = folded(x)
    scale = np.abs(np.asarray(expected[0])).max()
    np.testing.assert_allclose(actual[0], expected[0], atol=1e-5 * scale)
    np.testing.assert_allclose(actual[1], expected[1], rtol=1e-5)

    # folding the training model first keeps convert_model working; the result saves and reloads
    inference = models.convert_model(folded, score_threshold=0.0, max_detections=10)
    path = str(tmp_path / "folded.keras")
    inference.save(path)
    reloaded = keras.models.load_model(path)
    for a, b in zip(inference(x), reloaded(x)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_fold_batch_normalization_without_batch_norm_returns_the_model():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))
    assert fold_batch_normalization(model) is model
