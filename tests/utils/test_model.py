"""utils.model: freeze, synchronize_batch_norm and fold_batch_normalization."""
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_retinanet import models
from keras_retinanet.utils.model import fold_batch_normalization, freeze, synchronize_batch_norm


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


def test_synchronize_batch_norm_sets_the_trainable_layers_only():
    inputs = keras.Input((8, 8, 3))
    frozen = keras.layers.BatchNormalization(name="frozen")
    frozen.trainable = False
    hidden = keras.layers.BatchNormalization(name="trained")(frozen(keras.layers.Conv2D(4, 3)(inputs)))
    inner = keras.Model(inputs, hidden)
    outer_inputs = keras.Input((8, 8, 3))
    model = keras.Model(outer_inputs, keras.layers.BatchNormalization(name="outer")(inner(outer_inputs)))
    assert synchronize_batch_norm(model) == 2  # the nested model's too
    assert model.get_layer("outer").synchronized and inner.get_layer("trained").synchronized
    assert not inner.get_layer("frozen").synchronized
    assert synchronize_batch_norm(model, False) == 2 and not model.get_layer("outer").synchronized


SYNC_SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np, tensorflow as tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from keras_retinanet.utils.model import synchronize_batch_norm

    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 3.0, (8, 12, 12, 3)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32")

    def build():
        keras.utils.set_random_seed(5)
        inputs = keras.Input((12, 12, 3))
        h = inputs
        for _ in range(3):
            h = keras.layers.ReLU()(keras.layers.BatchNormalization()(keras.layers.Conv2D(8, 3, padding="same")(h)))
        model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(h)))
        model.compile(loss="mse", optimizer=keras.optimizers.SGD(0.1))
        return model

    def train(model):
        data = tf.data.Dataset.from_tensors((x, y)).repeat()
        losses = model.fit(data, steps_per_epoch=1, epochs=3, verbose=0).history["loss"]
        return losses, [w.numpy().tolist() for w in model.trainable_weights]

    results = {"single": train(build())}
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for synchronized in (True, False):
        with strategy.scope():
            model = build()
            synchronize_batch_norm(model, synchronized)
        results[str(synchronized)] = train(model)
    print(json.dumps(results))
    """
)


@pytest.mark.slow
def test_synchronized_batch_norm_trains_two_replicas_as_one_device(tmp_path):
    script = tmp_path / "sync.py"
    script.write_text(SYNC_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    single_losses, single_weights = results["single"]
    synced_losses, synced_weights = results["True"]
    local_losses, _ = results["False"]
    np.testing.assert_allclose(synced_losses, single_losses, rtol=1e-5)
    for synced, single in zip(synced_weights, single_weights):
        np.testing.assert_allclose(synced, single, rtol=1e-4, atol=1e-6)
    # per-replica statistics (two images each) are another computation
    assert abs(local_losses[0] - single_losses[0]) > 1e-3 * single_losses[0]
