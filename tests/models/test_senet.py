"""SE backbones: every architecture builds, the small ones run, train and save; weights from local files only."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_retinanet import models
from keras_retinanet.models import senet
from keras_retinanet.utils.anchors import anchors_for_shape

NAMES = ["seresnet18", "seresnet34", "seresnet50", "seresnet101", "seresnet152", "seresnext50", "seresnext101",
         "senet154"]  # fmt: skip
# Parameters of the bare backbones (no classifier; BatchNormalization's moving statistics included):
# the published counts of these architectures less their 1000-class layer.
PARAMETERS = {"seresnet18": 11_275_969, "seresnet34": 21_463_669, "seresnet50": 26_092_144,
              "seresnet101": 47_383_216, "seresnet152": 64_924_272, "seresnext50": 25_579_120,
              "seresnext101": 47_044_272, "senet154": 113_287_536}  # fmt: skip
SHAPE = (96, 128)


def test_names_preprocessing_and_validation():
    assert senet.allowed_backbones == tuple(NAMES) and senet.SeBackbone.allowed_backbones == tuple(NAMES)
    assert set(NAMES) <= set(models.available_backbones())
    image = np.array([[[0, 128, 255]]], np.uint8)
    np.testing.assert_array_equal(models.backbone("seresnet18").preprocess_image(image), image.astype(np.float32))
    expected = (np.array([0, 128, 255]) / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(models.backbone("seresnext50").preprocess_image(image)[0, 0], expected, rtol=1e-5)
    assert models.backbone("senet154").spec().preprocess_mode == "torch"
    assert models.backbone("seresnet34").spec().preprocess_mode == "none"
    with pytest.raises(ValueError, match=r"Backbone \('seresnet20'\) not in allowed backbones"):
        senet.SeBackbone("seresnet20")


@pytest.mark.parametrize("name", NAMES)
def test_every_architecture_builds_with_its_size_and_strides(name):
    backbone = senet.se_backbone(name, keras.Input((128, 128, 3)))
    assert backbone.count_params() == PARAMETERS[name]
    assert [tuple(o.shape[1:3]) for o in backbone.outputs] == [(32, 32), (16, 16), (8, 8), (4, 4)]  # strides 4..32
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in backbone.layers)
    if name != "senet154":  # the largest: construction only (its training model adds nothing new)
        model = models.backbone(name).retinanet(num_classes=2, inputs=keras.Input((128, 128, 3)))
        num_anchors = len(anchors_for_shape((128, 128)))
        assert [tuple(o.shape) for o in model.outputs] == [(None, num_anchors, 4), (None, num_anchors, 2)]


@pytest.mark.parametrize("name", ["seresnet18", "seresnext50"])
def test_forward_pass_and_a_gradient_through_grouped_convolutions(name):
    meta = models.backbone(name)
    model = meta.retinanet(num_classes=3, weights=None, freeze_bn=False)
    image = np.random.default_rng(0).uniform(0, 255, (1,) + SHAPE + (3,))
    inputs = meta.preprocess_image(image)
    regression, classification = model(inputs, training=False)
    assert regression.shape == (1, len(anchors_for_shape(SHAPE)), 4) and classification.shape[-1] == 3
    assert np.isfinite(regression).all()  # (random weights: untrained BN statistics saturate some scores to 0 or 1)
    assert ((np.asarray(classification) >= 0) & (np.asarray(classification) <= 1)).all()
    conv = model.get_layer("stage2_unit1_conv2" if name == "seresnext50" else "stage2_unit1_conv1")
    assert conv.groups == (32 if name == "seresnext50" else 1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(inputs, training=True)[1])
    gradient = tape.gradient(loss, conv.kernel)
    assert gradient.shape == conv.kernel.shape and np.isfinite(gradient).all() and np.abs(gradient).sum() > 0


def test_a_keras_file_round_trips_without_custom_objects(tmp_path):
    model = models.backbone("seresnet18").retinanet(num_classes=2)
    path = tmp_path / "se.keras"
    model.save(str(path))
    loaded = keras.models.load_model(str(path))  # safe mode: no Lambda, no custom object
    image = np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    for ours, theirs in zip(model.predict(image, verbose=0), loaded.predict(image, verbose=0)):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert models.model_spec(loaded).backbone == "seresnet18"


def test_weights_come_from_a_local_file_only(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    expected = tmp_path / "keras" / "models" / "seresnet18_notop.weights.h5"
    with pytest.raises(FileNotFoundError) as error:
        models.backbone("seresnet18").retinanet(num_classes=2, weights="imagenet")
    assert str(error.value) == (
        f"no ImageNet weights for seresnet18: they cannot be downloaded; put a Keras 3 weights file of the bare "
        f"backbone at {expected}, give a weights file, or train from scratch (--no-weights)"
    )
    with pytest.raises(FileNotFoundError, match="backbone weights file not found: nowhere.weights.h5"):
        senet.seresnet18_retinanet(2, weights="nowhere.weights.h5")

    source = senet.se_backbone("seresnet18")
    expected.parent.mkdir(parents=True)
    source.save_weights(str(expected))
    assert models.backbone("seresnet18").download_imagenet() == str(expected)
    model = senet.seresnet18_retinanet(2, weights="imagenet")
    for name in ("conv0", "stage4_unit2_conv2", "stage3_unit1_se_expand"):
        for ours, theirs in zip(model.get_layer(name).get_weights(), source.get_layer(name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)
