"""Graph versions of the NumPy box helpers in ``utils.anchors`` (same conventions, TF ops).

Boxes are absolute ``x1, y1, x2, y2`` float32 throughout.
"""
import tensorflow as tf

from ..utils.anchors import DEFAULT_REGRESSION_MEAN, DEFAULT_REGRESSION_STD


def bbox_transform_inv(boxes, deltas, mean=None, std=None):
    """Apply regression ``deltas`` to ``boxes``: the inverse of ``utils.anchors.bbox_transform``.

    Args:
        boxes: (..., N, 4) anchors, x1, y1, x2, y2.
        deltas: (..., N, 4) normalised corner offsets as predicted by the regression submodel.
        mean, std: normalisation used for the targets (default 0 and 0.2 for every coordinate).

    Returns:
        (..., N, 4) float32 boxes ``anchor + (delta * std + mean) * (w, h, w, h)``.
    """
    mean = tf.constant(DEFAULT_REGRESSION_MEAN if mean is None else mean, dtype=tf.float32)
    std = tf.constant(DEFAULT_REGRESSION_STD if std is None else std, dtype=tf.float32)
    boxes = tf.cast(boxes, tf.float32)
    deltas = tf.cast(deltas, tf.float32)
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    scale = tf.stack([widths, heights, widths, heights], axis=-1)
    return boxes + (deltas * std + mean) * scale


def shift(shape, stride, anchors):
    """Place ``anchors`` at the centre of every cell of a feature map (as ``utils.anchors.shift``).

    Args:
        shape: (H, W) of the feature map, int tensor or tuple (may be dynamic).
        stride: its stride in pixels.
        anchors: (A, 4) reference anchors centred on (0, 0).

    Returns:
        (H * W * A, 4) float32 anchors, row-major over cells, then anchor.
    """
    shape = tf.cast(shape, tf.int32)
    stride = tf.cast(stride, tf.float32)
    shift_x = (tf.cast(tf.range(shape[1]), tf.float32) + 0.5) * stride
    shift_y = (tf.cast(tf.range(shape[0]), tf.float32) + 0.5) * stride
    shift_x, shift_y = tf.meshgrid(shift_x, shift_y)
    shift_x = tf.reshape(shift_x, [-1])
    shift_y = tf.reshape(shift_y, [-1])
    shifts = tf.stack([shift_x, shift_y, shift_x, shift_y], axis=1)
    anchors = tf.cast(anchors, tf.float32)
    all_anchors = shifts[:, None, :] + anchors[None, :, :]
    return tf.reshape(all_anchors, [-1, 4])
