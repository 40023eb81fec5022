"""RetinaNet object detection for Keras 3 on TensorFlow."""

__version__ = "2.0.0.dev0"
