"""GroupNormalization computed channel by channel, and the one that stands in for a backbone's BatchNormalization."""
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_retinanet")
class GroupNormalization(keras.layers.GroupNormalization):
    """``keras.layers.GroupNormalization`` (same arguments, weights and results), faster.

    Keras' layer reshapes (B, H, W, C) into (B, H, W, G, C/G) and reduces and broadcasts
    over that 5-D shape, which TensorFlow's CPU kernels do 2-3x slower than the same work
    on (B, H, W, C): here each channel's mean over the spatial axes is taken first, the
    group's mean is the mean of its channels' means (every channel has as many values),
    and both the centring and the scaling broadcast a (B, 1, 1, C) tensor, as
    BatchNormalization does. The variance is the mean of the squared centred values (two
    passes, as ``ops.moments``), not E[x^2] - E[x]^2. Statistics in float32 for float16,
    bfloat16 and float32 inputs, in float64 for float64 ones (as Keras' layer). Any
    ``axis`` other than the last falls back to Keras' computation.

    Input and output: (B, ..., C) with C divisible by ``groups``; the statistics are per
    image and group, over every axis but the batch's and the channels'.
    """

    def call(self, inputs):
        rank = len(inputs.shape)
        if self.axis not in (-1, rank - 1) or rank < 3:
            return super().call(inputs)
        channels = int(inputs.shape[-1])
        spatial = tuple(range(1, rank - 1))
        broadcast = (-1,) + (1,) * len(spatial) + (channels,)
        statistics = keras.backend.result_type(inputs.dtype, "float32")
        values = ops.cast(inputs, statistics)

        def group_means(per_channel):  # (B, C) -> (B, 1, ..., 1, C): each channel its group's mean
            grouped = ops.reshape(per_channel, (-1, self.groups, channels // self.groups))
            means = ops.broadcast_to(ops.mean(grouped, axis=-1, keepdims=True), ops.shape(grouped))
            return ops.reshape(means, broadcast)

        centred = values - group_means(ops.mean(values, axis=spatial))
        scale = ops.rsqrt(group_means(ops.mean(ops.square(centred), axis=spatial)) + self.epsilon)
        if self.scale:  # (C,) broadcasts against (B, 1, ..., 1, C)
            scale = scale * ops.cast(self.gamma, statistics)
        outputs = centred * scale
        if self.center:
            outputs = outputs + ops.cast(self.beta, statistics)
        return ops.cast(outputs, self.compute_dtype)


@keras.saving.register_keras_serializable(package="keras_retinanet")
class BackboneGroupNormalization(GroupNormalization):
    """``GroupNormalization`` that also takes BatchNormalization's call arguments.

    ``models._applications.with_group_norm`` rebuilds a keras.applications backbone with
    this layer in place of each BatchNormalization; the rebuilt graph calls it as the
    original layer was called, with ``mask`` and ``training`` (both without effect:
    every image is normalised by its own statistics, in training and at inference).

    Input and output: (B, H, W, C) feature maps, C divisible by ``groups``.
    """

    def call(self, inputs, mask=None, training=None):
        return super().call(inputs)
