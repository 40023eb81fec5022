"""Run a detector on images: load any model format, predict boxes in original-image pixels.

    from keras_retinanet.inference import load_detector

    detector = load_detector("snapshots/resnet50_csv_10.keras", backbone="resnet50")
    detections = detector.predict("image.jpg")   # or a BGR uint8 array, or a list
    detections.boxes, detections.scores, detections.labels

``load_detector`` takes a training snapshot (converted to an inference model on the fly),
an inference model (``.keras``), or an exported model (SavedModel directory, ``.tflite``,
``.onnx``; see ``keras_retinanet.export``). The Keras path preprocesses for the backbone,
resizes with ``utils.image.resize_image`` and scales the boxes back; exported graphs do
the same inside. Images of the same size are batched together.

``Detector.predict_tiled`` runs a large image (aerial imagery, microscopy) as
overlapping tiles and merges their detections with class-wise NMS.
"""
import dataclasses
import os
import warnings

import cv2
import numpy as np

from .export import INPUT_NAME, OUTPUT_NAMES, PADDING_VALUE, SERVING_SIGNATURES, format_from_path
from .utils.image import read_image_bgr, resize_image

DEFAULT_SCORE_THRESHOLD = 0.05
DEFAULT_TILE_OVERLAP = 64
DEFAULT_MERGE_NMS_THRESHOLD = 0.5


@dataclasses.dataclass(frozen=True)
class Detections:
    """Detections of one image, best first.

    boxes: (K, 4) float32, absolute x1, y1, x2, y2 in the original image's pixels;
    scores: (K,) float32; labels: (K,) int32. ``len()`` is K; unpacks as
    ``boxes, scores, labels = detections``.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    @classmethod
    def empty(cls):
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))

    def __len__(self):
        return len(self.scores)

    def __iter__(self):
        return iter((self.boxes, self.scores, self.labels))


class ModelLoadError(ValueError):
    """A model file cannot be used for detection (missing, unreadable, wrong kind)."""


def first_line(error):
    """The first line of an exception's message (its type name if the message is empty)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# ------------------------------------------------------------------------------- runners
# A runner maps a batch of same-size original images (B, H, W, 3) uint8 BGR to padded
# detections (boxes (B, D, 4) in those images' pixels, scores (B, D), labels (B, D)).


class KerasRunner:
    """Keras inference model: preprocess, resize (``utils.image.resize_image``), scale back.

    Args:
        model: inference model (preprocessed images -> [boxes, scores, labels, ...]).
        preprocess_image: f(BGR image) -> float32 image (``Backbone.preprocess_image``).
        image_min_side, image_max_side: resize bounds; no_resize: keep the image size.
    """

    max_batch_size = None

    def __init__(self, model, preprocess_image, image_min_side=800, image_max_side=1333, no_resize=False):
        self.model = model
        self.preprocess_image = preprocess_image
        self.image_min_side = image_min_side
        self.image_max_side = image_max_side
        self.no_resize = no_resize

    def __call__(self, images):
        inputs, scale = [], 1.0
        for image in images:
            image = self.preprocess_image(image)
            if not self.no_resize:
                image, scale = resize_image(image, min_side=self.image_min_side, max_side=self.image_max_side)
            inputs.append(image)
        boxes, scores, labels = (np.asarray(o) for o in self.model.predict_on_batch(np.stack(inputs))[:3])
        height, width = images.shape[1:3]
        boxes = np.clip(boxes / scale, 0, [width, height, width, height])
        return boxes, scores, labels


class SavedModelRunner:
    """SavedModel written by ``export.export_saved_model`` (any size, any batch)."""

    max_batch_size = None

    def __init__(self, path):
        import tensorflow as tf

        self._tf = tf
        try:
            loaded = tf.saved_model.load(os.fspath(path))
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"cannot load SavedModel {path}: {first_line(error)}") from None
        missing = [name for name in SERVING_SIGNATURES.values() if name not in loaded.signatures]
        if missing:
            raise ModelLoadError(
                f"{path} is not a SavedModel exported by retinanet-convert-model (no signature {missing[0]!r})"
            )
        self._loaded = loaded  # keeps the variables alive
        self.signature = loaded.signatures[SERVING_SIGNATURES["uint8"]]

    def __call__(self, images):
        outputs = self.signature(**{INPUT_NAME: self._tf.constant(images)})
        return tuple(outputs[name].numpy() for name in OUTPUT_NAMES)


def _tflite_interpreter(path, num_threads=None):
    try:
        from ai_edge_litert.interpreter import Interpreter  # TensorFlow's successor, if installed
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter is deprecated")
        return Interpreter(model_path=os.fspath(path), num_threads=num_threads)


class TFLiteRunner:
    """TFLite model written by ``export.export_tflite``: fixed input size, batch 1.

    Images of another size are resized to fit the input size (aspect ratio kept) and
    padded at the bottom and right; boxes are scaled back to the image.

    Args:
        path: ``.tflite`` file.
        num_threads: interpreter threads (None: its default).
    """

    max_batch_size = 1

    def __init__(self, path, num_threads=None):
        try:
            interpreter = _tflite_interpreter(path, num_threads)
        except (ValueError, RuntimeError) as error:
            raise ModelLoadError(f"cannot load TFLite model {path}: {first_line(error)}") from None
        try:
            self.runner = interpreter.get_signature_runner()
        except ValueError as error:
            raise ModelLoadError(f"{path} has no serving signature: {error}") from None
        details = self.runner.get_input_details().get(INPUT_NAME)
        if details is None:
            raise ModelLoadError(f"{path} is not a TFLite model exported by retinanet-convert-model")
        self.interpreter = interpreter
        self.input_height, self.input_width = (int(s) for s in details["shape"][1:3])
        self.input_dtype = np.dtype(details["dtype"])

    def __call__(self, images):
        image = images[0]
        height, width = image.shape[:2]
        scale = 1.0
        if (height, width) != (self.input_height, self.input_width):
            scale = min(self.input_height / height, self.input_width / width)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            resized = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
            image = np.zeros((self.input_height, self.input_width, 3), dtype=image.dtype)
            image[: resized.shape[0], : resized.shape[1]] = resized
        outputs = self.runner(**{INPUT_NAME: image[None].astype(self.input_dtype)})
        boxes, scores, labels = (outputs[name] for name in OUTPUT_NAMES)
        boxes = np.clip(boxes / scale, 0, [width, height, width, height])
        return boxes, scores, labels


class OnnxRunner:
    """ONNX model written by ``export.export_onnx`` (any size, any batch), on ONNX Runtime.

    Args:
        path: ``.onnx`` file.
        num_threads: intra-op threads (None: ONNX Runtime's default, one per core).
    """

    max_batch_size = None
    LOG_SEVERITY_ERROR = 3

    def __init__(self, path, num_threads=None):
        try:
            import onnxruntime
        except ImportError:
            raise ModelLoadError(
                f"running {path} needs onnxruntime: pip install 'keras-retinanet[onnx]'"
            ) from None
        options = onnxruntime.SessionOptions()
        options.log_severity_level = self.LOG_SEVERITY_ERROR
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
        try:
            self.session = onnxruntime.InferenceSession(
                os.fspath(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"cannot load ONNX model {path}: {first_line(error)}") from None
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if INPUT_NAME not in inputs or not set(OUTPUT_NAMES) <= outputs:
            raise ModelLoadError(f"{path} is not an ONNX model exported by retinanet-convert-model")
        self.input_dtype = np.uint8 if inputs[INPUT_NAME].type == "tensor(uint8)" else np.float32

    def __call__(self, images):
        outputs = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: images.astype(self.input_dtype)})
        return tuple(outputs)


# ------------------------------------------------------------------------------- detector


def _as_image(image):
    """(H, W, 3) uint8 BGR image from a path or an array (other dtypes are clipped to 0..255)."""
    if isinstance(image, (str, os.PathLike)):
        return read_image_bgr(image)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a (H, W, 3) BGR image, got an array of shape {image.shape}")
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return image


def _select(boxes, scores, labels, score_threshold, max_detections):
    """Detections of one image above the threshold (padding dropped), best first."""
    keep = np.flatnonzero((scores > score_threshold) & (scores > PADDING_VALUE))
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    if max_detections is not None:
        keep = keep[:max_detections]
    return Detections(
        boxes[keep].astype(np.float32), scores[keep].astype(np.float32), labels[keep].astype(np.int32)
    )


def tile_windows(height, width, tile_size, overlap=DEFAULT_TILE_OVERLAP):
    """Windows of ``tile_size`` px covering an image, neighbours overlapping by >= ``overlap``.

    The last window of a row or column is aligned with the image's edge, so every window
    has the same size (``min(tile_size, side)`` along each axis).

    Returns:
        (T, 4) int64 array of x1, y1, x2, y2.
    """
    if tile_size < 1:
        raise ValueError(f"tile size must be >= 1, got {tile_size}")
    if not 0 <= overlap < tile_size:
        raise ValueError(f"tile overlap must be in [0, tile size ({tile_size})), got {overlap}")

    def starts(side):
        size = min(tile_size, side)
        if side <= size:
            return np.zeros(1, dtype=np.int64), size
        # evenly spread, integer starts: consecutive starts differ by at most size - overlap
        count = -(-(side - size) // (size - overlap)) + 1
        return np.arange(count, dtype=np.int64) * (side - size) // (count - 1), size

    ys, tile_height = starts(height)
    xs, tile_width = starts(width)
    y1, x1 = (grid.ravel() for grid in np.meshgrid(ys, xs, indexing="ij"))
    return np.stack([x1, y1, x1 + tile_width, y1 + tile_height], axis=1)


def merge_detections(boxes, scores, labels, iou_threshold=DEFAULT_MERGE_NMS_THRESHOLD, max_detections=None):
    """Class-wise NMS over detections from several sources (e.g. overlapping tiles).

    Boxes of different classes are moved apart by a class-dependent offset so that one
    ``tf.image.non_max_suppression`` call handles every class.

    Args:
        boxes: (N, 4) x1, y1, x2, y2; scores: (N,); labels: (N,) int.

    Returns:
        ``Detections``, best first.
    """
    import tensorflow as tf

    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    labels = np.asarray(labels, dtype=np.int32).reshape(-1)
    if len(scores) == 0:
        return Detections.empty()
    offset = (labels.astype(np.float32) * (float(np.abs(boxes).max()) + 1.0))[:, None]
    keep = tf.image.non_max_suppression(
        boxes + offset, scores, max_output_size=len(scores) if max_detections is None else max_detections,
        iou_threshold=iou_threshold,
    ).numpy()  # fmt: skip
    return Detections(boxes[keep], scores[keep], labels[keep])


class Detector:
    """Detections of a RetinaNet for BGR images of any size, in original-image pixels.

    Args:
        runner: one of the runners above (``load_detector`` picks it).
        score_threshold: keep detections scoring higher.
        max_detections: keep at most this many per image (None: all the model returns).
        batch_size: images per model call (images of the same size only).
    """

    def __init__(self, runner, score_threshold=DEFAULT_SCORE_THRESHOLD, max_detections=None, batch_size=1):
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.runner = runner
        self.score_threshold = score_threshold
        self.max_detections = max_detections
        self.batch_size = batch_size

    @property
    def effective_batch_size(self):
        limit = getattr(self.runner, "max_batch_size", None)
        return self.batch_size if limit is None else min(self.batch_size, limit)

    def predict_batch(self, images):
        """Detections of images that all have the same size, in one model call.

        Args:
            images: (B, H, W, 3) uint8 BGR array or a list of same-size images.

        Returns:
            list of B ``Detections``.
        """
        images = np.stack([_as_image(image) for image in images])
        boxes, scores, labels = self.runner(images)
        return [
            _select(boxes[i], scores[i], labels[i], self.score_threshold, self.max_detections)
            for i in range(len(images))
        ]

    def predict(self, images):
        """Detections of one image or of several.

        Args:
            images: a path or a (H, W, 3) uint8 BGR array, or a list of those (any sizes;
                consecutive images of the same size are batched by ``batch_size``).

        Returns:
            ``Detections`` for one image, a list of them for a list.
        """
        if isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim == 3):
            return self.predict([images])[0]
        return [detections for _, _, detections in self.predict_iter(enumerate(images))]

    def predict_iter(self, items):
        """Stream detections over ``(key, image)`` pairs, loading images lazily.

        Consecutive images of the same size are batched (up to ``batch_size``), so memory
        holds one batch at a time; results come in input order.

        Args:
            items: iterable of (key, path or (H, W, 3) uint8 BGR array); keys are passed through.

        Yields:
            (key, image (H, W, 3) uint8 BGR array, ``Detections``).
        """
        keys, batch = [], []
        for key, image in items:
            image = _as_image(image)
            if batch and (image.shape != batch[0].shape or len(batch) == self.effective_batch_size):
                yield from zip(keys, batch, self.predict_batch(batch))
                keys, batch = [], []
            keys.append(key)
            batch.append(image)
        if batch:
            yield from zip(keys, batch, self.predict_batch(batch))

    def predict_tiled(self, image, tile_size, overlap=DEFAULT_TILE_OVERLAP, nms_threshold=DEFAULT_MERGE_NMS_THRESHOLD):
        """Detections of a large image from overlapping tiles, merged with class-wise NMS.

        Each tile goes through the model like an image (resized by the detector's
        min/max side: give ``tile_size`` as both to run tiles at native resolution).

        Args:
            image: path or (H, W, 3) uint8 BGR array.
            tile_size: tile side in pixels.
            overlap: minimum overlap of neighbouring tiles in pixels (make it at least
                the size of the objects, so that each is whole in some tile).
            nms_threshold: IoU above which the lower-scoring of two same-class
                detections from different tiles is dropped.

        Returns:
            ``Detections`` in the full image's pixels, best first.
        """
        image = _as_image(image)
        windows = tile_windows(image.shape[0], image.shape[1], tile_size, overlap)
        tiles = [image[y1:y2, x1:x2] for x1, y1, x2, y2 in windows]
        parts = []
        for start in range(0, len(tiles), self.effective_batch_size):
            batch = tiles[start : start + self.effective_batch_size]
            for window, detections in zip(windows[start:], self.predict_batch(batch)):
                offset = np.array([window[0], window[1], window[0], window[1]], dtype=np.float32)
                parts.append(dataclasses.replace(detections, boxes=detections.boxes + offset))
        return merge_detections(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.labels for p in parts]),
            iou_threshold=nms_threshold,
            max_detections=self.max_detections,
        )


# ------------------------------------------------------------------------------- loading


def anchor_settings(config):
    """(anchor_params or None, pyramid_levels or None) of a config file path or parser."""
    if config is None:
        return None, None
    from .utils.config import parse_anchor_parameters, parse_pyramid_levels, read_config_file

    if isinstance(config, (str, os.PathLike)):
        config = read_config_file(config)
    anchor_params = parse_anchor_parameters(config) if "anchor_parameters" in config else None
    pyramid_levels = parse_pyramid_levels(config) if "pyramid_levels" in config else None
    return anchor_params, pyramid_levels


def _import_custom_objects():
    # registers the package's layers, losses and initializers for keras.models.load_model
    from . import initializers, layers, losses  # noqa: F401


def load_inference_model(
    path,
    backbone="resnet50",
    training=None,
    config=None,
    nms=True,
    class_specific_filter=True,
    fold_batch_norm=True,
    **filter_options,
):
    """Load a ``.keras`` model as an inference model, converting a training model.

    Args:
        path: ``.keras`` file.
        backbone: backbone name (checked).
        training: True: must be a training model (converted); False: must be an
            inference model; None: either.
        config: config file (path or parser) with the anchor parameters / pyramid
            levels used for training (training models only).
        nms, class_specific_filter, **filter_options: ``models.convert_model`` options
            (nms_threshold, score_threshold, max_detections, ...).
        fold_batch_norm: fold the backbone's batch normalisation into its convolutions
            (same detections, faster; the inference model no longer shares weights with
            the training model).

    Returns:
        (inference model, was_converted).

    Raises:
        ModelLoadError: missing or unreadable file, or a model of the wrong kind.
    """
    from . import models

    _import_custom_objects()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelLoadError(f"model file not found: {path}")
    models.backbone(backbone)
    try:
        model = models.load_model(path, backbone_name=backbone)
    except Exception as error:  # keras raises many kinds for a file that is not a model
        raise ModelLoadError(f"cannot load model {path}: {first_line(error)}") from None
    outputs = list(model.output_names)
    is_training = "regression" in outputs and "classification" in outputs
    if training is True and not is_training:
        raise ModelLoadError(
            f"{path} is not a training model (outputs {outputs}): it is probably an inference model already"
        )
    if training is False and is_training:
        raise ModelLoadError(f"{path} is a training model (outputs {outputs}); an inference model was expected")
    if not is_training:
        if len(model.outputs) < 3:
            raise ModelLoadError(f"{path} is not a RetinaNet model (outputs {outputs})")
        return model, False
    anchor_params, pyramid_levels = anchor_settings(config)
    if pyramid_levels is not None:
        filter_options["pyramid_levels"] = pyramid_levels
    converted = models.convert_model(
        model, nms=nms, class_specific_filter=class_specific_filter, anchor_params=anchor_params,
        fold_batch_norm=fold_batch_norm, **filter_options,
    )  # fmt: skip
    return converted, True


def load_detector(
    path,
    backbone="resnet50",
    config=None,
    image_min_side=800,
    image_max_side=1333,
    no_resize=False,
    score_threshold=DEFAULT_SCORE_THRESHOLD,
    max_detections=None,
    batch_size=1,
    **convert_options,
):
    """A ``Detector`` for a model file of any supported format.

    Args:
        path: training or inference model (``.keras``), SavedModel directory,
            ``.tflite`` or ``.onnx`` file (exported by ``retinanet-convert-model``).
        backbone: backbone of a ``.keras`` model (its preprocessing); exported graphs
            preprocess inside.
        config: config file of a training model (anchor parameters, pyramid levels).
        image_min_side, image_max_side, no_resize: resize settings of a ``.keras``
            model (exported graphs carry their own).
        score_threshold, max_detections, batch_size: see ``Detector``.
        **convert_options: ``models.convert_model`` options for a training model
            (nms, class_specific_filter, nms_threshold, max_detections (in the graph)...).

    Raises:
        ModelLoadError: the file is missing, unreadable or not a RetinaNet model.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelLoadError(f"model not found: {path}")
    try:
        format = format_from_path(path)
    except ValueError as error:
        raise ModelLoadError(str(error)) from None
    if format == "saved_model" and not os.path.isdir(path):
        raise ModelLoadError(f"{path} is neither a model file (.keras, .tflite, .onnx) nor a SavedModel directory")
    if format == "keras":
        from . import models

        convert_options.setdefault("score_threshold", min(score_threshold, DEFAULT_SCORE_THRESHOLD))
        model, _ = load_inference_model(path, backbone=backbone, config=config, **convert_options)
        runner = KerasRunner(
            model, models.backbone(backbone).preprocess_image, image_min_side, image_max_side, no_resize
        )
    elif format == "saved_model":
        runner = SavedModelRunner(path)
    elif format == "tflite":
        runner = TFLiteRunner(path)
    else:
        runner = OnnxRunner(path)
    return Detector(runner, score_threshold=score_threshold, max_detections=max_detections, batch_size=batch_size)


# ------------------------------------------------------------------------------- output formats

BOX_DECIMALS = 2
SCORE_DECIMALS = 4


def csv_rows(path, detections, label_to_name=str):
    """Rows of annotations.csv (``path,x1,y1,x2,y2,class_name``) for one image's detections.

    An image without detections gets one ``path,,,,,`` row, and so do boxes that are empty
    once rounded (annotations need x2 > x1 and y2 > y1), so the file reads back with
    ``CSVGenerator``.

    Args:
        path: image path as it should appear in the file.
        detections: ``Detections``.
        label_to_name: label -> class name.

    Returns:
        list of 6-item lists of strings.
    """
    boxes = np.round(np.asarray(detections.boxes, dtype=np.float64), BOX_DECIMALS)
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    rows = [
        [path] + [f"{value:.{BOX_DECIMALS}f}" for value in box] + [label_to_name(int(label))]
        for box, label in zip(boxes[valid], np.asarray(detections.labels)[valid])
    ]
    return rows or [[path, "", "", "", "", ""]]


def coco_results(image_id, detections, category_ids=None):
    """COCO results records (``image_id, category_id, bbox [x, y, w, h], score``) of one image.

    Args:
        image_id: the image's id.
        detections: ``Detections``.
        category_ids: label -> COCO category id (default: the label).
    """
    boxes = np.asarray(detections.boxes, dtype=np.float64).reshape(-1, 4)
    xywh = np.round(np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1), BOX_DECIMALS)
    return [
        {
            "image_id": image_id,
            "category_id": int(label) if category_ids is None else category_ids(int(label)),
            "bbox": [float(v) for v in box],
            "score": round(float(score), SCORE_DECIMALS),
        }
        for box, score, label in zip(xywh, detections.scores, detections.labels)
    ]
