"""PriorProbability initialiser."""
import keras
import numpy as np
import pytest

from keras_retinanet.initializers import PriorProbability


@pytest.mark.parametrize("probability", [0.01, 0.5, 0.9])
def test_sigmoid_of_bias_is_the_prior(probability):
    bias = np.asarray(PriorProbability(probability)((7,), dtype="float32"))
    assert bias.shape == (7,)
    np.testing.assert_allclose(1 / (1 + np.exp(-bias)), probability, rtol=1e-5)


def test_default_value_and_serialization():
    bias = np.asarray(PriorProbability()((2,)))
    np.testing.assert_allclose(bias, -np.log(99), rtol=1e-6)
    config = keras.saving.serialize_keras_object(PriorProbability(0.02))
    clone = keras.saving.deserialize_keras_object(config)
    assert isinstance(clone, PriorProbability) and clone.probability == 0.02


def test_rejects_probability_outside_unit_interval():
    with pytest.raises(ValueError, match="probability"):
        PriorProbability(1.0)
