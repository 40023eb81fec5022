"""RetinaNet builders: pyramid levels, anchor parameters, inference model, saving and loading."""
import keras
import numpy as np
import pytest

from keras_retinanet import losses, models
from keras_retinanet.errors import SpecConflictError
from keras_retinanet.models import retinanet
from keras_retinanet.utils.anchors import AnchorParameters, anchors_for_shape

from .conftest import NUM_CLASSES

IMAGE_SHAPE = (128, 256)


def _image(seed=0, shape=IMAGE_SHAPE):
    return np.random.default_rng(seed).uniform(-1, 1, size=(1,) + shape + (3,)).astype(np.float32)


def _decode_numpy(anchors, regression, image_shape, std=0.2):
    widths = anchors[:, 2] - anchors[:, 0]
    heights = anchors[:, 3] - anchors[:, 1]
    boxes = anchors + regression * std * np.stack([widths, heights, widths, heights], axis=1)
    return np.clip(boxes, 0, [image_shape[1], image_shape[0]] * 2)


def test_inference_model_decodes_the_training_outputs(small_model):
    image = _image()
    regression, classification = (np.asarray(o)[0] for o in small_model(image))
    inference = models.convert_model(small_model, nms=False, class_specific_filter=False, score_threshold=0.0,
                                     max_detections=5)
    assert inference.name == "retinanet-bbox"
    boxes, scores, labels = (np.asarray(o)[0] for o in inference(image))
    best = np.argsort(-classification.max(axis=1), kind="stable")[:5]
    expected_boxes = _decode_numpy(anchors_for_shape(IMAGE_SHAPE), regression, IMAGE_SHAPE)[best]
    np.testing.assert_allclose(scores, classification.max(axis=1)[best], rtol=1e-6)
    np.testing.assert_array_equal(labels, classification.argmax(axis=1)[best])
    np.testing.assert_allclose(boxes, expected_boxes, rtol=1e-5, atol=1e-3)


def test_inference_model_options_reach_filter_detections(small_model):
    inference = models.convert_model(
        small_model, nms=False, class_specific_filter=False, nms_threshold=0.3, score_threshold=0.2,
        max_detections=17, pre_nms_top_k=99,
    )
    config = inference.get_layer("filtered_detections").get_config()
    assert (config["nms"], config["class_specific_filter"]) == (False, False)
    assert (config["nms_threshold"], config["score_threshold"]) == (0.3, 0.2)
    assert (config["max_detections"], config["pre_nms_top_k"]) == (17, 99)


def test_not_a_training_model_is_rejected(small_model, capsys):
    inference = models.convert_model(small_model)
    with pytest.raises(ValueError, match="Input is not a training model") as info:
        models.assert_training_model(inference)
    assert isinstance(info.value, AssertionError)  # as fizyr's assert raised
    with pytest.raises(ValueError, match="not a training model"):
        models.convert_model(inference)
    # the library raises; it does not print and exit for the tools
    with pytest.raises(models.NotATrainingModelError, match="Input is not a training model"):
        models.check_training_model(inference)
    assert capsys.readouterr().err == ""
    models.check_training_model(small_model)  # no error


@pytest.mark.parametrize(
    "levels, anchor_params",
    [
        ([3, 4, 5], None),
        (
            [2, 3, 4, 5, 6, 7],
            AnchorParameters(sizes=[16, 32, 64, 128, 256, 512], strides=[4, 8, 16, 32, 64, 128],
                             ratios=[0.5, 1, 2], scales=[1.0, 1.5]),
        ),
    ],
)
def test_pyramid_levels_and_anchor_parameters(levels, anchor_params):
    params = anchor_params or AnchorParameters.default
    model = models.backbone("resnet50").retinanet(
        NUM_CLASSES, pyramid_levels=levels, num_anchors=params.num_anchors()
    )
    assert [l for l in range(2, 8) if any(layer.name == f"P{l}" for layer in model.layers)] == levels
    expected = anchors_for_shape(IMAGE_SHAPE, pyramid_levels=levels, anchor_params=params)
    regression, classification = model(_image())
    assert regression.shape == (1, len(expected), 4)
    assert classification.shape == (1, len(expected), NUM_CLASSES)

    inference = models.convert_model(model, anchor_params=anchor_params, pyramid_levels=levels,
                                     nms=False, score_threshold=0.0, max_detections=3)
    # anchors in the graph are exactly those of anchors_for_shape for these levels
    anchors = keras.Model(inference.input, inference.get_layer("anchors").output)(_image())
    np.testing.assert_allclose(np.asarray(anchors)[0], expected, atol=1e-4)
    # levels are found from the model's P<l> layers when not given
    anchors = models.convert_model(model, anchor_params=anchor_params).get_layer("anchors").output
    assert anchors.shape[-1] == 4


def test_anchor_parameter_mismatch_is_reported(small_model):
    two_anchors = AnchorParameters(sizes=[32, 64, 128, 256, 512], strides=[8, 16, 32, 64, 128],
                                   ratios=[1.0, 2.0], scales=[1.0])
    with pytest.raises(ValueError, match="predicts 9 anchors per location but the anchor parameters give 2"):
        models.convert_model(small_model, anchor_params=two_anchors)
    # the model's detector spec records its levels: others are a conflict naming both
    with pytest.raises(SpecConflictError, match=r"pyramid_levels \(pyramid levels 2 3\) contradicts the model: it was "
                                                r"made with pyramid levels 3 4 5 6 7"):
        models.convert_model(small_model, pyramid_levels=[2, 3])
    # without a spec, the levels are checked against the model's P<l> layers
    no_spec = keras.Model(small_model.inputs, small_model.outputs)
    p2_anchors = AnchorParameters(sizes=[16, 32], strides=[4, 8], ratios=[0.5, 1, 2], scales=[1, 1.26, 1.59])
    with pytest.raises(ValueError, match="pyramid levels \\[2, 3\\] do not match the model"):
        models.convert_model(no_spec, pyramid_levels=[2, 3], anchor_params=p2_anchors)
    # anchors whose strides are not the levels' cover only part of the image: refused
    with pytest.raises(ValueError, match="pyramid levels 2 3 have feature-map strides 4 8 px, but the anchor strides "
                                         "are 8 16: the anchors would not cover the image"):
        models.convert_model(no_spec, pyramid_levels=[2, 3])
    with pytest.raises(ValueError, match="5 sizes for 6 pyramid levels"):
        model = models.backbone("resnet50").retinanet(NUM_CLASSES, pyramid_levels=[2, 3, 4, 5, 6, 7])
        models.convert_model(model)


def test_bad_pyramid_levels_and_missing_backbone_layers():
    with pytest.raises(ValueError, match="pyramid levels \\[1, 3\\] are invalid"):
        models.backbone("mobilenet128_0.25").retinanet(2, pyramid_levels=[1, 3])
    inputs = keras.Input((None, None, 3))
    c3 = keras.layers.Conv2D(8, 3, strides=8, padding="same")(inputs)
    c4 = keras.layers.Conv2D(8, 3, strides=2, padding="same")(c3)
    c5 = keras.layers.Conv2D(8, 3, strides=2, padding="same")(c4)
    with pytest.raises(ValueError, match="does not provide \\[.C2.\\]"):
        retinanet.retinanet(inputs, [c3, c4, c5], 2, pyramid_levels=[2, 3])
    # a plain list [C3, C4, C5] works as fizyr's backbone_layers did
    model = retinanet.retinanet(inputs, [c3, c4, c5], 2)
    assert model(np.zeros((1, 64, 64, 3), np.float32))[0].shape == (1, len(anchors_for_shape((64, 64))), 4)


def test_custom_submodels_and_extra_outputs():
    inputs = keras.Input((None, None, 3))
    c3 = keras.layers.Conv2D(8, 3, strides=8, padding="same")(inputs)
    c4 = keras.layers.Conv2D(8, 3, strides=2, padding="same")(c3)
    c5 = keras.layers.Conv2D(8, 3, strides=2, padding="same")(c4)
    feature = keras.Input((None, None, 256))
    extra = keras.Model(feature, keras.layers.Reshape((-1, 1))(keras.layers.Conv2D(9, 1)(feature)), name="extra_submodel")
    submodels = retinanet.default_submodels(2, 9) + [("extra", extra)]
    model = retinanet.retinanet(inputs, {"C3": c3, "C4": c4, "C5": c5}, 2, submodels=submodels)
    assert model.output_names == ["regression", "classification", "extra"]
    outputs = models.convert_model(model, max_detections=4, score_threshold=0.0)(np.ones((1, 64, 64, 3), np.float32))
    assert [tuple(o.shape) for o in outputs] == [(1, 4, 4), (1, 4), (1, 4), (1, 4, 1)]


def test_default_submodels_layout():
    regression, classification = (m for _, m in retinanet.default_submodels(5, 9))
    convs = [l for l in classification.layers if isinstance(l, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [256, 256, 256, 256, 45]
    assert all(c.kernel_size == (3, 3) for c in convs)
    bias = convs[-1].get_weights()[1]
    np.testing.assert_allclose(1 / (1 + np.exp(-bias)), 0.01, rtol=1e-5)
    kernel = convs[0].get_weights()[0]
    assert abs(kernel.std() - 0.01) < 0.001 and abs(kernel.mean()) < 0.001
    assert [l.filters for l in regression.layers if isinstance(l, keras.layers.Conv2D)][-1] == 36
    assert classification.output.shape == (None, None, 5) and regression.output.shape == (None, None, 4)


def test_feature_size_and_submodel_depth_shrink_the_fpn_and_heads():
    inputs = keras.Input((None, None, 3))
    c3 = keras.layers.Conv2D(8, 3, strides=8, padding="same")(inputs)
    c4 = keras.layers.Conv2D(8, 3, strides=2, padding="same")(c3)
    c5 = keras.layers.Conv2D(8, 3, strides=2, padding="same")(c4)
    layers = {"C3": c3, "C4": c4, "C5": c5}
    small = retinanet.retinanet(inputs, layers, 3, feature_size=32, submodel_depth=2)
    for level in (3, 4, 5, 6, 7):
        assert small.get_layer(f"P{level}").output.shape[-1] == 32
    classification = small.get_layer("classification_submodel")
    assert [l.filters for l in classification.layers if isinstance(l, keras.layers.Conv2D)] == [32, 32, 27]
    regression = small.get_layer("regression_submodel")
    assert [l.filters for l in regression.layers if isinstance(l, keras.layers.Conv2D)] == [32, 32, 36]

    with pytest.raises(ValueError, match="feature_size must be >= 1, got 0"):
        retinanet.retinanet(inputs, layers, 3, feature_size=0)
    with pytest.raises(ValueError, match="submodel_depth must be >= 0, got -1"):
        retinanet.retinanet(inputs, layers, 3, submodel_depth=-1)

    full = retinanet.retinanet(inputs, layers, 3, submodel_depth=None)
    assert full.get_layer("P3").output.shape[-1] == 256
    assert small.count_params() < full.count_params() / 20
    # same anchors and outputs, and the inference model builds on it
    image = np.ones((1, 64, 64, 3), np.float32)
    n = len(anchors_for_shape((64, 64)))
    assert [tuple(o.shape) for o in small(image)] == [(1, n, 4), (1, n, 3)]
    boxes = models.convert_model(small, max_detections=5, score_threshold=0.0)(image)[0]
    assert tuple(boxes.shape) == (1, 5, 4)


def test_group_norm_heads_normalise_every_hidden_layer_and_round_trip(tmp_path):
    inputs = keras.Input((None, None, 3))
    c3 = keras.layers.Conv2D(8, 3, strides=8, padding="same")(inputs)
    c4 = keras.layers.Conv2D(8, 3, strides=2, padding="same")(c3)
    c5 = keras.layers.Conv2D(8, 3, strides=2, padding="same")(c4)
    layers = {"C3": c3, "C4": c4, "C5": c5}
    model = retinanet.retinanet(inputs, layers, 3, feature_size=64, submodel_depth=2, head_norm="group",
                                spec=retinanet.DetectorSpec(backbone="x"))
    for head in ("classification_submodel", "regression_submodel"):
        norms = [l for l in model.get_layer(head).layers if isinstance(l, keras.layers.GroupNormalization)]
        assert [(n.groups, n.name) for n in norms] == [
            (32, f"pyramid_{head.split('_')[0]}_{i}_gn") for i in range(2)
        ]
    assert model.spec.head_norm == "group" and retinanet.architecture_spec(model).head_norm == "group"
    plain = retinanet.retinanet(inputs, layers, 3, feature_size=64, submodel_depth=2, spec=retinanet.DetectorSpec())
    assert plain.spec.head_norm == "none" and retinanet.architecture_spec(plain).head_norm == "none"
    # at initialisation each group of 2 channels has zero mean and unit variance, whatever the input scale
    head = model.get_layer("classification_submodel")
    hidden = keras.Model(head.inputs, head.get_layer("pyramid_classification_1_gn").output)
    features = np.random.default_rng(0).normal(0, 300, (1, 8, 8, 64)).astype(np.float32)
    groups = np.asarray(hidden(features)).reshape(1, 8, 8, 32, 2)
    np.testing.assert_allclose(groups.mean(axis=(1, 2, 4)), 0, atol=1e-4)
    np.testing.assert_allclose(groups.std(axis=(1, 2, 4)), 1, atol=1e-3)
    image = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    path = str(tmp_path / "gn.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    for a, b in zip(model(image), reloaded(image)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert reloaded.spec.head_norm == "group"
    with pytest.raises(ValueError, match="head norm must be one of 'none', 'group', got 'batch'"):
        retinanet.retinanet(inputs, layers, 3, head_norm="batch")


def test_save_and_reload_with_plain_keras(small_model, tmp_path):
    small_model.compile(
        optimizer=keras.optimizers.Adam(1e-5),
        loss={"regression": losses.smooth_l1(), "classification": losses.focal()},
    )
    path = str(tmp_path / "snapshot.keras")
    small_model.save(path)
    reloaded = keras.models.load_model(path)
    image = _image(3)
    for a, b in zip(small_model(image), reloaded(image)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert isinstance(reloaded.loss["classification"], losses.FocalLoss)
    assert isinstance(reloaded.loss["regression"], losses.SmoothL1Loss)

    # fizyr-style: models.load_model of a training snapshot, then convert_model
    inference = models.convert_model(models.load_model(path, backbone_name="mobilenet128_0.25"),
                                     score_threshold=0.0, max_detections=30)
    expected = models.convert_model(small_model, score_threshold=0.0, max_detections=30)(image)
    for a, b in zip(expected, inference(image)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # for inference: the same weights, no optimizer built (what open_keras_model loads)
    uncompiled = models.load_model(path, compile=False)
    assert models.load_model(path).compiled and not uncompiled.compiled
    for a, b in zip(small_model(image), uncompiled(image)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    inference_path = str(tmp_path / "inference.keras")
    inference.save(inference_path)
    reloaded_inference = keras.models.load_model(inference_path)
    for a, b in zip(inference(image), reloaded_inference.predict_on_batch(image)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_load_model_reports_missing_file_and_bad_backbone(tmp_path):
    with pytest.raises(ValueError, match="model file not found"):
        models.load_model(str(tmp_path / "missing.keras"))
    with pytest.raises(ValueError, match="unknown backbone 'resnet9'"):
        models.load_model(str(tmp_path / "missing.keras"), backbone_name="resnet9")


def test_mixed_precision_outputs_stay_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = models.backbone("mobilenet128_0.25").retinanet(NUM_CLASSES)
        inference = models.convert_model(model, score_threshold=0.0, max_detections=5)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("conv_pw_13").compute_dtype == "float16"
    image = _image(shape=(128, 128))
    regression, classification = model(image)
    assert regression.dtype == "float32" and classification.dtype == "float32"
    boxes, scores, labels = inference(image)
    assert (boxes.dtype, scores.dtype, labels.dtype) == ("float32", "float32", "int32")
    assert float(scores[0, 0]) == pytest.approx(float(np.max(classification)), rel=1e-6)
    model.compile(optimizer="sgd", loss={"regression": losses.smooth_l1(), "classification": losses.focal()})
    targets = {
        "regression": np.zeros((1, regression.shape[1], 5), np.float32),
        "classification": np.zeros((1, regression.shape[1], NUM_CLASSES + 1), np.float32),
    }
    loss = model.train_on_batch(image, targets)
    assert np.isfinite(loss).all()


def test_convert_model_can_fold_batch_norm(small_model):
    image = _image(5, shape=(128, 128))
    plain = models.convert_model(small_model, score_threshold=0.0, max_detections=20)
    folded = models.convert_model(small_model, score_threshold=0.0, max_detections=20, fold_batch_norm=True)
    assert not any(isinstance(l, keras.layers.BatchNormalization) for l in folded.layers)
    assert folded.get_layer("conv_pw_13") is not small_model.get_layer("conv_pw_13")
    expected = plain.predict_on_batch(image)
    actual = folded.predict_on_batch(image)
    np.testing.assert_allclose(actual[0], expected[0], atol=1e-3)
    np.testing.assert_allclose(actual[1], expected[1], rtol=1e-5)
    np.testing.assert_array_equal(actual[2], expected[2])
