"""RetinaNet losses: focal loss for classification, smooth L1 or GIoU for box regression.

Both take ``y_true`` with the anchor state in its last column:

- ``-1``: ignored (IoU between the negative and positive thresholds), contributes nothing;
- ``0``: negative (background);
- ``1``: positive (matched to a ground-truth box).

Each loss returns one scalar per batch: the sum over anchors divided by
``max(1, number of positive anchors in the batch)``, computed in float32 (also under a
mixed-precision policy). Under ``tf.distribute`` the positives are counted over the whole
global batch (all replicas), so the replicas' losses and gradients add up to exactly those
of one device on the same batch.
"""
import keras
import tensorflow as tf

from .constants import ANCHOR_IGNORE, ANCHOR_NEGATIVE, ANCHOR_POSITIVE, BOX_LOSSES

IGNORE_STATE = float(ANCHOR_IGNORE)
NEGATIVE_STATE = float(ANCHOR_NEGATIVE)
POSITIVE_STATE = float(ANCHOR_POSITIVE)

# Probabilities are clipped to [EPSILON, 1 - EPSILON] before taking logarithms.
EPSILON = 1e-7


def _split_targets(y_true, y_pred):
    """(targets, anchor_state, y_pred) as float32 from ``y_true`` (B, N, K + 1) and ``y_pred`` (B, N, K)."""
    y_true = tf.cast(y_true, tf.float32)
    y_pred = tf.cast(y_pred, tf.float32)
    return y_true[..., :-1], y_true[..., -1], y_pred


def _normalise(total, anchor_state):
    """``total / max(1, #positives)``, with the positives of the whole global batch.

    Under tf.distribute each replica divides its own sum by the positives of all replicas
    (an all-reduce), so the replicas' losses add up to exactly the single-device loss.
    """
    num_positive = tf.reduce_sum(tf.cast(tf.equal(anchor_state, POSITIVE_STATE), tf.float32))
    replica_context = tf.distribute.get_replica_context()
    if replica_context is not None and replica_context.num_replicas_in_sync > 1:
        num_positive = replica_context.all_reduce(tf.distribute.ReduceOp.SUM, num_positive)
    return total / tf.maximum(1.0, num_positive)


@keras.saving.register_keras_serializable(package="keras_retinanet")
class FocalLoss(keras.losses.Loss):
    """Focal loss (Lin et al. 2017) over all anchors that are not ignored.

    ``FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)`` per class, where for a positive label
    (``label > cutoff``) ``p_t = p`` and ``alpha_t = alpha``, otherwise ``p_t = 1 - p`` and
    ``alpha_t = 1 - alpha``.

    Call with ``y_true`` (B, N, C + 1): one-hot labels then anchor state, and ``y_pred``
    (B, N, C): sigmoid probabilities. Returns a float32 scalar.
    """

    def __init__(self, alpha=0.25, gamma=2.0, cutoff=0.5, name="focal", reduction="sum", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.alpha = float(alpha)
        self.gamma = float(gamma)
        self.cutoff = float(cutoff)

    def call(self, y_true, y_pred):
        labels, anchor_state, probabilities = _split_targets(y_true, y_pred)
        probabilities = tf.clip_by_value(probabilities, EPSILON, 1.0 - EPSILON)
        positive = labels > self.cutoff

        alpha_factor = tf.where(positive, self.alpha, 1.0 - self.alpha)
        focal_weight = tf.where(positive, 1.0 - probabilities, probabilities)
        focal_weight = alpha_factor * tf.pow(focal_weight, self.gamma)
        cross_entropy = -(
            labels * tf.math.log(probabilities) + (1.0 - labels) * tf.math.log(1.0 - probabilities)
        )
        per_anchor = tf.reduce_sum(focal_weight * cross_entropy, axis=-1)
        not_ignored = tf.cast(tf.not_equal(anchor_state, IGNORE_STATE), tf.float32)
        return _normalise(tf.reduce_sum(per_anchor * not_ignored), anchor_state)

    def get_config(self):
        config = super().get_config()
        config.update({"alpha": self.alpha, "gamma": self.gamma, "cutoff": self.cutoff})
        return config


@keras.saving.register_keras_serializable(package="keras_retinanet")
class SmoothL1Loss(keras.losses.Loss):
    """Smooth L1 (Huber) loss on the regression of positive anchors.

    Per coordinate, with ``d = |y_pred - target|``: ``0.5 * sigma^2 * d^2`` if
    ``d < 1 / sigma^2``, else ``d - 0.5 / sigma^2``.

    Call with ``y_true`` (B, N, 4 + 1): regression targets then anchor state, and ``y_pred``
    (B, N, 4). Returns a float32 scalar.
    """

    def __init__(self, sigma=3.0, name="smooth_l1", reduction="sum", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.sigma = float(sigma)

    def call(self, y_true, y_pred):
        targets, anchor_state, regression = _split_targets(y_true, y_pred)
        sigma_squared = self.sigma**2
        difference = tf.abs(regression - targets)
        per_value = tf.where(
            difference < 1.0 / sigma_squared,
            0.5 * sigma_squared * tf.square(difference),
            difference - 0.5 / sigma_squared,
        )
        per_anchor = tf.reduce_sum(per_value, axis=-1)
        positive = tf.cast(tf.equal(anchor_state, POSITIVE_STATE), tf.float32)
        return _normalise(tf.reduce_sum(per_anchor * positive), anchor_state)

    def get_config(self):
        config = super().get_config()
        config.update({"sigma": self.sigma})
        return config


@keras.saving.register_keras_serializable(package="keras_retinanet")
class GIoULoss(keras.losses.Loss):
    """Generalised IoU loss (Rezatofighi et al. 2019) on the regression of positive anchors.

    ``1 - GIoU(predicted box, target box)`` per positive anchor. Both boxes are decoded from
    their normalised corner offsets (``utils.anchors.bbox_transform``, mean 0 and ``std``)
    against the same unit anchor: IoU and GIoU do not change when both boxes are scaled
    and shifted along an axis, so no anchors are needed and the value equals the GIoU of
    the boxes in image pixels. Unlike smooth L1 on offsets, it weighs a box's position and
    size by what they do to the overlap, the same for small and large boxes.

    Call with ``y_true`` (B, N, 4 + 1): regression targets then anchor state, and ``y_pred``
    (B, N, 4). Returns a float32 scalar.
    """

    def __init__(self, std=0.2, name="giou", reduction="sum", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.std = float(std)

    def _boxes(self, offsets):
        unit = tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32)
        return unit + offsets * self.std

    def call(self, y_true, y_pred):
        targets, anchor_state, regression = _split_targets(y_true, y_pred)
        predicted, target = self._boxes(regression), self._boxes(targets)
        area_p = tf.nn.relu(predicted[..., 2] - predicted[..., 0]) * tf.nn.relu(predicted[..., 3] - predicted[..., 1])
        area_t = tf.nn.relu(target[..., 2] - target[..., 0]) * tf.nn.relu(target[..., 3] - target[..., 1])
        lower = tf.maximum(predicted[..., :2], target[..., :2])
        upper = tf.minimum(predicted[..., 2:], target[..., 2:])
        intersection = tf.reduce_prod(tf.nn.relu(upper - lower), axis=-1)
        union = area_p + area_t - intersection
        enclosing = tf.reduce_prod(
            tf.nn.relu(tf.maximum(predicted[..., 2:], target[..., 2:]) - tf.minimum(predicted[..., :2], target[..., :2])),
            axis=-1,
        )
        iou = intersection / tf.maximum(union, 1e-7)
        giou = iou - (enclosing - union) / tf.maximum(enclosing, 1e-7)
        positive = tf.cast(tf.equal(anchor_state, POSITIVE_STATE), tf.float32)
        return _normalise(tf.reduce_sum((1.0 - giou) * positive), anchor_state)

    def get_config(self):
        config = super().get_config()
        config.update({"std": self.std})
        return config


def box_loss(name="smooth_l1"):
    """The regression loss called ``name``: 'smooth_l1' (the paper's) or 'giou'."""
    if name == "smooth_l1":
        return smooth_l1()
    if name == "giou":
        return GIoULoss()
    raise ValueError(f"unknown box loss {name!r}; expected one of {BOX_LOSSES}")


def focal(alpha=0.25, gamma=2.0, cutoff=0.5):
    """Focal loss callable for the ``classification`` output (see ``FocalLoss``)."""
    return FocalLoss(alpha=alpha, gamma=gamma, cutoff=cutoff)


def smooth_l1(sigma=3.0):
    """Smooth L1 loss callable for the ``regression`` output (see ``SmoothL1Loss``)."""
    return SmoothL1Loss(sigma=sigma)
