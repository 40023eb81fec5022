import keras
import numpy as np
import pytest

from keras_retinanet.layers import BackboneGroupNormalization, GroupNormalization


def _pair(shape, groups, rng, **options):
    reference = keras.layers.GroupNormalization(groups=groups, epsilon=1e-5, **options)
    reference.build(shape)
    channels = shape[options.get("axis", -1)]
    weights = [rng.uniform(0.5, 1.5, channels).astype("float32"), rng.uniform(-1, 1, channels).astype("float32")]
    reference.set_weights(weights[: len(reference.weights)])
    ours = GroupNormalization(groups=groups, epsilon=1e-5, **options)
    ours.build(shape)
    ours.set_weights(reference.get_weights())
    return reference, ours


@pytest.mark.parametrize(
    "shape, groups",
    [((2, 9, 7, 64), 32), ((3, 5, 5, 6), 3), ((2, 4, 4, 8), 1), ((2, 4, 4, 8), 8), ((2, 11, 16), 4), ((1, 3, 4, 5, 12), 6)],
)
def test_it_computes_what_keras_group_normalization_computes(shape, groups):
    rng = np.random.default_rng(0)
    reference, ours = _pair(shape, groups, rng)
    # far from zero mean and unit variance, where E[x^2] - E[x]^2 would lose digits
    values = rng.normal(50.0, 3.0, shape).astype("float32")
    expected = np.asarray(reference(values))
    assert np.abs(expected).max() > 1.0
    np.testing.assert_allclose(np.asarray(ours(values)), expected, atol=2e-5)


def test_each_image_is_normalised_alone_and_each_group_to_zero_mean_unit_variance():
    rng = np.random.default_rng(1)
    layer = GroupNormalization(groups=4, epsilon=1e-6, center=False, scale=False)
    first = rng.normal(3.0, 2.0, (1, 6, 5, 16)).astype("float32")
    second = rng.normal(-7.0, 9.0, (1, 6, 5, 16)).astype("float32")
    both = np.asarray(layer(np.concatenate([first, second])))
    np.testing.assert_allclose(both[:1], np.asarray(layer(first)), atol=1e-5)
    grouped = both.reshape(2, 6, 5, 4, 4)
    np.testing.assert_allclose(grouped.mean(axis=(1, 2, 4)), 0.0, atol=1e-5)
    np.testing.assert_allclose(grouped.std(axis=(1, 2, 4)), 1.0, atol=1e-4)


def test_without_scale_or_centre_it_still_matches_keras():
    rng = np.random.default_rng(2)
    reference, ours = _pair((2, 5, 5, 8), 2, rng, center=False, scale=False)
    values = rng.normal(size=(2, 5, 5, 8)).astype("float32")
    np.testing.assert_allclose(np.asarray(ours(values)), np.asarray(reference(values)), atol=2e-5)


def test_another_axis_falls_back_to_keras_computation():
    rng = np.random.default_rng(3)
    reference, ours = _pair((2, 8, 5, 5), 4, rng, axis=1)
    values = rng.normal(size=(2, 8, 5, 5)).astype("float32")
    np.testing.assert_allclose(np.asarray(ours(values)), np.asarray(reference(values)), atol=2e-5)


def test_float16_compute_keeps_float32_statistics():
    rng = np.random.default_rng(4)
    layer = GroupNormalization(groups=2, dtype="mixed_float16")
    values = rng.normal(1000.0, 1.0, (1, 4, 4, 4)).astype("float16")
    outputs = layer(values)
    assert keras.backend.standardize_dtype(outputs.dtype) == "float16"
    # in float16 alone, values near 1000 have a step of 0.5: the variance would be lost
    assert 0.8 < float(np.std(np.asarray(outputs, dtype="float32"))) < 1.2


def test_a_float64_layer_computes_in_float64_as_keras_does():
    rng = np.random.default_rng(3)
    reference = keras.layers.GroupNormalization(groups=4, dtype="float64")
    ours = GroupNormalization(groups=4, dtype="float64")
    for layer in (reference, ours):
        layer.build((2, 5, 6, 16))
    ours.set_weights(reference.get_weights())
    values = rng.normal(1e3, 1e-3, (2, 5, 6, 16))  # float32 statistics lose these digits
    got = np.asarray(ours(values))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, np.asarray(reference(values)), atol=1e-9)


def test_the_backbone_layer_takes_batch_normalization_call_arguments_and_round_trips(tmp_path):
    inputs = keras.Input((6, 6, 8))
    outputs = BackboneGroupNormalization(groups=4, name="bn_gn")(inputs, training=True)
    model = keras.Model(inputs, GroupNormalization(groups=2, name="head_gn")(outputs))
    values = np.random.default_rng(5).normal(size=(2, 6, 6, 8)).astype("float32")
    model.get_layer("bn_gn").set_weights([np.linspace(0.5, 2.0, 8), np.linspace(-1.0, 1.0, 8)])
    path = tmp_path / "gn.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.get_layer("bn_gn")) is BackboneGroupNormalization
    assert type(loaded.get_layer("head_gn")) is GroupNormalization
    np.testing.assert_allclose(np.asarray(loaded(values)), np.asarray(model(values)), atol=1e-6)
