"""export: the graph's preprocessing is utils.image.preprocess_image, mode by mode."""
import numpy as np
import pytest

from keras_retinanet.export import preprocess_graph
from keras_retinanet.utils.image import PREPROCESS_MODES, preprocess_image


@pytest.mark.parametrize("mode", PREPROCESS_MODES)
def test_preprocess_graph_matches_preprocess_image(mode):
    images = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    np.testing.assert_allclose(preprocess_graph(images, mode).numpy(), preprocess_image(images, mode), atol=1e-5)


@pytest.mark.parametrize(
    "format, quantize, calibration, message",
    [
        ("keras", "int8", [], "int8 quantisation is for tflite and onnx outputs, not keras"),
        ("saved_model", "fp16", None, "fp16 quantisation is for tflite outputs, not saved_model"),
        ("onnx", "fp16", None, "fp16 quantisation is for tflite outputs, not onnx"),
        ("onnx", "int8", None, "int8 quantisation needs calibration images"),
        ("tflite", "fp16", [], "calibration images are for int8 quantisation, not fp16"),
        ("tflite", None, [], "calibration images are for int8 quantisation"),
        ("tflite", "int4", None, "unknown quantisation 'int4'"),
    ],
)
def test_check_quantize_names_what_does_not_fit(format, quantize, calibration, message):
    from keras_retinanet.export import ExportError, check_quantize

    with pytest.raises(ExportError, match=message):
        check_quantize(format, quantize, calibration)
    check_quantize("onnx", "int8", [])  # fits (an empty calibration set fails when it is read)
    check_quantize("tflite", "fp16")
