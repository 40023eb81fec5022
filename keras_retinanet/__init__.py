"""RetinaNet object detection for Keras 3 on TensorFlow."""

__version__ = "2.0.0.dev0"

# Importing the package registers every custom layer, loss and initializer with Keras, so
# `keras.models.load_model(path)` opens snapshots and inference models with no custom_objects.
from keras_retinanet import initializers, layers, losses  # noqa: E402,F401
