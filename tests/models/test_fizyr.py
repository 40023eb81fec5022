"""fizyr 1.0 models load and give fizyr's outputs: real .h5 files made by fizyr itself.

The fixtures come from ``scripts/fizyr_fixtures.sh`` (fizyr/keras-retinanet 1.0.0 on
TensorFlow 2.15 / Keras 2, in its own virtual environment; ``scripts/test.sh`` makes
them): a MobileNet with a small FPN and a ResNet-50 as fizyr builds it (keras-resnet),
each as a training and an inference model, with what fizyr computed on fixed inputs.

Both frameworks compute in float32 with other kernels: the outputs agree to float32
rounding, which grows through the 53 layers of a ResNet-50 (boxes within 0.05 px there,
0.005 px for the MobileNet).
"""
import json
import os
import textwrap

import cv2
import numpy as np
import pytest

FIXTURES = os.environ.get(
    "KERAS_RETINANET_FIZYR_FIXTURES", os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "fizyr")
)
MODELS = {"mobilenet128_0.25": 0.005, "resnet50": 0.05}  # name: box tolerance (px)
SCORE_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def fixtures():
    manifest = os.path.join(FIXTURES, "manifest.json")
    if not os.path.isfile(manifest):
        message = f"no fizyr fixtures in {FIXTURES}: make them with bash scripts/fizyr_fixtures.sh"
        if os.environ.get("KERAS_RETINANET_REQUIRE_FIZYR_FIXTURES"):
            pytest.fail(message)
        pytest.skip(message)
    with open(manifest) as file:
        return json.load(file)


def _outputs(name):
    data = np.load(os.path.join(FIXTURES, f"{name}_outputs.npz"))
    count = sum(1 for key in data.files if key.startswith("image_"))
    return [{key: data[f"{key}_{i}"] for key in ("image", "inputs", "scales", "regression", "classification",
                                                  "boxes", "scores", "labels")} for i in range(count)]  # fmt: skip


def assert_fizyr_detections(boxes, scores, labels, expected, box_tolerance):
    """Every detection fizyr made is here (same label, score, box), and no other."""
    fizyr_valid = expected["scores"] > -1
    valid = np.asarray(scores) > -1
    assert valid.sum() == fizyr_valid.sum(), (valid.sum(), fizyr_valid.sum())
    boxes, scores, labels = np.asarray(boxes)[valid], np.asarray(scores)[valid], np.asarray(labels)[valid]
    for box, score, label in zip(expected["boxes"][fizyr_valid], expected["scores"][fizyr_valid],
                                 expected["labels"][fizyr_valid]):  # fmt: skip
        same = (labels == label) & (np.abs(scores - score) <= SCORE_TOLERANCE)
        assert same.any(), f"no detection of label {label} with score {score}"
        assert np.abs(boxes[same] - box).max(axis=1).min() <= box_tolerance, (box, boxes[same][:3])


@pytest.mark.parametrize("name", MODELS)
def test_training_models_give_fizyr_outputs(fixtures, name):
    from keras_retinanet import models

    model = models.load_model(os.path.join(FIXTURES, f"{name}_training.h5"))
    spec = model.spec
    assert (spec.num_classes, spec.pyramid_levels, spec.head_depth) == (3, (3, 4, 5, 6, 7), 4)
    assert spec.feature_size == fixtures["models"][name]["feature_size"]
    assert spec.backbone == {"mobilenet128_0.25": "mobilenet224_0.25", "resnet50": "resnet50"}[name]
    assert spec.preprocess_mode == {"mobilenet128_0.25": "tf", "resnet50": "caffe"}[name]
    for case in _outputs(name):
        regression, classification = model.predict_on_batch(case["inputs"][None])
        np.testing.assert_allclose(np.asarray(classification)[0], case["classification"], atol=1e-3)
        np.testing.assert_allclose(np.asarray(regression)[0], case["regression"], atol=5e-3)


@pytest.mark.parametrize("name", MODELS)
def test_inference_models_give_fizyr_detections(fixtures, name):
    from keras_retinanet import models

    model = models.load_model(os.path.join(FIXTURES, f"{name}_inference.h5"), backbone_name=name)
    assert model.spec.filter.score_threshold == fixtures["score_threshold"]
    assert model.spec.anchors.sizes == (32, 64, 128, 256, 512)
    for case in _outputs(name):
        boxes, scores, labels = (np.asarray(o)[0] for o in model.predict_on_batch(case["inputs"][None])[:3])
        assert_fizyr_detections(boxes, scores, labels, case, MODELS[name])


def fizyr_path(name, kind):
    return os.path.join(FIXTURES, f"{name}_{kind}.h5")


def test_a_converted_fizyr_model_keeps_its_detections_in_every_tool(fixtures, tmp_path, capsys):
    """retinanet-convert-model x.h5 out.keras (a detector spec added), then the Python API and
    retinanet-predict's path on the .keras files and on the .h5 itself: fizyr's boxes."""
    from keras_retinanet.bin import convert_model
    from keras_retinanet.inference import load_detector
    from keras_retinanet.spec import read_spec

    name = "mobilenet128_0.25"
    out = tmp_path / "model.keras"
    assert convert_model.main([fizyr_path(name, "training"), str(out), "--score-threshold",
                               str(fixtures["score_threshold"])]) == 0  # fmt: skip
    spec = read_spec(out)
    assert spec.backbone == "mobilenet224_0.25" and spec.filter.score_threshold == fixtures["score_threshold"]
    # an inference .h5 becomes a .keras too
    assert convert_model.main([fizyr_path(name, "inference"), str(tmp_path / "inference.keras")]) == 0
    capsys.readouterr()
    for model in (str(out), str(tmp_path / "inference.keras"), fizyr_path(name, "inference"), fizyr_path(name, "training")):
        detector = load_detector(model, image_min_side=fixtures["min_side"], image_max_side=fixtures["max_side"],
                                 score_threshold=fixtures["score_threshold"], clip_boxes=False)  # fmt: skip
        for case in _outputs(name):
            found = detector.predict_batch([case["image"]])[0]
            # fizyr's boxes are in the resized image; the detector's in the original one
            expected = dict(case, boxes=case["boxes"] / case["scales"])
            assert_fizyr_detections(found.boxes, found.scores, found.labels, expected, MODELS[name] / case["scales"])


def test_fizyr_example_script_runs_unchanged(fixtures, tmp_path):
    """fizyr's examples/resnet50_retinanet.py, its logic line for line, on the ResNet-50 fixture."""
    image_path = tmp_path / "image.png"
    cv2.imwrite(str(image_path), _outputs("resnet50")[0]["image"])
    script = textwrap.dedent(
        f"""
        import keras
        from keras_retinanet import models
        from keras_retinanet.utils.image import read_image_bgr, preprocess_image, resize_image
        from keras_retinanet.utils.visualization import draw_box, draw_caption
        from keras_retinanet.utils.colors import label_color
        from keras_retinanet.utils.gpu import setup_gpu
        import cv2
        import os
        import numpy as np
        import time

        gpu = 0
        setup_gpu(gpu)
        model_path = {fizyr_path("resnet50", "inference")!r}
        model = models.load_model(model_path, backbone_name='resnet50')
        labels_to_names = {{0: 'person', 1: 'bicycle', 2: 'car'}}
        image = read_image_bgr({str(image_path)!r})
        draw = image.copy()
        draw = cv2.cvtColor(draw, cv2.COLOR_BGR2RGB)
        image = preprocess_image(image)
        image, scale = resize_image(image)
        start = time.time()
        boxes, scores, labels = model.predict_on_batch(np.expand_dims(image, axis=0))
        print("processing time: ", time.time() - start)
        boxes /= scale
        drawn = 0
        for box, score, label in zip(boxes[0], scores[0], labels[0]):
            if score < 0.5:
                break
            color = label_color(label)
            b = box.astype(int)
            draw_box(draw, b, color=color)
            caption = "{{}} {{:.3f}}".format(labels_to_names[label], score)
            draw_caption(draw, b, caption)
            drawn += 1
        print("drawn", drawn, int((draw != cv2.cvtColor(read_image_bgr({str(image_path)!r}), cv2.COLOR_BGR2RGB)).any()))
        """
    )
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    drawn = [line for line in result.stdout.splitlines() if line.startswith("drawn")][0].split()
    assert int(drawn[1]) > 0 and drawn[2] == "1"


def test_fine_tuning_from_fizyr_weights_reinitialises_the_heads_that_do_not_fit(fixtures, tmp_path, capsys):
    """retinanet-train --weights x.h5 with another number of classes: fizyr's weights, a fresh class output."""
    import keras

    from keras_retinanet.bin import train
    from keras_retinanet.models.fizyr import FizyrFile
    from keras_retinanet.utils import synthetic

    data = synthetic.make_dataset(str(tmp_path / "data"), {"train": 4}, seed=3, image_size=128, min_size=40,
                                  max_size=80, classes=("rectangle", "circle"))  # fmt: skip
    weights = fizyr_path("mobilenet128_0.25", "training")
    status = train.main(["--weights", weights, "--epochs", "1", "--steps", "1", "--batch-size", "2",
                         "--image-min-side", "128", "--image-max-side", "128", "--snapshot-path", str(tmp_path / "s"),
                         "--tensorboard-dir", "", "csv", data["train"], data["classes"]])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 0, err
    assert (f"retinanet-train: warning: {weights}: classification_submodel/pyramid_classification start from a "
            "fresh initialisation") in err  # fmt: skip
    model = keras.models.load_model(str(tmp_path / "s" / "mobilenet224_0.25_csv_01.keras"))
    assert model.spec.class_names == ("rectangle", "circle") and model.spec.feature_size == 32
    info = FizyrFile(weights)
    # a backbone layer the step did not change (frozen batch normalisation) has fizyr's weights
    np.testing.assert_array_equal(model.get_layer("conv1_bn").get_weights()[2], info.weights["conv1_bn"]["moving_mean"])
