"""RetinaNet object detection for Keras 3 on TensorFlow.

Importing the package is light: it does not import TensorFlow. The custom layers, losses
and initializers are registered with Keras when a model is built or loaded through the
package (``keras_retinanet.models``, ``keras_retinanet.inference``), or right away when
Keras is already imported, so that ``keras.models.load_model`` opens this package's
``.keras`` files with no ``custom_objects``.
"""
import os
import sys

__version__ = "2.0.0.dev0"

# TensorFlow's C++ start-up chatter (CPU features, absl INFO/WARNING) is noise for the tools'
# users; errors still show. An explicit TF_CPP_MIN_LOG_LEVEL in the environment wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def register_custom_objects():
    """Register every custom layer, loss and initializer (and the model class) with Keras."""
    from keras_retinanet import models  # noqa: F401  (importing registers them)


if "keras" in sys.modules:  # Keras (and TensorFlow) are loaded already: registering costs nothing
    register_custom_objects()
