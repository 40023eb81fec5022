"""A tiny RetinaNet whose detections differ from anchor to anchor, for the deployment tests.

A RetinaNet with random keras.applications weights is nearly constant (its backbone's
activations vanish, its heads start near zero), so every anchor scores about 0.01 and
the ranking of its detections is arbitrary. He-initialised kernels everywhere keep the
activations at scale, so scores and boxes depend on the image and exported graphs can be
compared with the Keras model detection by detection. The classification output's bias
is zeroed (prior 0.5 instead of 0.01) so that scores spread over (0, 1).
"""
import keras
import numpy as np

from keras_retinanet import models

BACKBONE = "mobilenet128_0.25"
NUM_CLASSES = 3
CLASSIFICATION_OUTPUT = "pyramid_classification"


def _he_kernel(rng, layer, kernel):
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        fan_in = np.prod(kernel.shape[:2])
    else:
        fan_in = np.prod(kernel.shape[:-1])
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), kernel.shape).astype(np.float32)


def _conv_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _conv_layers(layer)
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            yield layer


def he_initialise(model, seed=0):
    """Give ``model``'s convolutions He-initialised kernels (in place; see the module docstring)."""
    rng = np.random.default_rng(seed)
    for layer in _conv_layers(model):
        weights = layer.get_weights()
        weights[0] = _he_kernel(rng, layer, weights[0])
        if layer.name == CLASSIFICATION_OUTPUT:
            weights[1] = np.zeros_like(weights[1])
        layer.set_weights(weights)
    return model


def training_model(seed=0, backbone=BACKBONE, num_classes=NUM_CLASSES):
    """A training model (random backbone) with He-initialised convolution kernels."""
    keras.utils.set_random_seed(seed)
    return he_initialise(models.backbone(backbone).retinanet(num_classes), seed)
