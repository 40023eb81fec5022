"""RetinaNet object detection for Keras 3 on TensorFlow."""
import os

__version__ = "2.0.0.dev0"

# TensorFlow's C++ start-up chatter (CPU features, absl INFO/WARNING) is noise for the tools'
# users; errors still show. An explicit TF_CPP_MIN_LOG_LEVEL in the environment wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Importing the package registers every custom layer, loss and initializer with Keras, so
# `keras.models.load_model(path)` opens snapshots and inference models with no custom_objects.
from keras_retinanet import initializers, layers, losses  # noqa: E402,F401
