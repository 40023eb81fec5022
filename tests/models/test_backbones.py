"""Backbones: names, validation, preprocessing, weights, freezing, and a forward pass per family."""
import keras
import numpy as np
import pytest

from keras_retinanet import models
from keras_retinanet.models import mobilenet, resnet
from keras_retinanet.utils.anchors import anchors_for_shape
from keras_retinanet.utils.model import freeze

from .conftest import FAMILY_REPRESENTATIVES, NUM_CLASSES, training_model

ADVERTISED = (
    ["resnet50", "resnet101", "resnet152", "vgg16", "vgg19", "densenet121", "densenet169", "densenet201"]
    + [f"mobilenet{rows}_{alpha}" for rows in (128, 160, 192, 224) for alpha in ("1.0", "0.75", "0.5", "0.25")]
    + [f"mobilenetv2_{alpha}" for alpha in ("0.35", "0.5", "0.75", "1.0", "1.3", "1.4")]
    + [f"mobilenetv3{size}_{alpha}" for size in ("small", "large") for alpha in ("0.75", "1.0")]
    + [f"EfficientNetB{i}" for i in range(8)]
    + ["seresnet18", "seresnet34", "seresnet50", "seresnet101", "seresnet152", "seresnext50", "seresnext101", "senet154"]
)
# Every distinct architecture not covered by the forward-pass tests (mobilenet{rows}
# variants differ only in which ImageNet weights they load; the SE backbones have test_senet.py).
OTHER_ARCHITECTURES = sorted(
    {name for name in ADVERTISED if not name.startswith(("seres", "senet"))}
    - set(FAMILY_REPRESENTATIVES)
    - {f"mobilenet{rows}_{alpha}" for rows in (160, 192, 224) for alpha in ("1.0", "0.75", "0.5", "0.25")}
)
IMAGE_SHAPE = (128, 256)


def test_every_advertised_name_validates():
    assert sorted(models.available_backbones()) == sorted(ADVERTISED)
    for name in ADVERTISED:
        meta = models.backbone(name)
        meta.validate()
        assert meta.backbone == name
        assert set(meta.custom_objects) >= {"Anchors", "FilterDetections", "PriorProbability", "_focal"}


@pytest.mark.parametrize("name", ["nope", "resnet18", "mobilenet100_1.0", "mobilenet224_2.0", "efficientnetb0"])
def test_unknown_backbone_lists_known_names(name):
    with pytest.raises(ValueError, match=f"unknown backbone '{name}'") as info:
        models.backbone(name)
    for known in ("resnet50", "mobilenet224_1.0", "vgg19", "densenet201", "EfficientNetB7"):
        assert known in str(info.value)


def test_family_class_validate_lists_allowed_names():
    with pytest.raises(ValueError, match=r"Backbone \('resnet18'\) not in allowed backbones .*resnet152"):
        resnet.ResNetBackbone("resnet18")
    with pytest.raises(ValueError, match="not in allowed backbones"):
        resnet.resnet_retinanet(2, backbone="vgg16")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("resnet50", [[[1.0 - 103.939, 2.0 - 116.779, 3.0 - 123.68]]]),
        ("vgg16", [[[1.0 - 103.939, 2.0 - 116.779, 3.0 - 123.68]]]),
        ("mobilenet224_1.0", [[[1.0 / 127.5 - 1, 2.0 / 127.5 - 1, 3.0 / 127.5 - 1]]]),
        ("densenet121", [[[1.0 / 127.5 - 1, 2.0 / 127.5 - 1, 3.0 / 127.5 - 1]]]),
        ("EfficientNetB3", [[[1.0, 2.0, 3.0]]]),
    ],
)
def test_preprocess_image_mode(name, expected):
    image = np.array([[[1, 2, 3]]], np.uint8)
    out = models.backbone(name).preprocess_image(image)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5)


@pytest.mark.parametrize(
    "name, file_name, hashed",
    [
        ("resnet101", "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5", True),
        ("mobilenet160_0.75", "mobilenet_7_5_160_tf_no_top.h5", False),
        ("mobilenetv2_1.4", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.4_224_no_top.h5", False),
        ("mobilenetv3large_0.75", "weights_mobilenet_v3_large_224_0.75_float_no_top_v2.h5", True),
        ("mobilenetv3small_1.0", "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5", True),
        ("vgg19", "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5", True),
        ("densenet169", "densenet169_weights_tf_dim_ordering_tf_kernels_notop.h5", True),
        ("EfficientNetB5", "efficientnetb5_notop.h5", True),
    ],
)
def test_download_imagenet_uses_the_keras_applications_files(monkeypatch, name, file_name, hashed):
    calls = []

    def fake_get_file(fname, origin, cache_subdir=None, file_hash=None, **kwargs):
        calls.append((fname, origin, cache_subdir, file_hash))
        return f"/cache/{fname}"

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    assert models.backbone(name).download_imagenet() == f"/cache/{file_name}"
    fname, origin, cache_subdir, file_hash = calls[0]
    assert fname == file_name and cache_subdir == "models"
    assert origin.startswith("https://storage.googleapis.com/") and origin.endswith("/" + file_name)
    assert (file_hash is not None) == hashed


def test_imagenet_hashes_match_keras_applications():
    from keras.src.applications import efficientnet as keras_effnet
    from keras.src.applications import mobilenet_v3 as keras_mobilenet_v3
    from keras.src.applications import resnet as keras_resnet

    from keras_retinanet.models import effnet

    for name in ("resnet50", "resnet101", "resnet152"):
        assert resnet._WEIGHTS_HASHES[name] == keras_resnet.WEIGHTS_HASHES[name][1]
    for i in range(8):
        assert effnet._WEIGHTS_HASHES[f"EfficientNetB{i}"] == keras_effnet.WEIGHTS_HASHES[f"b{i}"][1]
    for name, md5 in mobilenet._V3_WEIGHTS_HASHES.items():
        assert md5 == keras_mobilenet_v3.WEIGHTS_HASHES[name][1]


@pytest.fixture(scope="module")
def mobilenet_weights_file(tmp_path_factory):
    """Random weights of the bare MobileNet 0.25 in the legacy HDF5 layout of the ImageNet files."""
    h5py = pytest.importorskip("h5py")
    from keras.src.legacy.saving import legacy_h5_format

    bare = keras.applications.MobileNet(
        input_shape=(None, None, 3), alpha=0.25, include_top=False, weights=None
    )
    path = str(tmp_path_factory.mktemp("weights") / "mobilenet_2_5_128_tf_no_top.h5")
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, bare)
    return path, bare.get_layer("conv_pw_13").get_weights()[0]


def test_backbone_weights_from_a_local_file(mobilenet_weights_file):
    path, kernel = mobilenet_weights_file
    model = mobilenet.mobilenet_retinanet(2, backbone="mobilenet128_0.25", weights=path)
    np.testing.assert_array_equal(model.get_layer("conv_pw_13").get_weights()[0], kernel)


def test_imagenet_weights_go_through_download_imagenet(monkeypatch, mobilenet_weights_file):
    path, kernel = mobilenet_weights_file
    requested = []
    monkeypatch.setattr(
        mobilenet.MobileNetBackbone, "download_imagenet", lambda self: requested.append(self.backbone) or path
    )
    model = models.backbone("mobilenet224_0.25").retinanet(2, weights="imagenet")
    assert requested == ["mobilenet224_0.25"]
    np.testing.assert_array_equal(model.get_layer("conv_pw_13").get_weights()[0], kernel)


def test_fizyr_style_by_name_loading_into_the_full_model(small_model, mobilenet_weights_file):
    """fizyr's train.py loads download_imagenet() into the whole model by layer name."""
    path, kernel = mobilenet_weights_file
    head_kernel = small_model.get_layer("P3").get_weights()[0].copy()
    small_model.load_weights(path, by_name=True, skip_mismatch=True)
    np.testing.assert_array_equal(small_model.get_layer("conv_pw_13").get_weights()[0], kernel)
    np.testing.assert_array_equal(small_model.get_layer("P3").get_weights()[0], head_kernel)


def test_missing_weights_file_is_reported():
    with pytest.raises(ValueError, match="weights file not found: /nowhere/w.h5"):
        resnet.resnet_retinanet(2, weights="/nowhere/w.h5")


def test_batch_norm_frozen_by_default_and_runs_in_inference_mode(small_model):
    bn_layers = [l for l in small_model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert len(bn_layers) == 27 and not any(l.trainable for l in bn_layers)
    assert small_model.get_layer("conv_pw_13").trainable
    x = np.random.default_rng(0).uniform(-1, 1, size=(2, 128, 128, 3)).astype(np.float32)
    moving_mean = bn_layers[3].moving_mean.numpy().copy()
    train_out = small_model(x, training=True)
    infer_out = small_model(x, training=False)
    np.testing.assert_allclose(train_out[1], infer_out[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(bn_layers[3].moving_mean.numpy(), moving_mean)


def test_freeze_bn_can_be_disabled():
    model = models.backbone("mobilenet128_0.25").retinanet(2, freeze_bn=False)
    assert all(l.trainable for l in model.layers if isinstance(l, keras.layers.BatchNormalization))


@pytest.mark.parametrize("how", ["freeze_backbone", "modifier"])
def test_freeze_backbone(how, small_model):
    kwargs = {"freeze_backbone": True} if how == "freeze_backbone" else {"modifier": freeze}
    model = models.backbone("mobilenet128_0.25").retinanet(NUM_CLASSES, **kwargs)
    assert not model.get_layer("conv1").trainable and not model.get_layer("conv_pw_13").trainable
    for name in ("C5_reduced", "P3", "P7", "regression_submodel", "classification_submodel"):
        assert model.get_layer(name).trainable
    # only the FPN and the heads are left to train
    trainable = {id(w) for w in model.trainable_weights}
    fpn_and_heads = [
        w
        for name in ("C3_reduced", "C4_reduced", "C5_reduced", "P3", "P4", "P5", "P6", "P7",
                     "regression_submodel", "classification_submodel")
        for w in model.get_layer(name).trainable_weights
    ]
    assert trainable == {id(w) for w in fpn_and_heads}
    assert len(small_model.trainable_weights) > len(trainable)


@pytest.mark.parametrize("name", FAMILY_REPRESENTATIVES)
def test_forward_pass_matches_anchor_count(name):
    model = training_model(name)
    assert model.output_names == ["regression", "classification"]
    image = np.random.default_rng(1).uniform(0, 255, size=(1,) + IMAGE_SHAPE + (3,)).astype(np.float32)
    image = models.backbone(name).preprocess_image(image)
    regression, classification = model(image, training=False)
    num_anchors = len(anchors_for_shape(IMAGE_SHAPE))
    assert regression.shape == (1, num_anchors, 4)
    assert classification.shape == (1, num_anchors, NUM_CLASSES)
    assert np.isfinite(regression).all()
    assert ((np.asarray(classification) > 0) & (np.asarray(classification) < 1)).all()

    boxes, scores, labels = models.convert_model(model, score_threshold=0.0, max_detections=20)(image)
    assert boxes.shape == (1, 20, 4) and scores.shape == (1, 20) and labels.shape == (1, 20)
    assert labels.dtype == "int32"
    # an untrained head starts near the prior probability; detections are sorted and the
    # best one is the best (anchor, class) score of the training model
    assert np.median(classification) == pytest.approx(0.01, rel=0.5)
    scores = np.asarray(scores)[0]
    assert (np.diff(scores) <= 0).all()
    assert scores[0] == pytest.approx(float(np.max(classification)), rel=1e-5)
    assert (np.asarray(boxes)[..., 0] >= 0).all() and (np.asarray(boxes)[..., 2] <= IMAGE_SHAPE[1]).all()


@pytest.mark.parametrize("name", FAMILY_REPRESENTATIVES)
def test_odd_input_sizes_do_not_crash_and_padded_ones_match_the_anchors(name):
    model = training_model(name)
    image = np.zeros((1, 131, 97, 3), np.float32)
    regression, classification = model(image, training=False)
    assert regression.shape[1] == classification.shape[1] > 0
    if name.startswith("resnet"):  # ResNet rounds feature sizes up, as guess_shapes does
        assert regression.shape[1] == len(anchors_for_shape((131, 97)))
    # training pads to multiples of 32 (not of P7's 128): C3..C5 divide exactly, P6 and P7
    # round up (5x3 -> 3x2 -> 2x1 here), so every anchor target has its prediction
    regression, _ = model(np.zeros((1, 160, 96, 3), np.float32), training=False)
    assert regression.shape[1] == len(anchors_for_shape((160, 96)))


@pytest.mark.parametrize("name", ["mobilenetv3small_0.75", "mobilenetv3large_1.0"])
def test_mobilenetv3_feature_strides_with_p2(name):
    """C2..C5 come from the last block of strides 4, 8, 16 and 32 (P2 needs C2)."""
    model = models.backbone(name).retinanet(2, pyramid_levels=[2, 3, 4, 5, 6, 7], inputs=keras.Input((128, 192, 3)))
    for level in (2, 3, 4, 5, 6, 7):
        stride = 2**level
        assert tuple(model.get_layer(f"P{level}").output.shape[1:3]) == (-(-128 // stride), -(-192 // stride))
    # the application's own preprocessing is left out: images come in scaled to [-1, 1]
    assert not any(isinstance(layer, keras.layers.Rescaling) for layer in model.layers)


@pytest.mark.parametrize("name", OTHER_ARCHITECTURES)
def test_every_architecture_builds_training_and_inference_models(name):
    model = models.backbone(name).retinanet(num_classes=2, inputs=keras.Input((160, 96, 3)))  # multiples of 32
    num_anchors = len(anchors_for_shape((160, 96)))
    assert [tuple(o.shape) for o in model.outputs] == [(None, num_anchors, 4), (None, num_anchors, 2)]
    inference = models.convert_model(model, max_detections=10)
    assert [tuple(o.shape) for o in inference.outputs] == [(None, 10, 4), (None, 10), (None, 10)]


def test_densenet_module_lists_its_backbones_as_fizyr():
    from keras_retinanet.models import densenet

    assert {name: blocks for name, (blocks, _) in densenet.allowed_backbones.items()} == {
        "densenet121": [6, 12, 24, 16], "densenet169": [6, 12, 32, 32], "densenet201": [6, 12, 48, 32]}  # fmt: skip
    assert densenet.allowed_backbones["densenet169"][1] is keras.applications.DenseNet169
    assert densenet.DenseNetBackbone.allowed_backbones == ("densenet121", "densenet169", "densenet201")


@pytest.mark.parametrize("channels, groups", [(8, 8), (32, 32), (40, 20), (112, 28), (1024, 32), (7, 7), (1, 1)])
def test_group_norm_groups_divide_the_channels(channels, groups):
    from keras_retinanet.models._applications import group_norm_groups

    assert group_norm_groups(channels) == groups


@pytest.mark.parametrize("name", ["mobilenet128_0.25", "mobilenetv2_0.35", "resnet50", "EfficientNetB0"])
def test_group_norm_backbone_normalises_each_image_by_itself(name):
    from keras_retinanet.layers import BackboneGroupNormalization
    from keras_retinanet.models._applications import group_norm_groups
    from keras_retinanet.models.retinanet import architecture_spec

    plain = training_model(name)
    batch_norms = [layer for layer in plain.layers if isinstance(layer, keras.layers.BatchNormalization)]
    model = models.backbone(name).retinanet(NUM_CLASSES, backbone_norm="group")
    group_norms = [layer for layer in model.layers if isinstance(layer, BackboneGroupNormalization)]
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert [layer.name for layer in group_norms] == [f"{layer.name}_gn" for layer in batch_norms]
    assert all(layer.groups == group_norm_groups(int(layer.input.shape[-1])) for layer in group_norms)
    assert model.spec.backbone_norm == "group" and plain.spec.backbone_norm == "batch"
    assert architecture_spec(model).backbone_norm == "group" and architecture_spec(plain).backbone_norm == "batch"
    assert model.count_params() == plain.count_params() - sum(2 * int(l.input.shape[-1]) for l in batch_norms)

    if any(isinstance(layer, keras.layers.Dropout) for layer in model.layers):
        return  # EfficientNet: its dropout makes two training-mode calls differ anyway
    images = np.random.default_rng(0).uniform(-1, 1, size=(2, 96, 128, 3)).astype(np.float32)
    images[1] = images[1] * 3 + 1  # another brightness and contrast
    together = model(images, training=True)
    alone = model(images[:1], training=True)
    inference = model(images[:1], training=False)
    for both, one, infer in zip(together, alone, inference):
        np.testing.assert_allclose(both[:1], one, rtol=1e-4, atol=1e-5)  # the other image changes nothing
        np.testing.assert_allclose(one, infer, rtol=1e-5, atol=1e-6)  # training and inference agree
    # BatchNormalization in training: the other image of the batch changes this one's outputs
    group_change = np.abs(np.asarray(together[0][:1]) - np.asarray(alone[0])).max()
    trainable_bn = models.backbone(name).retinanet(NUM_CLASSES, freeze_bn=False)
    pair = trainable_bn(images, training=True)[0][:1]
    single = trainable_bn(images[:1], training=True)[0]
    assert np.abs(np.asarray(pair) - np.asarray(single)).max() > 100 * max(group_change, 1e-7)


def test_group_norm_backbone_keeps_the_other_weights_and_round_trips(mobilenet_weights_file, tmp_path):
    path, kernel = mobilenet_weights_file
    model = mobilenet.mobilenet_retinanet(2, backbone="mobilenet128_0.25", weights=path, backbone_norm="group")
    np.testing.assert_array_equal(model.get_layer("conv_pw_13").get_weights()[0], kernel)
    assert model.get_layer("conv_pw_13_bn_gn").groups == 32
    model.save(tmp_path / "gn.keras")
    loaded = keras.saving.load_model(tmp_path / "gn.keras")  # no custom_objects
    images = np.random.default_rng(1).uniform(-1, 1, size=(1, 64, 64, 3)).astype(np.float32)
    for a, b in zip(model.predict_on_batch(images), loaded.predict_on_batch(images)):
        np.testing.assert_array_equal(a, b)
    assert loaded.spec.backbone_norm == "group"


def test_unknown_backbone_norm_is_refused():
    with pytest.raises(ValueError, match=r"unknown backbone_norm 'layer'; expected one of \('batch', 'group'\)"):
        models.backbone("mobilenet128_0.25").retinanet(2, backbone_norm="layer")
