"""Export an inference model: Keras file, TensorFlow SavedModel, TFLite and ONNX.

The ``.keras`` format is the inference model itself (fizyr's layout): it takes
preprocessed, resized images and returns boxes in the pixels of its input. The other
formats hold an end-to-end graph (``detection_graph``) that takes original images and
returns boxes in the original image's pixels:

    images (B, H, W, 3) uint8 or float32, BGR (or RGB)
      -> backbone preprocessing -> resize to min/max side (bilinear, as utils.image.resize_image)
      -> inference model (NMS inside) -> boxes / scale, clipped to the image
      -> {"boxes": (B, D, 4) float32 x1, y1, x2, y2, "scores": (B, D) float32,
          "labels": (B, D) int32}, sorted by score, padded with -1

What each format can hold:

- SavedModel (a directory): any image size and batch size; two signatures,
  ``serving_default`` (uint8 images) and ``serving_float32`` (float32 images).
- TFLite: a fixed input size (``input_size`` (H, W), batch 1): TFLite interpreters
  allocate tensors for one shape, so the graph is converted for the size of the images it
  will see (e.g. a camera's resolution) and still resizes to min/max side inside.
- ONNX (through tf2onnx, the optional ``onnx`` extra): any image size and batch size.

Quantised graphs (``quantize``):

- ``'int8'``, TFLite and ONNX: post-training static quantisation, calibrated on images
  (``keras_retinanet.calibration``) that the float graph runs on to find each activation's
  range. Both quantise the convolutional network (backbone, FPN, heads' hidden layers:
  ``onnx_nodes_to_quantize``, ``tflite_float_nodes``); the preprocessing, resize, the
  heads' output convolutions, box decoding and NMS stay float32. ONNX: ONNX Runtime's QDQ
  format, int8 weights per output channel, uint8 activations. TFLite: int8 weights per
  output channel and int8 activations (TFLite's full-integer kernels). The graph keeps its
  uint8 image input and its float outputs in original-image pixels.
- ``'fp16'``, TFLite: float16 weights (half the file), computed in float32.

Every format keeps NMS (``layers.FilterDetections``) inside the graph, and carries the
model's detector spec (``keras_retinanet.spec``) with the export settings added:
SavedModel in ``assets.extra/detector_spec.json``, TFLite as flatbuffer metadata, ONNX in
``metadata_props`` (``read_export_spec`` reads any of them).
"""
import contextlib
import os
import tempfile

from . import constants
from .errors import CalibrationError
from .spec import METADATA_KEY, SAVED_MODEL_SPEC_PATH, DetectorSpec, ExportSpec
from .utils.image import CAFFE_BGR_MEAN, PREPROCESS_MODES, TORCH_MEAN, TORCH_STD

# TensorFlow and Keras are imported where used, so that the command-line tools can read
# the constants above (their --help) without loading TensorFlow.

FORMATS = ("keras", "saved_model", "tflite", "onnx")
# ".h5": fizyr 1.0's Keras 2 models (read; this package writes .keras)
SUFFIX_FORMATS = {".keras": "keras", ".h5": "keras", ".tflite": "tflite", ".onnx": "onnx", "": "saved_model"}
INPUT_DTYPES = ("uint8", "float32")
CHANNEL_ORDERS = ("bgr", "rgb")
OUTPUT_NAMES = ("boxes", "scores", "labels")
SERVING_SIGNATURES = {"uint8": "serving_default", "float32": "serving_float32"}
INPUT_NAME = "images"
DEFAULT_IMAGE_MIN_SIDE = constants.DEFAULT_IMAGE_MIN_SIDE
DEFAULT_IMAGE_MAX_SIDE = constants.DEFAULT_IMAGE_MAX_SIDE
DEFAULT_ONNX_OPSET = 17
PADDING_VALUE = constants.PADDING_VALUE
TF2ONNX_CATCH_ERRORS = "TF2ONNX_CATCH_ERRORS"  # environment variable read by tf2onnx


QUANTIZE_MODES = ("int8", "fp16")
QUANTIZE_FORMATS = {"int8": ("tflite", "onnx"), "fp16": ("tflite",)}  # the formats each mode is for
# ONNX Runtime quantisation: the ops quantised inside the convolutional network, and those
# data-movement ops through which a tensor stays in it (see onnx_nodes_to_quantize)
ONNX_QUANTIZED_OP_TYPES = ("Conv", "Relu", "Clip", "Add", "MaxPool", "Resize")
ONNX_PASS_THROUGH_OP_TYPES = ("Transpose", "Reshape", "Identity", "Squeeze", "Unsqueeze")
# depthwise convolutions stay float: quantising them cost the crowns detector (MobileNet) 0.8
# AP points in TFLite and 0.5 in ONNX Runtime, for little time (they are a sliver of the FLOPs)
TFLITE_CONV_OPS = ("CONV_2D",)
TFLITE_NETWORK_OPS = ("RELU", "RELU6", "ADD", "MAX_POOL_2D", "PAD", "RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR")
FILTER_OPTIONS = (
    "nms", "class_specific_filter", "nms_threshold", "score_threshold", "max_detections", "pre_nms_top_k",
    "parallel_iterations",
)  # FilterDetections' settings, as filter_detections takes them  # fmt: skip
ONNX_CALIBRATION_STRIDE = 1  # calibration images whose activations are held before their ranges are merged


class ExportError(ValueError):
    """A model cannot be exported as asked (format, missing dependency, missing option)."""


def check_quantize(format, quantize, calibration=None):
    """Raise ExportError if ``format`` cannot be quantised as asked.

    Args:
        format: one of ``FORMATS``.
        quantize: None, 'int8' or 'fp16'.
        calibration: the calibration images (int8 needs some; the others take none).
    """
    if quantize is None:
        if calibration is not None:
            raise ExportError("calibration images are for int8 quantisation (--quantize int8)")
        return
    if quantize not in QUANTIZE_MODES:
        raise ExportError(f"unknown quantisation {quantize!r}; expected one of {', '.join(QUANTIZE_MODES)}")
    if format not in QUANTIZE_FORMATS[quantize]:
        targets = " and ".join(QUANTIZE_FORMATS[quantize])
        raise ExportError(f"{quantize} quantisation is for {targets} outputs, not {format}")
    if quantize == "int8" and calibration is None:
        raise ExportError("int8 quantisation needs calibration images (--calibration DATA)")
    if quantize != "int8" and calibration is not None:
        raise ExportError(f"calibration images are for int8 quantisation, not {quantize}")


def format_from_path(path, format=None):
    """The export format for ``path``: ``format`` if given, else from the suffix.

    ``.keras`` -> keras, ``.tflite`` -> tflite, ``.onnx`` -> onnx, no suffix -> saved_model.

    Raises:
        ExportError: unknown format or suffix.
    """
    if format is not None:
        if format not in FORMATS:
            raise ExportError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
        return format
    suffix = os.path.splitext(os.path.basename(os.path.normpath(os.fspath(path))))[1].lower()
    if suffix not in SUFFIX_FORMATS:
        raise ExportError(
            f"cannot tell the format of {path} from its suffix {suffix!r}: use .keras, .tflite, .onnx, "
            "a directory name without suffix (SavedModel), or --format"
        )
    return SUFFIX_FORMATS[suffix]


def model_file_format(path):
    """The format of an existing model file or SavedModel directory.

    Raises:
        ModelLoadError: the path does not exist, or is no model format (suffix, or a
            file where a SavedModel directory is expected).
    """
    from .errors import ModelLoadError

    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelLoadError(f"model not found: {path}")
    try:
        format = format_from_path(path)
    except ValueError as error:
        raise ModelLoadError(str(error)) from None
    if format == "saved_model" and not os.path.isdir(path):
        raise ModelLoadError(f"{path} is neither a model file (.keras, .tflite, .onnx) nor a SavedModel directory")
    return format


def preprocess_graph(images, mode):
    """``utils.image.preprocess_image`` as graph ops: (B, H, W, 3) BGR -> float32."""
    import tensorflow as tf

    images = tf.cast(images, tf.float32)
    if mode == "caffe":
        return images - tf.constant(CAFFE_BGR_MEAN, dtype=tf.float32)
    if mode == "tf":
        return images / 127.5 - 1.0
    if mode == "torch":
        return (images / 255.0 - tf.constant(TORCH_MEAN, dtype=tf.float32)) / tf.constant(TORCH_STD, dtype=tf.float32)
    if mode == "none":
        return images
    raise ValueError(f"unknown preprocessing mode {mode!r}; expected one of {PREPROCESS_MODES}")


def resize_scale_graph(height, width, min_side, max_side):
    """``utils.image.compute_resize_scale`` as graph ops (float32 scalars in and out)."""
    import tensorflow as tf

    scale = min_side / tf.minimum(height, width)
    return tf.minimum(scale, max_side / tf.maximum(height, width))


def resize_graph(images, scale):
    """``utils.image.resize_image`` as graph ops: bilinear resize by ``scale``, as OpenCV does it.

    ``cv2.resize(fx=scale, fy=scale)`` samples output pixel ``i`` at source coordinate
    ``(i + 0.5) / scale - 0.5`` (clamped to the image), which is not the mapping of
    ``tf.image.resize`` (that one stretches by output size / input size). Gathers and
    arithmetic only, so TFLite and ONNX hold it too.

    Args:
        images: (B, H, W, C) float32.
        scale: float32 scalar.

    Returns:
        (B, round(H * scale), round(W * scale), C) float32.
    """
    import tensorflow as tf

    shape = tf.shape(images)

    def taps(length):
        size = tf.cast(tf.round(tf.cast(length, tf.float32) * scale), tf.int32)
        source = tf.maximum((tf.range(size, dtype=tf.float32) + 0.5) / scale - 0.5, 0.0)
        low = tf.floor(source)
        weight = source - low
        low = tf.minimum(tf.cast(low, tf.int32), length - 1)
        return low, tf.minimum(low + 1, length - 1), weight

    low, high, weight = taps(shape[1])
    top, bottom = tf.gather(images, low, axis=1), tf.gather(images, high, axis=1)
    rows = top + (bottom - top) * weight[None, :, None, None]
    low, high, weight = taps(shape[2])
    left, right = tf.gather(rows, low, axis=2), tf.gather(rows, high, axis=2)
    return left + (right - left) * weight[None, None, :, None]


def detection_graph(
    model,
    preprocess_mode,
    image_min_side=DEFAULT_IMAGE_MIN_SIDE,
    image_max_side=DEFAULT_IMAGE_MAX_SIDE,
    no_resize=False,
    channel_order="bgr",
    nms_op="matrix",
):
    """End-to-end detection function of original images, for tracing into an exported graph.

    Args:
        model: inference model (``models.convert_model``): preprocessed images ->
            [boxes, scores, labels, ...].
        preprocess_mode: the backbone's ``preprocess_mode`` ('caffe', 'tf', 'torch' or 'none').
        image_min_side, image_max_side: resize bounds, as ``utils.image.resize_image``.
        no_resize: run the model on the images at their size.
        channel_order: 'bgr' (the library's convention) or 'rgb' (most decoders).
        nms_op: how the model's ``FilterDetections`` computes NMS in the graph, whatever
            op the Keras layer uses (``layers.filter_detections``): 'matrix' (a loop, which
            ONNX has), 'builtin' (one NMS op per image; TFLite, whose graphs have batch 1)
            or 'overlaps' (TensorFlow only).

    Returns:
        f(images (B, H, W, 3) uint8 or float) -> dict ``boxes`` (B, D, 4) float32 in the
        input images' pixels, ``scores`` (B, D) float32, ``labels`` (B, D) int32, padded
        with -1.
    """
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"unknown channel order {channel_order!r}; expected one of {CHANNEL_ORDERS}")
    if preprocess_mode not in PREPROCESS_MODES:
        raise ValueError(f"unknown preprocessing mode {preprocess_mode!r}; expected one of {PREPROCESS_MODES}")
    if not no_resize and not 0 < image_min_side <= image_max_side:
        raise ValueError(
            f"expected 0 < image_min_side <= image_max_side, got {image_min_side} and {image_max_side}"
        )

    import tensorflow as tf

    network, filter_layer = _split_filter(model)

    def run_model(inputs):
        if filter_layer is None:
            return model(inputs, training=False)[:3]
        from .layers.filter_detections import filter_detections

        boxes, classification, *other = network(inputs, training=False)
        options = {k: v for k, v in filter_layer.get_config().items() if k in FILTER_OPTIONS}
        return filter_detections(boxes, classification, other, nms_op=nms_op, **options)[:3]

    def detect(images):
        if channel_order == "rgb":
            images = tf.reverse(images, axis=[-1])
        shape = tf.shape(images)
        height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
        inputs = preprocess_graph(images, preprocess_mode)
        if no_resize:
            scale = tf.constant(1.0)
        else:
            scale = resize_scale_graph(height, width, float(image_min_side), float(image_max_side))
            inputs = resize_graph(inputs, scale)
        boxes, scores, labels = run_model(inputs)
        valid = scores > PADDING_VALUE
        boxes = tf.clip_by_value(boxes / scale, 0.0, tf.stack([width, height, width, height]))
        boxes = tf.where(valid[..., None], boxes, float(PADDING_VALUE))
        return {"boxes": boxes, "scores": scores, "labels": tf.cast(labels, tf.int32)}

    return detect


def _split_filter(model):
    """(the model up to its ``FilterDetections`` layer, that layer), or (model, None) if it has not one."""
    import keras

    from .layers import FilterDetections

    layers = [layer for layer in model.layers if isinstance(layer, FilterDetections)]
    if len(layers) != 1:
        return model, None
    return keras.Model(model.inputs, layers[0].input), layers[0]


def _check_dtype(input_dtype):
    if input_dtype not in INPUT_DTYPES:
        raise ExportError(f"unknown input dtype {input_dtype!r}; expected one of {INPUT_DTYPES}")


def _archive(model, endpoints):
    """A keras ExportArchive with ``{name: (fn, input_signature)}`` endpoints calling ``model``.

    The endpoints' variables are tracked by the archive (``archive.track(model)`` is not
    needed and would trace every layer's call once more).
    """
    import keras

    archive = keras.export.ExportArchive()
    for name, (fn, signature) in endpoints.items():
        archive.add_endpoint(name, fn, input_signature=signature)
    return archive


def export_saved_model(model, path, preprocess_mode, spec=None, **graph_options):
    """Write a SavedModel directory with the end-to-end graph (any image size and batch).

    Signatures ``serving_default`` (uint8 images) and ``serving_float32`` (float32
    images), each taking ``images`` (B, H, W, 3) and returning ``boxes``, ``scores`` and
    ``labels`` (see ``detection_graph``).

    Args:
        model: inference model.
        path: output directory.
        preprocess_mode: the backbone's preprocessing mode.
        spec: ``DetectorSpec`` to write into ``assets.extra/detector_spec.json`` (with the
            export settings added), or None.
        **graph_options: ``detection_graph`` options (image_min_side, image_max_side,
            no_resize, channel_order).
    """
    import tensorflow as tf

    detect = detection_graph(model, preprocess_mode, **graph_options)
    endpoints = {
        name: (detect, [tf.TensorSpec((None, None, None, 3), getattr(tf, dtype), name=INPUT_NAME)])
        for dtype, name in SERVING_SIGNATURES.items()
    }
    _archive(model, endpoints).write_out(os.fspath(path), verbose=False)
    if spec is not None:
        spec = export_spec(spec, "saved_model", preprocess_mode, None, None, **graph_options)
        spec_path = os.path.join(os.fspath(path), SAVED_MODEL_SPEC_PATH)
        os.makedirs(os.path.dirname(spec_path), exist_ok=True)
        with open(spec_path, "w", encoding="utf-8") as file:
            file.write(spec.to_json())


def export_tflite(
    model, path, preprocess_mode, input_size, input_dtype="uint8", spec=None, quantize=None, calibration=None,
    **graph_options,
):  # fmt: skip
    """Write a TFLite model of the end-to-end graph for images of one size.

    TFLite allocates tensors for a fixed shape, so the model takes ``images`` of shape
    (1, H, W, 3) with (H, W) = ``input_size``; it resizes them to min/max side inside,
    and returns boxes in their pixels. Converted with TFLite builtin ops only when
    possible, else with TensorFlow ops (the interpreter then needs the Flex delegate,
    which the ``tensorflow`` pip package's ``tf.lite.Interpreter`` has).

    Args:
        input_size: (H, W) of the images the model will take.
        input_dtype: 'uint8' or 'float32' images.
        spec: ``DetectorSpec`` to embed as the metadata entry ``keras_retinanet.detector_spec``
            (with the export settings added), or None.
        quantize: None, 'int8' (full-integer, calibrated on ``calibration``) or 'fp16'
            (float16 weights).
        calibration: int8 only: iterable of (H, W, 3) uint8 BGR original images (any
            size: each is fitted into ``input_size`` as ``TFLiteRunner`` fits images).

    Returns:
        True if the model needs TensorFlow (Flex) ops, False if it is builtins only.
    """
    import tensorflow as tf

    _check_dtype(input_dtype)
    check_quantize("tflite", quantize, calibration)
    if input_size is None:
        raise ExportError("TFLite needs a fixed input size: give input_size (H, W) (--input-size H W)")
    height, width = (int(s) for s in input_size)
    if height < 1 or width < 1:
        raise ExportError(f"input size must be positive, got {height} x {width}")
    # NMS as TFLite's builtin op, not a WHILE loop: faster, and the int8 calibrator runs it
    detect = detection_graph(model, preprocess_mode, nms_op="builtin", **graph_options)
    input_spec = tf.TensorSpec((1, height, width, 3), getattr(tf, input_dtype), name=INPUT_NAME)
    with tempfile.TemporaryDirectory() as saved_model_dir:
        _archive(model, {"serving_default": (detect, [input_spec])}).write_out(saved_model_dir, verbose=False)
        representative = None
        if quantize == "int8":
            representative = _tflite_representative_data(calibration, height, width, input_dtype)
        needs_flex = False
        try:
            data = _tflite_convert(saved_model_dir, flex=False, quantize=quantize, representative=representative)
        except CalibrationError:
            raise
        except Exception:  # the converter raises ConverterError for ops outside the builtins
            needs_flex = True
            data = _tflite_convert(saved_model_dir, flex=True, quantize=quantize, representative=representative)
    if spec is not None:
        spec = export_spec(
            spec, "tflite", preprocess_mode, input_dtype, (height, width), quantize=quantize,
            calibration_images=None if quantize != "int8" else len(representative.images), **graph_options,
        )  # fmt: skip
        data = _tflite_with_metadata(data, METADATA_KEY, spec.to_json().encode("utf-8"))
    with open(path, "wb") as file:
        file.write(data)
    return needs_flex


def _tflite_with_metadata(data, name, value):
    """TFLite flatbuffer bytes with a metadata entry ``name`` holding ``value`` (bytes)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    buffer = schema.BufferT()
    buffer.data = list(value)
    model.buffers = list(model.buffers or []) + [buffer]
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name.decode("utf-8") != name] + [entry]
    return flatbuffer_utils.convert_object_to_bytearray(model)


def _tflite_metadata(path, name):
    """The bytes of metadata entry ``name`` of a TFLite file, or None."""
    from tensorflow.lite.python import schema_py_generated as schema

    with open(path, "rb") as file:
        data = bytearray(file.read())
    model = schema.Model.GetRootAsModel(data, 0)
    for index in range(model.MetadataLength()):
        entry = model.Metadata(index)
        if entry.Name().decode("utf-8") == name:
            return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    return None


class _RepresentativeData:
    """The TFLite converter's representative dataset: calibration images fitted into the input size."""

    def __init__(self, images, height, width, input_dtype):
        self.images = images if hasattr(images, "__len__") else list(images)
        if len(self.images) == 0:
            raise CalibrationError("int8 quantisation needs at least one calibration image, got none")
        self.height, self.width, self.input_dtype = height, width, input_dtype

    def __call__(self):
        from .utils.image import letterbox_image

        for image in self.images:
            fitted, _ = letterbox_image(_calibration_image(image), self.height, self.width)
            yield [fitted[None].astype(self.input_dtype)]


def _tflite_representative_data(images, height, width, input_dtype):
    return _RepresentativeData(images, height, width, input_dtype)


def _calibration_image(image):
    """A calibration image as (H, W, 3) uint8, or CalibrationError."""
    import numpy as np

    from .utils.image import bgr_uint8

    try:
        return bgr_uint8(image)
    except ValueError:
        raise CalibrationError(f"calibration images must be (H, W, 3) BGR arrays, got shape {np.shape(image)}") from None


def _tflite_convert(saved_model_dir, flex, quantize=None, representative=None):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "int8":
        # calibrate, then quantise the convolutional network only (tflite_float_nodes): int8
        # kernels there, float ones for the rest; uint8 images in, float boxes and scores out
        ops.insert(0, tf.lite.OpsSet.TFLITE_BUILTINS_INT8)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter._experimental_calibrate_only = True  # what tf.lite.experimental.QuantizationDebugger does
    elif quantize == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    if flex:
        ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    converter.target_spec.supported_ops = ops
    data = converter.convert()
    if quantize == "int8":
        from tensorflow.lite.python import convert

        data = convert.mlir_quantize(data, denylisted_nodes=tflite_float_nodes(data))
    return data


def tflite_float_nodes(data):
    """Output tensor names of the ops of a TFLite graph that int8 quantisation leaves float.

    The rule of ``onnx_nodes_to_quantize``: the convolutional network (convolutions but
    the depthwise ones, and the activations, sums, pooling, padding and upsampling whose
    inputs come out of it) is quantised, except the convolutions that feed no other one
    (the heads' outputs);
    every other op (preprocessing, resize, normalisation layers, box decoding, score
    sigmoid, top-k, NMS) stays float. Quantising those too (TFLite's default) costs most
    of the AP: on the crowns detector mAP50 fell from 0.66 to 0.30.

    Args:
        data: TFLite flatbuffer bytes (the calibrated float model).

    Returns:
        list of tensor names (``mlir_quantize``'s ``denylisted_nodes``).
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    names = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    graph = model.subgraphs[0]

    def op_name(op):
        code = model.operatorCodes[op.opcodeIndex]
        return names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")

    produced = {int(t) for op in graph.operators for t in (op.outputs if op.outputs is not None else [])}
    dynamic = produced | {int(t) for t in graph.inputs}
    consumers = {}
    for op in graph.operators:
        for tensor in op.inputs if op.inputs is not None else []:
            consumers.setdefault(int(tensor), []).append(op)
    inside, chosen = set(), set()
    for op in graph.operators:
        kind = op_name(op)
        inputs = [int(t) for t in (op.inputs if op.inputs is not None else []) if int(t) in dynamic]
        if kind in TFLITE_CONV_OPS:
            take = True
        elif kind in TFLITE_NETWORK_OPS:
            data_inputs = inputs[:1] if kind.startswith("RESIZE") else inputs  # not the computed sizes
            take = bool(data_inputs) and all(t in inside for t in data_inputs)
        else:
            take = False
        if take:
            inside.update(int(t) for t in op.outputs)
            chosen.add(id(op))
    feeds_conv = set()
    for op in reversed(graph.operators):
        after = [c for t in op.outputs for c in consumers.get(int(t), ())]
        if any(op_name(c) in TFLITE_CONV_OPS or id(c) in feeds_conv for c in after):
            feeds_conv.add(id(op))
    quantized = {i for i in chosen}
    for op in graph.operators:
        if id(op) in quantized and op_name(op) in TFLITE_CONV_OPS and id(op) not in feeds_conv:
            quantized.discard(id(op))
    return [
        graph.tensors[int(t)].name.decode("utf-8")
        for op in graph.operators if id(op) not in quantized
        for t in op.outputs
    ]  # fmt: skip


def export_onnx(
    model, path, preprocess_mode, input_dtype="uint8", opset=DEFAULT_ONNX_OPSET, spec=None, quantize=None,
    calibration=None, **graph_options,
):  # fmt: skip
    """Write an ONNX model of the end-to-end graph (any image size and batch), via tf2onnx.

    Input ``images`` (B, H, W, 3) of ``input_dtype``; outputs ``boxes``, ``scores``,
    ``labels`` (see ``detection_graph``). ``spec`` (with the export settings added) goes
    into the model's ``metadata_props`` as ``keras_retinanet.detector_spec``.

    Args:
        quantize: None or 'int8': ONNX Runtime static quantisation (``quantize_onnx``),
            calibrated on ``calibration`` (iterable of (H, W, 3) uint8 BGR original images,
            run at their own size).

    Raises:
        ExportError: tf2onnx (or, for int8, onnxruntime) is not installed.
    """
    _check_dtype(input_dtype)
    check_quantize("onnx", quantize, calibration)
    if quantize == "int8":
        _import_onnx_quantization()
    try:
        import tf2onnx
    except ImportError:
        raise ExportError(
            "ONNX export needs tf2onnx: pip install 'keras-retinanet[onnx]' (or pip install tf2onnx)"
        ) from None
    import tensorflow as tf

    detect = detection_graph(model, preprocess_mode, **graph_options)
    signature = [tf.TensorSpec((None, None, None, 3), getattr(tf, input_dtype), name=INPUT_NAME)]
    function = tf.function(detect, input_signature=signature)

    def convert():
        return tf2onnx.convert.from_function(function, input_signature=signature, opset=opset)[0]

    try:
        with _tf2onnx_without_graph_copies():
            proto = convert()
    except Exception:  # an optimiser failed: convert again, letting tf2onnx skip what fails
        proto = convert()
    count = None
    if quantize == "int8":
        calibration = calibration if hasattr(calibration, "__getitem__") else list(calibration)
        count = len(calibration)
        proto = quantize_onnx(proto, calibration, input_dtype=input_dtype)
    if spec is not None:
        spec = export_spec(
            spec, "onnx", preprocess_mode, input_dtype, None, quantize=quantize, calibration_images=count,
            **graph_options,
        )  # fmt: skip
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, spec.to_json()
    with open(os.fspath(path), "wb") as file:
        file.write(proto.SerializeToString())


def _import_onnx_quantization():
    try:
        from onnxruntime import quantization
    except ImportError:
        raise ExportError(
            "int8 ONNX export needs onnxruntime (its quantisation tools): pip install 'keras-retinanet[onnx]'"
        ) from None
    return quantization


def onnx_nodes_to_quantize(graph, keep_float_outputs=True):
    """Names of the nodes of an exported graph that int8 quantisation covers: its convolutional network.

    Every ``Conv`` but the depthwise ones is in it; a ``Relu``, ``Clip``, ``Add``, ``MaxPool`` or ``Resize`` is too when all its
    inputs that are not constants come out of the network (through reshapes and
    transposes): the residual sums of the backbone and the FPN's upsample-and-add, not the
    preprocessing, the resize of the image or the box decoding (whose inputs are float
    computations). With ``keep_float_outputs``, the convolutions whose outputs leave the
    network, feeding no other convolution (the heads' output layers: box offsets and class
    logits), stay float too.

    Args:
        graph: ``onnx.GraphProto`` (nodes in topological order, as ONNX stores them).

    Returns:
        list of node names.
    """
    constants = {initializer.name for initializer in graph.initializer}
    constants |= {node.output[0] for node in graph.node if node.op_type == "Constant"}
    inside = set()  # tensors of the network
    chosen = []
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in graph.node:
        data_inputs = node.input[:1] if node.op_type == "Resize" else node.input  # not its computed sizes
        dynamic = [name for name in data_inputs if name and name not in constants]
        if node.op_type == "Conv":
            take = not _depthwise(node)
        elif node.op_type in ONNX_QUANTIZED_OP_TYPES or node.op_type in ONNX_PASS_THROUGH_OP_TYPES:
            take = bool(dynamic) and all(name in inside for name in dynamic)
        else:
            take = False
        if take:
            inside.update(node.output)
            if node.op_type in ONNX_QUANTIZED_OP_TYPES:
                chosen.append(node)
    if keep_float_outputs:
        feeds_conv = set()  # nodes with a convolution downstream
        for node in reversed(graph.node):
            if any(c.op_type == "Conv" or c.name in feeds_conv for out in node.output for c in consumers.get(out, ())):
                feeds_conv.add(node.name)
        chosen = [node for node in chosen if node.op_type != "Conv" or node.name in feeds_conv]
    return [node.name for node in chosen]


def _depthwise(node):
    """Whether an ONNX Conv is grouped (depthwise): those stay float (see TFLITE_CONV_OPS)."""
    return any(attribute.name == "group" and attribute.i > 1 for attribute in node.attribute)


class _OnnxCalibrationReader:
    """ONNX Runtime's CalibrationDataReader over calibration images (batch 1, their own size).

    ``set_range`` serves ONNX Runtime's strided calibration (``CalibStridedMinMax``): the
    activations of one stride of images are reduced to their ranges before the next is
    read, so memory holds one image's activations, not every image's.
    """

    def __init__(self, images, input_dtype):
        self.images, self.input_dtype = images, input_dtype
        self.start, self.end = 0, len(images)
        self._iterator = None

    def __len__(self):
        return len(self.images)

    def set_range(self, start_index, end_index):
        self.start, self.end = start_index, end_index
        self._iterator = None

    def get_next(self):
        if self._iterator is None:
            self._iterator = iter(range(self.start, min(self.end, len(self.images))))
        index = next(self._iterator, None)
        if index is None:
            return None
        return {INPUT_NAME: _calibration_image(self.images[index])[None].astype(self.input_dtype)}

    def rewind(self):
        self._iterator = None


def quantize_onnx(proto, calibration, input_dtype="uint8", keep_float_outputs=True, per_channel=True):
    """The int8 (QDQ) version of an exported float ONNX graph, calibrated on images.

    ONNX Runtime's static quantisation: each quantised tensor gets QuantizeLinear /
    DequantizeLinear pairs with the range seen on the calibration images (min / max), which
    ONNX Runtime fuses into int8 kernels (QLinearConv, ...). Weights int8 (per output
    channel with ``per_channel``), activations uint8, for ``onnx_nodes_to_quantize``.

    Args:
        proto: ``onnx.ModelProto`` written by tf2onnx (``export_onnx``).
        calibration: sequence of (H, W, 3) uint8 BGR original images.
        input_dtype: the graph's input type.

    Returns:
        the quantised ``onnx.ModelProto``.
    """
    import onnx

    quantization = _import_onnx_quantization()
    if len(calibration) == 0:
        raise CalibrationError("int8 quantisation needs at least one calibration image, got none")
    with tempfile.TemporaryDirectory(prefix="onnx_quantize_") as folder:
        source, target = os.path.join(folder, "float.onnx"), os.path.join(folder, "int8.onnx")
        onnx.save(proto, source)
        nodes = onnx_nodes_to_quantize(proto.graph, keep_float_outputs=keep_float_outputs)
        quantization.quantize_static(
            source, target, _OnnxCalibrationReader(calibration, input_dtype),
            quant_format=quantization.QuantFormat.QDQ, per_channel=per_channel,
            activation_type=quantization.QuantType.QUInt8, weight_type=quantization.QuantType.QInt8,
            nodes_to_quantize=nodes, op_types_to_quantize=list(ONNX_QUANTIZED_OP_TYPES),
            calibrate_method=quantization.CalibrationMethod.MinMax,
            extra_options={"CalibStridedMinMax": ONNX_CALIBRATION_STRIDE},
        )  # fmt: skip
        return onnx.load(target)


@contextlib.contextmanager
def _tf2onnx_without_graph_copies():
    """Stop tf2onnx from deep-copying the graph before each optimiser pass.

    The copies, kept to roll back an optimiser that fails, take about a third of the
    conversion time; tf2onnx skips them whenever ``TF2ONNX_CATCH_ERRORS`` is set.
    """
    previous = os.environ.get(TF2ONNX_CATCH_ERRORS)
    os.environ[TF2ONNX_CATCH_ERRORS] = "false"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[TF2ONNX_CATCH_ERRORS]
        else:
            os.environ[TF2ONNX_CATCH_ERRORS] = previous


def export_model(
    model,
    path,
    format=None,
    preprocess_mode="caffe",
    input_size=None,
    input_dtype="uint8",
    opset=DEFAULT_ONNX_OPSET,
    spec=None,
    quantize=None,
    calibration=None,
    **graph_options,
):
    """Write an inference model in the format of ``path``'s suffix (or ``format``).

    Args:
        model: inference model (``models.convert_model``).
        path: output file (``.keras``, ``.tflite``, ``.onnx``) or directory (SavedModel).
        format: one of ``FORMATS`` to override the suffix.
        preprocess_mode: the backbone's preprocessing mode (not used for ``.keras``).
        input_size: (H, W), TFLite only (required there).
        input_dtype: 'uint8' or 'float32', TFLite and ONNX (SavedModel has both).
        opset: ONNX opset.
        spec: ``DetectorSpec`` the file carries (default: the model's own ``spec``).
        quantize: None, 'int8' (TFLite, ONNX) or 'fp16' (TFLite); see the module docstring.
        calibration: int8 only: the calibration images, e.g.
            ``calibration.calibration_images(path)`` (any iterable of (H, W, 3) uint8 BGR
            original images).
        **graph_options: ``detection_graph`` options.

    The output is written atomically (``utils.files.write_atomically``): a failure
    mid-way (e.g. a full disk, an ``OutputError``) leaves a previous file at ``path`` intact.

    Returns:
        The format written.
    """
    from .utils.files import write_atomically

    format = format_from_path(path, format)
    if spec is None:
        spec = getattr(model, "spec", None)
    if format == "keras" and not os.fspath(path).endswith(".keras"):
        raise ExportError(f"a Keras model file must end with .keras, got {path}")
    if format == "tflite" and input_size is None:
        raise ExportError("TFLite needs a fixed input size: give input_size (H, W) (--input-size H W)")
    check_quantize(format, quantize, calibration)
    quantized = {"quantize": quantize, "calibration": calibration} if quantize else {}

    def write(target):
        if format == "keras":
            _save_keras(model, target, spec)
        elif format == "saved_model":
            export_saved_model(model, target, preprocess_mode, spec=spec, **graph_options)
        elif format == "tflite":
            export_tflite(
                model, target, preprocess_mode, input_size, input_dtype=input_dtype, spec=spec, **quantized,
                **graph_options,
            )  # fmt: skip
        else:
            export_onnx(
                model, target, preprocess_mode, input_dtype=input_dtype, opset=opset, spec=spec, **quantized,
                **graph_options,
            )  # fmt: skip

    write_atomically(path, write)
    return format


def _save_keras(model, path, spec):
    """``model.save(path)`` carrying ``spec`` (the caller's model keeps its own spec)."""
    if spec is None or getattr(model, "spec", None) == spec:
        model.save(path)
        return
    from .models import RetinaNetModel, with_spec

    if not isinstance(model, RetinaNetModel):
        with_spec(model, spec).save(path)  # a wrapper sharing the layers
        return
    previous = model.spec
    model.spec = spec
    try:
        model.save(path)
    finally:
        model.spec = previous


def export_spec(
    spec,
    format,
    preprocess_mode,
    input_dtype,
    input_size,
    image_min_side=DEFAULT_IMAGE_MIN_SIDE,
    image_max_side=DEFAULT_IMAGE_MAX_SIDE,
    no_resize=False,
    channel_order="bgr",
    quantize=None,
    calibration_images=None,
):
    """The spec of an exported graph: ``spec`` with the graph's preprocessing, sizes, input and quantisation."""
    return spec.replace(
        preprocess_mode=preprocess_mode,
        image_min_side=int(image_min_side),
        image_max_side=int(image_max_side),
        no_resize=bool(no_resize),
        export=ExportSpec(format, channel_order, input_dtype, input_size, quantize, calibration_images),
    )


def read_export_spec(path, format=None):
    """The detector spec an exported model carries (None if it has none).

    Args:
        path: SavedModel directory, ``.tflite`` or ``.onnx`` file.
        format: its format (default: from the path).

    Raises:
        SpecError: the spec is malformed or too new.
    """
    format = format_from_path(path, format)
    path = os.fspath(path)
    text = None
    if format == "saved_model":
        spec_path = os.path.join(path, SAVED_MODEL_SPEC_PATH)
        if os.path.isfile(spec_path):
            with open(spec_path, encoding="utf-8") as file:
                text = file.read()
    elif format == "tflite":
        data = _tflite_metadata(path, METADATA_KEY)
        text = None if data is None else data.decode("utf-8")
    elif format == "onnx":
        import onnx

        proto = onnx.load(path, load_external_data=False)
        text = next((entry.value for entry in proto.metadata_props if entry.key == METADATA_KEY), None)
    else:
        raise ExportError(f"read_export_spec reads exported models, not {format!r} files")
    return None if text is None else DetectorSpec.from_json(text)
