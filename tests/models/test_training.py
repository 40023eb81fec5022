"""End to end: a RetinaNet trained for a few dozen steps on synthetic shapes lowers its loss."""
import keras
import numpy as np
import pytest

from keras_retinanet import losses, models
from keras_retinanet.utils import synthetic
from keras_retinanet.utils.anchors import anchor_targets_bbox, anchors_for_shape

IMAGE_SIZE = 128
NUM_IMAGES = 4
BATCH_SIZE = 2
EPOCHS = 20  # 40 steps


def _dataset(num_classes):
    """Images (B, H, W, 3) uint8 and their anchor targets from utils.anchors.anchor_targets_bbox."""
    rng = np.random.default_rng(11)
    images, annotations = [], []
    for _ in range(NUM_IMAGES):
        image, boxes, labels = synthetic.make_image(rng, IMAGE_SIZE, IMAGE_SIZE, 2, 32, 64)
        images.append(image)
        annotations.append({"bboxes": boxes.astype(np.float64), "labels": labels})
    anchors = anchors_for_shape((IMAGE_SIZE, IMAGE_SIZE))
    regression, classification = anchor_targets_bbox(anchors, images, annotations, num_classes)
    assert ((regression[:, :, -1] == 1).sum(axis=1) > 0).all()  # every image has positive anchors
    return np.stack(images), {"regression": regression, "classification": classification}


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
