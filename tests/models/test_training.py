"""End to end: a RetinaNet trained for a few dozen steps on synthetic shapes lowers its loss."""
import keras
import numpy as np
import pytest

from keras_retinanet import losses, models
from keras_retinanet.utils import synthetic
from keras_retinanet.utils.anchors import anchors_for_shape, bbox_transform
from keras_retinanet.utils.compute_overlap import compute_overlap

IMAGE_SIZE = 128
NUM_IMAGES = 4
BATCH_SIZE = 2
EPOCHS = 20  # 40 steps
POSITIVE_IOU = 0.5
NEGATIVE_IOU = 0.4


def _anchor_targets(anchors, boxes, labels, num_classes):
    """(regression (N, 5), classification (N, C + 1)) targets of one image, last column the anchor state."""
    regression = np.zeros((len(anchors), 5), np.float32)
    classification = np.zeros((len(anchors), num_classes + 1), np.float32)
    if len(boxes):
        overlaps = compute_overlap(anchors, boxes)
        best = overlaps.argmax(axis=1)
        best_iou = overlaps[np.arange(len(anchors)), best]
        positive = best_iou >= POSITIVE_IOU
        ignore = (best_iou >= NEGATIVE_IOU) & ~positive
        state = np.where(positive, 1.0, np.where(ignore, -1.0, 0.0))
        regression[:, :4] = bbox_transform(anchors, boxes[best])
        regression[:, 4] = state
        classification[positive, labels[best[positive]]] = 1.0
        classification[:, -1] = state
    return regression, classification


def _dataset(num_classes):
    rng = np.random.default_rng(11)
    anchors = anchors_for_shape((IMAGE_SIZE, IMAGE_SIZE))
    images, regressions, classifications = [], [], []
    for _ in range(NUM_IMAGES):
        image, boxes, labels = synthetic.make_image(rng, IMAGE_SIZE, IMAGE_SIZE, 2, 32, 64)
        regression, classification = _anchor_targets(anchors, boxes.astype(np.float32), labels, num_classes)
        assert (regression[:, 4] == 1).sum() > 0  # every object has a positive anchor
        images.append(image)
        regressions.append(regression)
        classifications.append(classification)
    return np.stack(images), {"regression": np.stack(regressions), "classification": np.stack(classifications)}


@pytest.mark.slow
def test_training_lowers_the_loss():
    keras.utils.set_random_seed(0)
    num_classes = len(synthetic.SHAPE_CLASSES)
    backbone = models.backbone("mobilenet128_0.25")
    model = backbone.retinanet(num_classes)
    assert not any(l.trainable for l in model.layers if isinstance(l, keras.layers.BatchNormalization))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-3, clipnorm=1.0),
        loss={"regression": losses.smooth_l1(), "classification": losses.focal()},
    )
    images, targets = _dataset(num_classes)
    images = backbone.preprocess_image(images)

    before = model.evaluate(images, targets, batch_size=BATCH_SIZE, verbose=0, return_dict=True)
    model.fit(images, targets, batch_size=BATCH_SIZE, epochs=EPOCHS, verbose=0, shuffle=True)
    after = model.evaluate(images, targets, batch_size=BATCH_SIZE, verbose=0, return_dict=True)

    # From a random backbone, 40 steps halve the focal loss (the heads learn where the
    # shapes are); box regression improves more slowly.
    assert after["classification_loss"] < 0.6 * before["classification_loss"], (before, after)
    assert after["regression_loss"] < 0.95 * before["regression_loss"], (before, after)
    assert after["loss"] < 0.8 * before["loss"], (before, after)
