"""GroupNormalization that stands in for a backbone's BatchNormalization."""
import keras


@keras.saving.register_keras_serializable(package="keras_retinanet")
class BackboneGroupNormalization(keras.layers.GroupNormalization):
    """``keras.layers.GroupNormalization`` that also takes BatchNormalization's call arguments.

    ``models._applications.with_group_norm`` rebuilds a keras.applications backbone with
    this layer in place of each BatchNormalization; the rebuilt graph calls it as the
    original layer was called, with ``mask`` and ``training`` (both without effect:
    every image is normalised by its own statistics, in training and at inference).

    Input and output: (B, H, W, C) feature maps, C divisible by ``groups``.
    """

    def call(self, inputs, mask=None, training=None):
        return super().call(inputs)
