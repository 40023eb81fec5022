"""retinanet-convert-model: every output format detects what the Keras model detects."""
import os

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_retinanet.bin import convert_model
from keras_retinanet.inference import Detector, KerasRunner, load_detector, load_inference_model
from keras_retinanet.models import backbone
from keras_retinanet.utils.synthetic import make_image
from tests.detector_model import BACKBONE, training_model

MIN_SIDE, MAX_SIDE = 128, 160
IMAGE_SHAPE = (100, 150)  # not the 128 px the model is built for; resized to 107 x 160
TOP = 10  # detections compared
SCORE_THRESHOLD = 0.3
BOX_TOLERANCE = 1.0  # pixels
SCORE_TOLERANCE = 1e-2


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    path = tmp_path_factory.mktemp("convert") / "training.keras"
    training_model().save(str(path))
    return path


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(3)
    return make_image(rng, *IMAGE_SHAPE, num_objects=3, min_size=20, max_size=50)[0]


@pytest.fixture(scope="module")
def reference(snapshot, image):
    """Top detections of the Keras model on the image, through the Python API (cv2 resize)."""
    model, converted = load_inference_model(str(snapshot), backbone=BACKBONE, score_threshold=SCORE_THRESHOLD)
    assert converted
    runner = KerasRunner(model, backbone(BACKBONE).preprocess_image, MIN_SIDE, MAX_SIDE)
    detections = Detector(runner, score_threshold=SCORE_THRESHOLD).predict(image)
    assert len(detections) >= TOP, "the test model should give plenty of detections"
    return detections


def _convert(snapshot, out, *extra):
    args = [str(snapshot), str(out), "--backbone", BACKBONE, "--score-threshold", str(SCORE_THRESHOLD),
            "--image-min-side", str(MIN_SIDE), "--image-max-side", str(MAX_SIDE), *extra]  # fmt: skip
    assert convert_model.main(args) == 0
    return out


def assert_same_detections(reference, boxes, scores, labels):
    """The reference's TOP best detections are among (boxes, scores, labels) (one image, maybe padded with -1)."""
    boxes, scores, labels = np.asarray(boxes), np.asarray(scores), np.asarray(labels)
    valid = scores > SCORE_THRESHOLD
    boxes, scores, labels = boxes[valid], scores[valid], labels[valid]
    assert len(scores) == len(reference.scores)
    for box, score, label in zip(reference.boxes[:TOP], reference.scores[:TOP], reference.labels[:TOP]):
        same = (labels == label) & (np.abs(boxes - box).max(axis=1) <= BOX_TOLERANCE)
        same &= np.abs(scores - score) <= SCORE_TOLERANCE
        assert same.any(), f"no detection matches {label} {box} {score}"


def test_keras_inference_model(snapshot, image, reference, tmp_path, capsys):
    out = _convert(snapshot, tmp_path / "inference.keras")
    assert f"inference model written to {out}" in capsys.readouterr().out
    model = keras.models.load_model(str(out))  # no custom_objects needed
    assert model.get_layer("filtered_detections").get_config()["score_threshold"] == SCORE_THRESHOLD
    runner = KerasRunner(model, backbone(BACKBONE).preprocess_image, MIN_SIDE, MAX_SIDE)
    detections = Detector(runner, score_threshold=SCORE_THRESHOLD).predict(image)
    np.testing.assert_allclose(detections.boxes, reference.boxes, atol=1e-3)
    np.testing.assert_array_equal(detections.labels, reference.labels)


def test_saved_model_takes_uint8_and_float_images_of_any_size(snapshot, image, reference, tmp_path):
    out = _convert(snapshot, tmp_path / "saved_model")
    assert os.path.isfile(out / "saved_model.pb")
    loaded = tf.saved_model.load(str(out))
    outputs = loaded.signatures["serving_default"](images=tf.constant(image[None]))
    assert outputs["boxes"].shape == (1, 300, 4) and outputs["labels"].dtype == tf.int32
    assert_same_detections(reference, *(outputs[k][0].numpy() for k in ("boxes", "scores", "labels")))

    as_float = loaded.signatures["serving_float32"](images=tf.constant(image[None].astype(np.float32)))
    np.testing.assert_allclose(as_float["boxes"].numpy(), outputs["boxes"].numpy(), atol=1e-4)

    # the Python API runs it too
    assert_same_detections(reference, *load_detector(str(out), score_threshold=SCORE_THRESHOLD).predict(image))

    # another size, a batch of two: boxes stay inside each image, the padding is -1
    batch = np.stack([image[:90, :120], image[10:, 30:]])
    both = loaded.signatures["serving_default"](images=tf.constant(batch))
    boxes, scores = both["boxes"].numpy(), both["scores"].numpy()
    valid = scores > 0
    assert valid.any(axis=1).all() and (boxes[~valid] == -1).all()
    assert boxes[valid][:, [0, 2]].max() <= 120 and boxes[valid][:, [1, 3]].max() <= 90


@pytest.mark.filterwarnings("ignore:\\s*Warning. tf.lite.Interpreter is deprecated:UserWarning")
def test_tflite_runs_in_the_tflite_interpreter(snapshot, image, reference, tmp_path):
    out = _convert(snapshot, tmp_path / "model.tflite", "--input-size", *map(str, IMAGE_SHAPE))
    interpreter = tf.lite.Interpreter(model_path=str(out))
    runner = interpreter.get_signature_runner()
    details = runner.get_input_details()["images"]
    assert tuple(details["shape"]) == (1, *IMAGE_SHAPE, 3) and details["dtype"] == np.uint8
    outputs = runner(images=image[None])
    assert_same_detections(reference, outputs["boxes"][0], outputs["scores"][0], outputs["labels"][0])

    detector = load_detector(str(out), score_threshold=SCORE_THRESHOLD)
    assert_same_detections(reference, *detector.predict(image))
    # an image of another size is fitted into the input size; boxes come back in its pixels
    large = cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    detections = detector.predict(large)
    assert len(detections) > 0
    assert detections.boxes[:, [0, 2]].max() <= 300 and detections.boxes[:, [1, 3]].max() <= 200
    assert detections.boxes[:, 2].max() > 150  # not in the 150 px wide input's pixels


def test_onnx_runs_in_onnxruntime(snapshot, image, reference, tmp_path):
    pytest.importorskip("tf2onnx", reason="tf2onnx is not installed (optional extra: pip install '.[onnx]')")
    onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (extra 'onnx')")
    out = _convert(snapshot, tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert session.get_inputs()[0].type == "tensor(uint8)"
    boxes, scores, labels = session.run(["boxes", "scores", "labels"], {"images": image[None]})
    assert_same_detections(reference, boxes[0], scores[0], labels[0])
    assert_same_detections(reference, *load_detector(str(out), score_threshold=SCORE_THRESHOLD).predict(image))


def test_options_reach_the_graph(snapshot, tmp_path):
    config = tmp_path / "anchors.ini"
    config.write_text("[anchor_parameters]\nsizes = 16 32 64 128 256\nstrides = 8 16 32 64 128\n"
                      "ratios = 0.5 1 2\nscales = 1 1.2 1.6\n")  # fmt: skip
    out = _convert(snapshot, tmp_path / "options.keras", "--no-nms", "--no-class-specific-filter",
                   "--max-detections", "7", "--nms-threshold", "0.3", "--config", str(config))  # fmt: skip
    model = keras.models.load_model(str(out))
    config = model.get_layer("filtered_detections").get_config()
    assert (config["nms"], config["class_specific_filter"], config["max_detections"]) == (False, False, 7)
    assert config["nms_threshold"] == 0.3
    assert model.get_layer("anchors_0").get_config()["size"] == 16
    assert model.get_layer("anchors_0").get_config()["scales"] == pytest.approx([1, 1.2, 1.6])
    outputs = model.predict_on_batch(np.zeros((1, 128, 128, 3), np.float32))
    assert outputs[0].shape == (1, 7, 4)


def _error(capsys, args):
    assert convert_model.main(args) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_bad_input_gives_one_line_and_exit_1(snapshot, tmp_path, capsys):
    missing = tmp_path / "missing.keras"
    assert _error(capsys, [str(missing), str(tmp_path / "o.keras")]) == (
        f"retinanet-convert-model: error: model file not found: {missing}"
    )
    message = _error(capsys, [str(snapshot), str(tmp_path / "o.h5")])
    assert message == f"retinanet-convert-model: error: a Keras model file must end with .keras, got {tmp_path / 'o.h5'}"
    message = _error(capsys, [str(snapshot), str(tmp_path / "o.tflite")])
    assert "TFLite needs a fixed input size: pass --input-size H W" in message
    message = _error(capsys, [str(snapshot), str(tmp_path / "o"), "--input-size", "64", "64"])
    assert "--input-size applies to TFLite only" in message

    inference = tmp_path / "inference.keras"
    model, _ = load_inference_model(str(snapshot), backbone=BACKBONE)
    model.save(str(inference))
    message = _error(capsys, [str(inference), str(tmp_path / "again.keras"), "--backbone", BACKBONE])
    assert message == f"retinanet-convert-model: error: {inference} is an inference model already: nothing to convert to .keras"
    assert "inference model already" in message

    not_a_model = tmp_path / "notes.keras"
    not_a_model.write_text("hello")
    message = _error(capsys, [str(not_a_model), str(tmp_path / "x.keras"), "--backbone", BACKBONE])
    assert message == (f"retinanet-convert-model: error: {not_a_model} is not a .keras model file: not a zip archive "
                       "(File is not a zip file); truncated, or another format?")

    message = _error(capsys, [str(snapshot), str(tmp_path / "y.keras"), "--backbone", "resnet9000"])
    assert "resnet9000" in message and "mobilenet128_0.25" in message
    assert not os.path.exists(tmp_path / "o.keras") and not os.path.exists(tmp_path / "y.keras")


def test_parallel_iterations_reaches_the_filter_layer(snapshot, tmp_path, capsys):
    """fizyr's --parallel-iterations: the batch items FilterDetections processes in parallel."""
    out = _convert(snapshot, tmp_path / "model.keras", "--parallel-iterations", "4")
    model = keras.models.load_model(str(out))
    filters = [layer for layer in model.layers if type(layer).__name__ == "FilterDetections"]
    assert [layer.parallel_iterations for layer in filters] == [4]
    capsys.readouterr()
    assert convert_model.main([str(out), str(tmp_path / "exported"), "--parallel-iterations", "2"]) == 1
    assert "its filter settings are fixed in it (--parallel-iterations given)" in capsys.readouterr().err


# --- quantisation (--quantize int8 | fp16) --------------------------------------------

CALIBRATION_IMAGES = 4
MIN_AGREEMENT = 0.8  # share of the Keras model's top detections that a quantised graph finds too


@pytest.fixture(scope="module")
def calibration_folder(tmp_path_factory):
    """A folder of images like the test image (the same generator, other seeds)."""
    folder = tmp_path_factory.mktemp("calibration")
    rng = np.random.default_rng(11)
    for index in range(CALIBRATION_IMAGES + 2):
        image = make_image(rng, *IMAGE_SHAPE, num_objects=3, min_size=20, max_size=50)[0]
        cv2.imwrite(str(folder / f"{index}.png"), image)
    return folder


def agreement(reference, detections, top=TOP, iou=0.5):
    """Share of the reference's ``top`` best detections with a same-class detection overlapping it by >= ``iou``."""
    from keras_retinanet.utils.compute_overlap import compute_overlap

    boxes, labels = np.asarray(detections.boxes, np.float64), np.asarray(detections.labels)
    if len(boxes) == 0:
        return 0.0
    overlaps = compute_overlap(np.asarray(reference.boxes[:top], np.float64), boxes)
    same = overlaps * (reference.labels[:top, None] == labels[None, :])
    return float((same.max(axis=1) >= iou).mean())


def _quantized(snapshot, out, capsys, *flags):
    _convert(snapshot, out, *flags)
    return capsys.readouterr().out


def test_int8_onnx_detects_what_the_float_model_detects(snapshot, image, reference, calibration_folder, tmp_path, capsys):
    pytest.importorskip("tf2onnx", reason="tf2onnx is not installed (optional extra: pip install '.[onnx]')")
    onnx = pytest.importorskip("onnx", reason="onnx is not installed (extra 'onnx')")
    pytest.importorskip("onnxruntime.quantization", reason="onnxruntime is not installed (extra 'onnx')")
    out = tmp_path / "model_int8.onnx"
    message = _quantized(snapshot, out, capsys, "--quantize", "int8", "--calibration", str(calibration_folder),
                         "--calibration-images", str(CALIBRATION_IMAGES))  # fmt: skip
    assert f"int8 calibrated on {CALIBRATION_IMAGES} images of {calibration_folder}" in message
    graph = onnx.load(str(out)).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # the heads' output convolutions and the box decoding stay float: no int8 weights feed them
    float_convs = [node for node in graph.node if node.op_type == "Conv" and "pyramid_regression_4" in node.name]
    assert float_convs and not any(name.endswith("_DequantizeLinear_Output") for n in float_convs for name in n.input[1:])

    detector = load_detector(str(out), score_threshold=SCORE_THRESHOLD)
    export = detector.spec.export
    assert (export.format, export.quantize, export.calibration_images, export.input_dtype) == ("onnx", "int8", 4, "uint8")
    assert detector.spec.class_names == load_detector(str(snapshot)).spec.class_names
    detections = detector.predict(image)
    assert detections.boxes.dtype == np.float32 and detections.boxes.shape[1] == 4
    assert agreement(reference, detections) >= MIN_AGREEMENT


@pytest.mark.filterwarnings("ignore:\\s*Warning. tf.lite.Interpreter is deprecated:UserWarning")
def test_int8_and_fp16_tflite_detect_what_the_float_model_detects(
    snapshot, image, reference, calibration_folder, tmp_path, capsys
):
    size = [str(s) for s in IMAGE_SHAPE]
    out = tmp_path / "model_int8.tflite"
    message = _quantized(snapshot, out, capsys, "--input-size", *size, "--quantize", "int8",
                         "--calibration", str(calibration_folder), "--calibration-images", str(CALIBRATION_IMAGES))  # fmt: skip
    assert f"int8 calibrated on {CALIBRATION_IMAGES} images" in message
    detector = load_detector(str(out), score_threshold=SCORE_THRESHOLD)
    assert (detector.spec.export.quantize, detector.spec.export.calibration_images) == ("int8", CALIBRATION_IMAGES)
    details = detector.runner.runner.get_input_details()["images"]
    assert tuple(details["shape"]) == (1, *IMAGE_SHAPE, 3) and details["dtype"] == np.uint8
    assert agreement(reference, detector.predict(image)) >= MIN_AGREEMENT

    half = tmp_path / "model_fp16.tflite"
    assert "fp16 weights" in _quantized(snapshot, half, capsys, "--input-size", *size, "--quantize", "fp16")
    detector = load_detector(str(half), score_threshold=SCORE_THRESHOLD)
    assert detector.spec.export.quantize == "fp16" and detector.spec.export.calibration_images is None
    dtypes = {np.dtype(t["dtype"]) for t in detector.runner.interpreter.get_tensor_details()}
    assert np.dtype(np.float16) in dtypes  # the weights (dequantised to float32 when the interpreter loads them)
    assert agreement(reference, detector.predict(image)) == 1.0  # fp16 weights: the same boxes, scores within ~1e-3


def test_bad_quantisation_flags_give_one_line_before_any_work(snapshot, calibration_folder, tmp_path, capsys):
    calibration = ["--calibration", str(calibration_folder)]
    message = _error(capsys, [str(snapshot), str(tmp_path / "m.keras"), "--quantize", "int8", *calibration])
    assert message.endswith(f"--quantize int8 applies to tflite and onnx outputs, not keras ({tmp_path / 'm.keras'})")
    message = _error(capsys, [str(snapshot), str(tmp_path / "exported"), "--quantize", "fp16"])
    assert "--quantize fp16 applies to tflite outputs, not saved_model" in message
    message = _error(capsys, [str(snapshot), str(tmp_path / "m.onnx"), "--quantize", "fp16"])
    assert "--quantize fp16 applies to tflite outputs, not onnx" in message
    message = _error(capsys, [str(snapshot), str(tmp_path / "m.onnx"), "--quantize", "int8"])
    assert "--quantize int8 needs --calibration DATA" in message
    message = _error(capsys, [str(snapshot), str(tmp_path / "m.onnx"), *calibration])
    assert message.endswith("--calibration is for --quantize int8")
    empty = tmp_path / "empty"
    empty.mkdir()
    message = _error(capsys, [str(snapshot), str(tmp_path / "m.onnx"), "--quantize", "int8", "--calibration", str(empty)])
    assert message == f"retinanet-convert-model: error: no images in folder {empty} (looked for .jpg, " + message.split(
        "(looked for .jpg, ", 1
    )[1]
    missing = tmp_path / "missing.csv"
    message = _error(capsys, [str(snapshot), str(tmp_path / "m.onnx"), "--quantize", "int8", "--calibration", str(missing)])
    assert message == f"retinanet-convert-model: error: calibration data not found: {missing}"
    with pytest.raises(SystemExit):
        convert_model.parse_args([str(snapshot), "m.onnx", "--calibration-images", "0"])
    assert not any(tmp_path.glob("m.*")) and not os.path.exists(tmp_path / "exported")
