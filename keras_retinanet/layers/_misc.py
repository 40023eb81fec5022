"""Small graph layers of RetinaNet: anchors, FPN upsampling, box decoding and clipping.

All boxes are absolute ``x1, y1, x2, y2`` float32. Box layers compute in float32 whatever
the dtype policy (``autocast=False``), so they stay exact under mixed precision.
"""
import keras
import numpy as np
import tensorflow as tf

from .. import backend
from ..utils import anchors as utils_anchors


# Keras 2's ``Layer.__init__`` positional parameters, which fizyr's layers passed on as ``*args``.
_KERAS2_LAYER_ARGS = ("trainable", "name", "dtype", "dynamic")


def _layer_kwargs(args, kwargs):
    """``**kwargs`` for Keras 3's keyword-only ``Layer.__init__`` from fizyr-style ``*args, **kwargs``."""
    if len(args) > len(_KERAS2_LAYER_ARGS):
        raise TypeError(f"too many positional arguments: {args!r}")
    for name, value in zip(_KERAS2_LAYER_ARGS, args):
        if name in kwargs:
            raise TypeError(f"got multiple values for argument {name!r}")
        kwargs[name] = value
    kwargs.pop("dynamic", None)  # Keras 3 has no dynamic layers; TF ops run in graphs and eagerly alike
    return kwargs


def _as_float_list(values):
    return [float(v) for v in np.asarray(values, dtype=np.float64).ravel()]


@keras.saving.register_keras_serializable(package="keras_retinanet")
class Anchors(keras.layers.Layer):
    """Anchors of one pyramid level, from the feature map's dynamic shape.

    Identical to ``utils.anchors.shift(shape, stride, generate_anchors(size, ratios, scales))``.

    Args:
        size: base anchor size of this level, in pixels.
        stride: stride of this level's feature map, in pixels.
        ratios, scales: as ``utils.anchors.generate_anchors`` (default ``AnchorParameters.default``).
        *args: Keras 2's positional layer arguments (trainable, name, dtype), as fizyr's layer took them.

    Call: features (B, H, W, C) -> anchors (B, H * W * A, 4) float32.
    """

    def __init__(self, size, stride, ratios=None, scales=None, *args, **kwargs):
        kwargs = _layer_kwargs(args, kwargs)
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.size = float(size)
        self.stride = int(stride)
        defaults = utils_anchors.AnchorParameters.default
        self.ratios = _as_float_list(defaults.ratios if ratios is None else ratios)
        self.scales = _as_float_list(defaults.scales if scales is None else scales)
        self.num_anchors = len(self.ratios) * len(self.scales)
        self._reference = utils_anchors.generate_anchors(self.size, self.ratios, self.scales)

    def call(self, inputs, **kwargs):
        features = inputs
        shape = tf.shape(features)
        anchors = backend.shift(shape[1:3], self.stride, self._reference)
        return tf.tile(anchors[None], [shape[0], 1, 1])

    def compute_output_shape(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        total = None if height is None or width is None else height * width * self.num_anchors
        return (input_shape[0], total, 4)

    def compute_output_spec(self, features):
        return keras.KerasTensor(self.compute_output_shape(features.shape), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update({"size": self.size, "stride": self.stride, "ratios": self.ratios, "scales": self.scales})
        return config


@keras.saving.register_keras_serializable(package="keras_retinanet")
class UpsampleLike(keras.layers.Layer):
    """Nearest-neighbour resize of ``source`` to the spatial size of ``target``.

    Works for any sizes (odd feature maps included), so the FPN top-down path never
    depends on the input being a multiple of the largest stride.

    Args:
        half_pixel_centers: True (default): output pixel i takes source pixel
            floor((i + 0.5) * h / H), TensorFlow 2's mapping; False: floor(i * h / H), TF 1's,
            which fizyr 1.0's models use (its .h5 files load with it). The same for 2x.

    Call: [source (B, h, w, C), target (B, H, W, _)] -> (B, H, W, C), dtype of source.
    """

    def __init__(self, half_pixel_centers=True, **kwargs):
        super().__init__(**kwargs)
        self.half_pixel_centers = bool(half_pixel_centers)

    def call(self, inputs, **kwargs):
        source, target = inputs
        size = tf.shape(target)[1:3]
        if not self.half_pixel_centers:
            return tf.raw_ops.ResizeNearestNeighbor(images=source, size=size, align_corners=False,
                                                    half_pixel_centers=False)  # fmt: skip
        return tf.image.resize(source, size, method=tf.image.ResizeMethod.NEAREST_NEIGHBOR)

    def get_config(self):
        config = super().get_config()
        config["half_pixel_centers"] = self.half_pixel_centers
        return config

    def compute_output_shape(self, input_shape):
        source, target = input_shape
        return (source[0], target[1], target[2], source[-1])


@keras.saving.register_keras_serializable(package="keras_retinanet")
class RegressBoxes(keras.layers.Layer):
    """Decode regression outputs into boxes (``backend.bbox_transform_inv``).

    Args:
        mean, std: normalisation of the regression targets (default 0 and 0.2).
        *args: Keras 2's positional layer arguments (trainable, name, dtype), as fizyr's layer took them.

    Call: [anchors (B, N, 4), regression (B, N, 4)] -> boxes (B, N, 4) float32.
    """

    def __init__(self, mean=None, std=None, *args, **kwargs):
        kwargs = _layer_kwargs(args, kwargs)
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        mean = utils_anchors.DEFAULT_REGRESSION_MEAN if mean is None else mean
        std = utils_anchors.DEFAULT_REGRESSION_STD if std is None else std
        self.mean = _as_float_list(mean)
        self.std = _as_float_list(std)
        if len(self.mean) != 4 or len(self.std) != 4:
            raise ValueError(f"RegressBoxes: mean and std need 4 values each, got {self.mean} and {self.std}")

    def call(self, inputs, **kwargs):
        anchors, regression = inputs
        return backend.bbox_transform_inv(anchors, regression, mean=self.mean, std=self.std)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(tuple(inputs[0].shape), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update({"mean": self.mean, "std": self.std})
        return config


@keras.saving.register_keras_serializable(package="keras_retinanet")
class ClipBoxes(keras.layers.Layer):
    """Clip boxes to the image: x into [0, W - margin], y into [0, H - margin].

    Args:
        margin: 0 (default: boxes reach the image's far edges) or 1 (fizyr 1.0's models,
            which clip to the last pixel's index; their .h5 files load with it).

    Call: [image (B, H, W, C), boxes (B, N, 4)] -> (B, N, 4) float32.
    """

    def __init__(self, margin=0.0, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.margin = float(margin)

    def call(self, inputs, **kwargs):
        image, boxes = inputs
        shape = tf.cast(tf.shape(image), tf.float32)
        height, width = shape[1] - self.margin, shape[2] - self.margin
        boxes = tf.cast(boxes, tf.float32)
        upper = tf.stack([width, height, width, height])
        return tf.clip_by_value(boxes, 0.0, upper)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(tuple(inputs[1].shape), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config["margin"] = self.margin
        return config
