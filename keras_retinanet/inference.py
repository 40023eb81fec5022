"""Run a detector on images: load any model format, predict boxes in original-image pixels.

    from keras_retinanet.inference import load_detector

    detector = load_detector("snapshots/resnet50_csv_10.keras")
    detections = detector.predict("image.jpg")   # or a BGR uint8 array, or a list
    detections.boxes, detections.scores, detections.labels
    detector.class_names, detector.spec           # what the model's detector spec records

``load_detector`` takes a training snapshot (converted to an inference model on the fly),
an inference model (``.keras``), or an exported model (SavedModel directory, ``.tflite``,
``.onnx``; see ``keras_retinanet.export``), and reads the model's detector spec
(``keras_retinanet.spec``): backbone preprocessing, anchors, image sizes and class names
come from the model, not from the caller.

This module is the one path from an image to detections. Every user of a model goes
through ``Detector.predict_batch``: ``utils.eval.evaluate`` and the evaluation callbacks
(with ``as_detector`` around a bare inference model and its generator),
``retinanet-predict`` (plain and tiled) and ``retinanet-evaluate``. For a Keras model the
steps are: preprocess for the backbone -> resize (``utils.image.resize_image``) -> zero-pad
a batch -> the inference model -> boxes divided by the resize scale. Exported graphs do
the same inside (``export.detection_graph``).

Batches hold images of one size (after resizing, a batch needs no padding), so batching
never changes a detection. ``Detector.predict_iter(items, workers=N)`` is the same path as a
small pipeline: N threads read, decode, preprocess and resize the next images (the runner's
``prepare``), the model runs in a thread of its own on batches of images of one resized
size, and the caller gets the detections in input order; the results are those of
``workers=0``, where every step runs in the caller's thread.

Box conventions: a detection box is what the model returns, in the original image's
pixels. ``Detector(clip_boxes=True)`` (the default, what ``retinanet-predict`` writes) clips
every box to its image, as torchvision does; evaluation does not, as fizyr's evaluate and
the Pascal VOC devkit do not. (A runner handed images of several sizes pads them, and clips
the boxes of a padded image to that image.)
"""
import dataclasses
import functools
import os
import time
import warnings

import numpy as np

from . import constants
from .errors import ModelLoadError, SpecConflictError, SpecError, first_line  # noqa: F401 (public names)
from .export import INPUT_NAME, OUTPUT_NAMES, SERVING_SIGNATURES, model_file_format
from .spec import FIXED_FIELDS, RESIZE_FIELDS, AnchorSpec, DetectorSpec, read_spec, resolve_recipe
from .utils.config import anchor_settings as _config_anchor_settings
from .utils.image import bgr_uint8, compute_resize_scale, letterbox_image, preprocess_image, read_image_bgr, resize_image
from .utils.prefetch import ordered_map
from .utils.threads import model_calls_at_once, use_parallel_ops_for

DEFAULT_SCORE_THRESHOLD = constants.DEFAULT_SCORE_THRESHOLD
PADDING_VALUE = constants.PADDING_VALUE
DEFAULT_TILE_OVERLAP = 64
DEFAULT_MERGE_NMS_THRESHOLD = 0.5
# model calls at once in Detector.predict_iter (runners with concurrent_calls); None: as many as
# TensorFlow's threads want (``utils.threads.model_calls_at_once``)
MODEL_THREADS = None


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


# ------------------------------------------------------------------------------- runners
# A runner maps a batch of original images (B, H, W, 3) uint8 BGR to padded detections:
# boxes (B, D, 4) in those images' pixels, scores (B, D), labels (B, D). ``mixed_sizes``:
# whether the images of one call may differ in size; ``max_batch_size``: None or a limit;
# ``concurrent_calls``: whether two threads may run it at once.
#
# It does so in two steps, so that ``Detector.predict_iter`` can prepare the next images in
# other threads while the model runs, and batch images whose *prepared* inputs have one size:
#   prepare(image) -> (input array, context): the per-image work before the model (the
#       preprocessing and resizing of a Keras model; thread safe);
#   run(inputs, contexts) -> (boxes, scores, labels) in the original pixels;
# and ``runner(images)`` is ``run`` of the prepared images. A runner with only ``__call__``
# (any callable of that contract) is run as is, with nothing prepared ahead.


def _model_outputs(outputs):
    """(boxes (B, D, 4), scores (B, D), labels (B, D)) numpy arrays from predict_on_batch."""
    if not isinstance(outputs, (list, tuple)) or len(outputs) < 3:
        found = f"{len(outputs)} outputs" if isinstance(outputs, (list, tuple)) else "a single output"
        raise ValueError(
            "the model must be an inference model returning [boxes, scores, labels] "
            f"(found {found}); convert a training model with keras_retinanet.models.convert_model"
        )
    boxes, scores, labels = (np.asarray(output) for output in outputs[:3])
    if boxes.ndim != 3 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:2] or labels.shape != boxes.shape[:2]:
        raise ValueError(
            "the model must return boxes (B, D, 4), scores (B, D) and labels (B, D); got shapes "
            f"{boxes.shape}, {scores.shape}, {labels.shape} (is it a training model? convert it first)"
        )
    return boxes, scores, labels


def pad_batch(images):
    """Stack (H_i, W_i, C) images into (B, max H, max W, C) float32, zero padded bottom-right."""
    if all(image.shape == images[0].shape for image in images):  # one copy, no padding
        return np.stack([np.asarray(image, dtype=np.float32) for image in images])
    height = max(image.shape[0] for image in images)
    width = max(image.shape[1] for image in images)
    batch = np.zeros((len(images), height, width, images[0].shape[2]), dtype=np.float32)
    for index, image in enumerate(images):
        batch[index, : image.shape[0], : image.shape[1]] = image
    return batch


class KerasRunner:
    """A Keras inference model: preprocess, resize, pad a batch, run, scale the boxes back.

    Args:
        model: inference model (preprocessed images -> [boxes, scores, labels, ...]), or
            anything with such a ``predict_on_batch``.
        preprocess_image: f(BGR image) -> float32 image (``Backbone.preprocess_image``).
        image_min_side, image_max_side: resize bounds; no_resize: keep the image size.
        resize_image: f(image) -> (resized image, scale), instead of the bounds (e.g. a
            generator's ``resize_image``).
    """

    max_batch_size = None
    # Zero padding changes the activations near the padded borders (and the FPN's grid), so
    # a padded batch would not give what one image at a time gives: ``Detector`` hands this
    # runner images of one size only (any that differ are still padded and clipped safely).
    mixed_sizes = False
    concurrent_calls = True

    def __init__(
        self,
        model,
        preprocess_image,
        image_min_side=constants.DEFAULT_IMAGE_MIN_SIDE,
        image_max_side=constants.DEFAULT_IMAGE_MAX_SIDE,
        no_resize=False,
        resize_image=None,
    ):
        self.model = model
        self.preprocess_image = preprocess_image
        self.image_min_side = image_min_side
        self.image_max_side = image_max_side
        self.no_resize = no_resize
        self._resize = resize_image

    def resize(self, image):
        """(resized image, scale) of a preprocessed image."""
        if self._resize is not None:
            return self._resize(image)
        if self.no_resize:
            return image, 1.0
        if compute_resize_scale(image.shape, self.image_min_side, self.image_max_side) == 1.0:
            return image, 1.0  # what cv2.resize would return, bit for bit, without the copy
        return resize_image(image, min_side=self.image_min_side, max_side=self.image_max_side)

    def prepare(self, image):
        """(preprocessed, resized float32 image, resize scale) of one (H, W, 3) uint8 BGR image."""
        resized, scale = self.resize(self.preprocess_image(image))
        return resized, float(scale)

    def run(self, inputs, scales):
        """Detections of prepared images (``prepare``), boxes divided by their scales."""
        batch = pad_batch(inputs)
        boxes, scores, labels = _model_outputs(self.model.predict_on_batch(batch))
        boxes = np.array(boxes, dtype=np.float32)
        for index, image in enumerate(inputs):
            height, width = image.shape[:2]
            if (height, width) != batch.shape[1:3]:  # padded: keep its boxes out of the padding
                np.clip(boxes[index], 0, [width, height, width, height], out=boxes[index])
            valid = scores[index] > PADDING_VALUE
            boxes[index][valid] /= scales[index]
        return boxes, scores, labels

    def __call__(self, images):
        inputs, scales = zip(*(self.prepare(image) for image in images))
        return self.run(list(inputs), list(scales))


class SavedModelRunner:
    """SavedModel written by ``export.export_saved_model`` (any size, any batch)."""

    max_batch_size = None
    mixed_sizes = False
    concurrent_calls = True

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

    def prepare(self, image):
        """The image itself: the graph preprocesses and resizes inside."""
        return image, None

    def run(self, inputs, contexts=None):
        outputs = self.signature(**{INPUT_NAME: self._tf.constant(np.stack(inputs))})
        return tuple(outputs[name].numpy() for name in OUTPUT_NAMES)

    def __call__(self, images):
        return self.run(images)


def tflite_runtime():
    """(Interpreter class, name) of the TFLite interpreter this package runs ``.tflite`` files with.

    LiteRT's (``ai_edge_litert``, the ``tflite`` extra) when it is installed, else TensorFlow's
    ``tf.lite.Interpreter``. LiteRT's is the faster and much the leaner one: on the ResNet-50
    RetinaNet at 800x1333, 0.9 GB peak RSS against 2.2 GB (TensorFlow's XNNPACK delegate
    holds far more memory, and TensorFlow itself takes 0.6 GB), and about 15% less time.
    """
    try:
        import ai_edge_litert
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        return tf.lite.Interpreter, f"tf.lite {tf.__version__}"
    return Interpreter, f"LiteRT {getattr(ai_edge_litert, '__version__', '')}".strip()


def _tflite_interpreter(path, num_threads=None):
    Interpreter, _ = tflite_runtime()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter is deprecated")
        return Interpreter(model_path=os.fspath(path), num_threads=num_threads)


class TFLiteRunner:
    """TFLite model written by ``export.export_tflite``: fixed input size, batch 1.

    Images of another size are resized to fit the input size (aspect ratio kept) and
    padded at the bottom and right; boxes are scaled back and kept out of the padding.

    Args:
        path: ``.tflite`` file.
        num_threads: interpreter threads (None: its default).
    """

    max_batch_size = 1
    mixed_sizes = False
    concurrent_calls = False  # an interpreter is not thread safe

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
        self.runtime = tflite_runtime()[1]
        self.input_height, self.input_width = (int(s) for s in details["shape"][1:3])
        self.input_dtype = np.dtype(details["dtype"])

    def prepare(self, image):
        """(the image letterboxed to the input size, (scale, (H, W)) of the original)."""
        height, width = image.shape[:2]
        image, scale = letterbox_image(image, self.input_height, self.input_width)
        return image, (scale, (height, width))

    def run(self, inputs, contexts):
        (image,), ((scale, (height, width)),) = inputs, contexts
        outputs = self.runner(**{INPUT_NAME: image[None].astype(self.input_dtype)})
        boxes, scores, labels = (outputs[name] for name in OUTPUT_NAMES)
        if scale != 1.0:  # letterboxed: scale back, keep the boxes out of the padding
            valid = scores > PADDING_VALUE
            boxes = np.where(valid[..., None], np.clip(boxes / scale, 0, [width, height, width, height]), boxes)
        return boxes, scores, labels

    def __call__(self, images):
        image, context = self.prepare(images[0])
        return self.run([image], [context])


class OnnxRunner:
    """ONNX model written by ``export.export_onnx`` (any size, any batch), on ONNX Runtime.

    Args:
        path: ``.onnx`` file.
        num_threads: intra-op threads (None: ONNX Runtime's default, one per core).
    """

    max_batch_size = None
    mixed_sizes = False
    concurrent_calls = True
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
        # every graph optimisation (the default, said so): fuses the int8 graphs' QuantizeLinear /
        # DequantizeLinear pairs into int8 kernels and lays convolutions out in NCHWc blocks
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
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

    def prepare(self, image):
        """The image itself: the graph preprocesses and resizes inside."""
        return image, None

    def run(self, inputs, contexts=None):
        batch = np.stack(inputs).astype(self.input_dtype)
        outputs = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
        return tuple(outputs)

    def __call__(self, images):
        return self.run(images)


# ------------------------------------------------------------------------------- detector


def _as_image(image):
    """(H, W, 3) uint8 BGR image from a path or an array (other dtypes are clipped to 0..255)."""
    if isinstance(image, (str, os.PathLike)):
        return read_image_bgr(image)
    return bgr_uint8(image)


def select_detections(boxes, scores, labels, score_threshold=DEFAULT_SCORE_THRESHOLD, max_detections=None):
    """One image's detections scoring above the threshold (padding dropped), best first.

    Args:
        boxes: (D, 4); scores: (D,) (padding has score -1); labels: (D,).
        score_threshold: keep scores > this.
        max_detections: keep at most this many (None: all).

    Returns:
        ``Detections``; equal scores keep the model's order.
    """
    scores = np.asarray(scores)
    keep = np.flatnonzero((scores > score_threshold) & (scores > PADDING_VALUE))
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    if max_detections is not None:
        keep = keep[:max_detections]
    return Detections(
        np.asarray(boxes)[keep].astype(np.float32),
        scores[keep].astype(np.float32),
        np.asarray(labels)[keep].astype(np.int32),
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
        batch_size: images per model call in ``predict`` / ``predict_iter`` / tiles.
        spec: the model's ``DetectorSpec`` (None if it has none).
        clip_boxes: clip every box to its image (see the module docstring).
        notes: what loading resolved that the user should hear (values from the spec that
            a caller's value replaced, defaults assumed), one line each.

    Attributes:
        last_inference_seconds: time spent in the model by the last ``predict_batch``.
    """

    def __init__(
        self,
        runner,
        score_threshold=DEFAULT_SCORE_THRESHOLD,
        max_detections=None,
        batch_size=1,
        spec=None,
        clip_boxes=True,
        notes=(),
    ):
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.runner = runner
        self.score_threshold = score_threshold
        self.max_detections = max_detections
        self.batch_size = batch_size
        self.spec = spec
        self.clip_boxes = clip_boxes
        self.notes = tuple(notes)
        self.last_inference_seconds = 0.0

    @property
    def class_names(self):
        """Class names by label, from the model's spec (None if it does not record them)."""
        return None if self.spec is None else self.spec.class_names

    def label_to_name(self, label):
        """The class name of a label (the label as a string when unknown)."""
        return str(int(label)) if self.spec is None else self.spec.label_to_name(label)

    @property
    def effective_batch_size(self):
        limit = getattr(self.runner, "max_batch_size", None)
        return self.batch_size if limit is None else min(self.batch_size, limit)

    @property
    def model_calls(self):
        """Model calls ``predict_iter`` runs at once (with workers): 1 unless the runner allows
        several and TensorFlow's threads want them (``utils.threads.model_calls_at_once``)."""
        if not getattr(self.runner, "concurrent_calls", False):
            return 1
        return model_calls_at_once() if MODEL_THREADS is None else MODEL_THREADS

    # The runner's two steps (see the runners above); a bare callable prepares nothing ahead.

    def _prepare(self, image):
        """(input array, context) of one image, as the runner's ``prepare`` makes them."""
        if hasattr(self.runner, "prepare") and hasattr(self.runner, "run"):
            return self.runner.prepare(image)
        return image, None

    def _batch_key(self, entry):
        """Entries with equal keys may share a model call: inputs of one size and dtype."""
        if getattr(self.runner, "mixed_sizes", False):
            return None
        return entry.inputs.shape, entry.inputs.dtype

    def _load(self, item, on_error):
        """``_Entry`` of one (key, path or array) item: read, checked and prepared."""
        key, image = item
        try:
            image = _as_image(image)
        except OSError as error:
            if on_error is None:
                raise
            return _Entry(key, None, None, None, error)
        inputs, context = self._prepare(image)
        return _Entry(key, image, inputs, context, None)

    def _run(self, batch):
        """(runner outputs or None for a failed entry, seconds in the model) of one model call."""
        entries = [entry for _, entry in batch]
        if entries[0].error is not None:
            return None, 0.0
        start = time.perf_counter()
        if hasattr(self.runner, "prepare") and hasattr(self.runner, "run"):
            outputs = self.runner.run([e.inputs for e in entries], [e.context for e in entries])
        else:
            outputs = self.runner([e.inputs for e in entries])
        return outputs, time.perf_counter() - start

    def _settings(self, score_threshold, max_detections, clip_boxes):
        """(score_threshold, max_detections, clip_boxes): the given ones, the detector's where None."""
        return (
            self.score_threshold if score_threshold is None else score_threshold,
            self.max_detections if max_detections is None else max_detections,
            self.clip_boxes if clip_boxes is None else clip_boxes,
        )

    def _stream(self, items, workers=0, on_error=None, lookahead=None, settings=None, seconds=None):
        """(key, image, ``Detections``) of every (key, image) item, in order (see ``predict_iter``).

        ``lookahead``: entries waiting to be batched at most (default twice the batch size);
        ``settings``: (score_threshold, max_detections, clip_boxes); ``seconds``: a list that
        gets (keys of its images, seconds in the model) of each call.
        """
        limit = self.effective_batch_size
        lookahead = max(limit, 2 * limit if lookahead is None else lookahead)
        if limit == 1:
            lookahead = 1
        score_threshold, max_detections, clip_boxes = settings or (
            self.score_threshold, self.max_detections, self.clip_boxes
        )
        threaded = workers > 0
        loaded = ordered_map(
            functools.partial(self._load, on_error=on_error), items, workers, window=2 * workers or 1, name="retinanet-load"
        )  # fmt: skip
        batches = _batches(enumerate(entry for _, entry in loaded), limit, lookahead, self._batch_key)
        ran = ordered_map(self._run, batches, self.model_calls if threaded else 0, window=1, name="retinanet-model")
        done, next_index = {}, 0
        for batch, (outputs, elapsed) in ran:
            if seconds is not None:
                seconds.append(([entry.key for _, entry in batch], elapsed))
            for position, (index, entry) in enumerate(batch):
                done[index] = (entry, None if outputs is None else tuple(output[position] for output in outputs[:3]))
            while next_index in done:
                entry, detected = done.pop(next_index)
                next_index += 1
                if entry.error is not None:
                    on_error(entry.key, entry.error)
                    continue
                detections = select_detections(*detected, score_threshold, max_detections)
                if clip_boxes and len(detections):
                    height, width = entry.image.shape[:2]
                    np.clip(detections.boxes, 0, [width, height, width, height], out=detections.boxes)
                yield entry.key, entry.image, detections

    def predict_batch(self, images, score_threshold=None, max_detections=None, clip_boxes=None):
        """Detections of several images, in as few model calls as the runner allows.

        Images whose prepared inputs have one size (after resizing, for a Keras model) share
        a model call, up to ``batch_size``; a batch needs no padding, so batching never
        changes a detection.

        Args:
            images: list of paths or (H, W, 3) uint8 BGR arrays (any sizes), or a
                (B, H, W, 3) array.
            score_threshold, max_detections, clip_boxes: override the detector's settings.

        Returns:
            list of ``Detections``, one per image, in order.
        """
        settings = self._settings(score_threshold, max_detections, clip_boxes)
        seconds = []
        results = [
            detections
            for _, _, detections in self._stream(
                enumerate(images), lookahead=len(images), settings=settings, seconds=seconds
            )
        ]
        self.last_inference_seconds = sum(elapsed for _, elapsed in seconds)
        return results

    def predict(self, images):
        """Detections of one image or of several.

        Args:
            images: a path or a (H, W, 3) uint8 BGR array, or a list of those (any sizes;
                images of the same size are batched by ``batch_size``).

        Returns:
            ``Detections`` for one image, a list of them for a list.
        """
        if isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim == 3):
            return self.predict([images])[0]
        return [detections for _, _, detections in self.predict_iter(enumerate(images))]

    def predict_iter(
        self, items, workers=0, on_error=None, timings=None, score_threshold=None, max_detections=None, clip_boxes=None
    ):
        """Stream detections over ``(key, image)`` pairs, loading images lazily.

        Images whose prepared inputs have one size are batched (up to ``batch_size``, looking
        at most ``2 * batch_size`` images ahead), so memory holds a few batches at a time;
        results come in input order, and are the same whatever ``workers`` is.

        Args:
            items: iterable of (key, path or (H, W, 3) uint8 BGR array); keys are passed through.
            workers: threads that read, decode and prepare (preprocess, resize) the next
                images while the model runs in another thread and the caller uses the
                results in this one; 0: all in the caller's thread, one step after the other.
            on_error: f(key, OSError) for an image that cannot be read (then skipped, at its
                place in the order); None: the error is raised.
            timings: a list that gets (keys of its images, seconds in the model) of each
                model call, before the detections of those images are yielded.
            score_threshold, max_detections, clip_boxes: instead of the detector's.

        Yields:
            (key, image (H, W, 3) uint8 BGR array, ``Detections``).
        """
        if int(workers) < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        settings = self._settings(score_threshold, max_detections, clip_boxes)
        return self._stream(items, int(workers), on_error, settings=settings, seconds=timings)

    def predict_tiled(
        self, image, tile_size, overlap=DEFAULT_TILE_OVERLAP, nms_threshold=DEFAULT_MERGE_NMS_THRESHOLD, workers=0
    ):
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
            workers: threads preparing the next tiles while the model runs (see ``predict_iter``).

        Returns:
            ``Detections`` in the full image's pixels, best first.
        """
        image = _as_image(image)
        windows = tile_windows(image.shape[0], image.shape[1], tile_size, overlap)
        tiles = ((window, image[window[1] : window[3], window[0] : window[2]]) for window in windows)
        parts = []
        for window, _, detections in self.predict_iter(tiles, workers=workers):
            offset = np.array([window[0], window[1], window[0], window[1]], dtype=np.float32)
            parts.append(dataclasses.replace(detections, boxes=detections.boxes + offset))
        return merge_detections(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.labels for p in parts]),
            iou_threshold=nms_threshold,
            max_detections=self.max_detections,
        )


@dataclasses.dataclass(frozen=True)
class _Entry:
    """One image on its way through ``Detector._stream``: its key, the image, the runner's
    prepared input and context, or the error that kept it from being read."""

    key: object
    image: np.ndarray
    inputs: np.ndarray
    context: object
    error: Exception


def _batches(entries, limit, lookahead, key):
    """Model calls for a stream of (index, ``_Entry``): lists of up to ``limit`` entries of one key.

    The oldest waiting entry always goes into the next call, with the later ones of its key
    among the ``lookahead`` waiting; an entry that failed to load goes alone (no model call).
    """
    pending = []
    for indexed in entries:
        pending.append(indexed)
        if len(pending) >= lookahead:
            yield _take(pending, limit, key)
    while pending:
        yield _take(pending, limit, key)


def _take(pending, limit, key):
    head = pending[0][1]
    if head.error is not None:
        return [pending.pop(0)]
    head_key = key(head)
    chosen = [i for i, (_, entry) in enumerate(pending) if entry.error is None and key(entry) == head_key][:limit]
    batch = [pending[i] for i in chosen]
    for i in reversed(chosen):
        del pending[i]
    return batch


def as_detector(model, generator=None, batch_size=1):
    """A ``Detector`` for ``model``: itself if it is one, else a Keras inference model run the generator's way.

    Args:
        model: a ``Detector``, or an inference model (anything with ``predict_on_batch``
            returning [boxes, scores, labels] for preprocessed, resized images).
        generator: for a bare model, where preprocessing and resizing come from
            (``generator.preprocess_image`` and ``generator.resize_image``, fizyr's contract).
        batch_size: images per model call.
    """
    if isinstance(model, Detector):
        return model
    if generator is None:
        raise ValueError("a bare inference model needs the generator whose preprocessing and resizing it uses")
    runner = KerasRunner(model, generator.preprocess_image, resize_image=generator.resize_image)
    from .models.retinanet_model import model_spec

    spec = model_spec(model)
    for problem in generator_mismatches(spec, generator):
        warnings.warn(f"{problem} (inference.load_detector runs a model the way its spec says)", stacklevel=3)
    return Detector(runner, batch_size=batch_size, spec=spec, clip_boxes=False)


_PREPROCESS_PROBE = np.array([[[10, 120, 250], [0, 255, 64]]], dtype=np.uint8)


def generator_mismatches(spec, generator):
    """What a generator does otherwise than a model's spec says: preprocessing, image sizes, classes.

    Running a model the generator's way (fizyr's ``evaluate(generator, model)``) with any of
    these gives wrong or other figures.

    Returns:
        list of one-line descriptions (empty when they agree or the spec does not say).
    """
    problems = []
    if spec is None:
        return problems
    model = spec.backbone or "the model"
    if spec.preprocess_mode is not None and hasattr(generator, "preprocess_image"):
        try:
            theirs = np.asarray(generator.preprocess_image(_PREPROCESS_PROBE.copy()), dtype=np.float64)
        except Exception:  # noqa: BLE001 - a custom preprocessing we cannot probe
            theirs = None
        ours = preprocess_image(_PREPROCESS_PROBE.copy(), mode=spec.preprocess_mode)
        if theirs is not None and (theirs.shape != ours.shape or not np.allclose(theirs, ours, atol=1e-3)):
            problems.append(
                f"the generator preprocesses images otherwise than {model} ({spec.preprocess_mode} mode): "
                "the detections will be wrong; give it preprocess_image=models.backbone(name).preprocess_image"
            )
    their_no_resize = getattr(generator, "no_resize", None)
    if spec.no_resize is not None and their_no_resize is not None and bool(spec.no_resize) != bool(their_no_resize):
        problems.append(f"the generator's no_resize is {their_no_resize}, the model was trained with {spec.no_resize}")
    elif not spec.no_resize:
        for field in ("image_min_side", "image_max_side"):
            saved, theirs = getattr(spec, field), getattr(generator, field, None)
            if saved is not None and theirs is not None and saved != theirs:
                problems.append(f"the generator's {field} is {theirs}, the model was trained with {saved}")
    if spec.class_names is not None and hasattr(generator, "num_classes"):
        from .spec import check_class_names, class_names_of

        try:
            check_class_names(spec, class_names_of(generator), source=model, what="the generator's class list")
        except SpecConflictError as error:
            problems.append(str(error))
    return problems


# ------------------------------------------------------------------------------- loading


anchor_settings = _config_anchor_settings  # (anchor_params or None, pyramid_levels or None) of a config file


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A ``.keras`` file opened for inference.

    model: the inference model (a training model converted); converted: whether it was a
    training model; recipe: the resolved ``spec.Recipe`` (spec and notes for the user).
    """

    model: object
    converted: bool
    recipe: object

    @property
    def spec(self):
        return self.recipe.spec


def recipe_from_config(config):
    """{'anchors': AnchorSpec, 'pyramid_levels': tuple} of what a config file sets (``spec.resolve_recipe``'s ``given``).

    Args:
        config: None, a config.ini path or a parser from ``utils.config.read_config_file``.
    """
    anchor_params, pyramid_levels = anchor_settings(config)
    given = {}
    if anchor_params is not None:
        given["anchors"] = AnchorSpec.from_parameters(anchor_params)
    if pyramid_levels is not None:
        given["pyramid_levels"] = tuple(pyramid_levels)
    return given


def _complete_preprocessing(spec):
    """The spec with the preprocessing mode of its backbone filled in (unknown backbone: ValueError)."""
    from . import models

    backbone = models.backbone(spec.backbone)  # ValueError listing the known names
    if spec.preprocess_mode is None:
        spec = spec.replace(preprocess_mode=backbone.preprocess_mode)
    return spec


def open_keras_model(
    path,
    given=None,
    training=None,
    flag_names=None,
    nms=True,
    class_specific_filter=True,
    fold_batch_norm=True,
    **filter_options,
):
    """Load a ``.keras`` file for inference, resolving its recipe against the caller's values.

    Args:
        path: ``.keras`` file (training or inference model).
        given: {field: value} the caller gives (``spec.resolve_recipe``): backbone,
            anchors, pyramid_levels, class_names, image_min_side, image_max_side, no_resize.
        training: True: must be a training model; False: must be an inference model;
            None: either.
        flag_names: how messages name the caller's values (e.g. {'backbone': '--backbone'}).
        nms, class_specific_filter, fold_batch_norm, **filter_options: ``models.convert_model``
            options for a training model (nms_threshold, score_threshold, max_detections, ...).

    Returns:
        ``LoadedModel``.

    Raises:
        ModelLoadError: missing or unreadable file, a model of the wrong kind.
        SpecConflictError: a given value contradicts the model's spec.
    """
    from . import models

    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelLoadError(f"model file not found: {path}")
    models.check_keras_file(path)
    try:
        model = models.load_model(path, compile=False)  # inference needs no optimizer (its variables take time)
    except Exception as error:  # keras raises many kinds for a file that is not a model
        raise ModelLoadError(f"cannot load model {path}: {first_line(error, 300)}") from None
    outputs = list(model.output_names)
    is_training = models.is_training_model(model)
    if training is True and not is_training:
        raise ModelLoadError(
            f"{path} is not a training model (outputs {outputs}): it is probably an inference model already"
        )
    if training is False and is_training:
        raise ModelLoadError(f"{path} is a training model (outputs {outputs}); an inference model was expected")
    if not is_training and len(model.outputs) < 3:
        raise ModelLoadError(f"{path} is not a RetinaNet model (outputs {outputs})")

    given = dict(given or {})
    needed = FIXED_FIELDS + RESIZE_FIELDS
    if not is_training:  # anchors and levels are in the graph: checked if given, never assumed
        needed = tuple(f for f in needed if f not in ("anchors", "pyramid_levels") or given.get(f) is not None)
    saved = models.model_spec(model)
    if is_training and (saved is None or saved.pyramid_levels is None):  # the layers show levels and head sizes
        from .models.retinanet import architecture_spec

        saved = architecture_spec(model).merged(saved or DetectorSpec())
    recipe = resolve_recipe(saved, given, needed=needed, source=path, flag_names=flag_names)
    spec = _complete_preprocessing(recipe.spec)
    recipe = dataclasses.replace(recipe, spec=spec)
    if not is_training:
        model = models.with_spec(model, spec)
        return LoadedModel(model, False, recipe)
    model.spec = spec
    converted = models.convert_model(
        model, nms=nms, class_specific_filter=class_specific_filter, anchor_params=spec.anchor_params,
        pyramid_levels=spec.pyramid_levels, fold_batch_norm=fold_batch_norm, **filter_options,
    )  # fmt: skip
    return LoadedModel(converted, True, dataclasses.replace(recipe, spec=converted.spec))


def load_inference_model(
    path,
    backbone=None,
    training=None,
    config=None,
    nms=True,
    class_specific_filter=True,
    fold_batch_norm=True,
    **filter_options,
):
    """Load a ``.keras`` model as an inference model, converting a training model.

    The model's detector spec gives its backbone, anchors and pyramid levels; ``backbone``
    and ``config`` are only needed for a model without one, and must agree with it.

    Args:
        path: ``.keras`` file.
        backbone: backbone name (checked against the spec).
        training: True: must be a training model (converted); False: must be an
            inference model; None: either.
        config: config file (path or parser) with the anchor parameters / pyramid
            levels used for training.
        nms, class_specific_filter, **filter_options: ``models.convert_model`` options
            (nms_threshold, score_threshold, max_detections, ...).
        fold_batch_norm: fold the backbone's batch normalisation into its convolutions
            (same detections, faster; the inference model no longer shares weights with
            the training model).

    Returns:
        (inference model with ``.spec``, was_converted).

    Raises:
        ModelLoadError: missing or unreadable file, or a model of the wrong kind.
        SpecConflictError: backbone or config contradicts the model's spec.
    """
    given = dict(recipe_from_config(config), backbone=backbone)
    loaded = open_keras_model(
        path, given, training=training, nms=nms, class_specific_filter=class_specific_filter,
        fold_batch_norm=fold_batch_norm, **filter_options,
    )  # fmt: skip
    return loaded.model, loaded.converted


def _filter_notes(spec, score_threshold, max_detections, source):
    """Notes for thresholds asked below what an inference graph already filtered out."""
    notes = []
    saved = spec.filter
    if saved is None:
        return notes
    if score_threshold is not None and score_threshold < saved.score_threshold:
        notes.append(
            f"score threshold: {source} keeps only detections scoring above {saved.score_threshold:g} "
            f"(saved in its graph); {score_threshold:g} asked"
        )
    if max_detections is not None and max_detections > saved.max_detections:
        notes.append(
            f"max detections: {source} returns at most {saved.max_detections} per image (saved in its graph); "
            f"{max_detections} asked"
        )
    return notes


def _exported_recipe(path, given, flag_names):
    """(spec, notes) of an exported graph: its preprocessing and sizes are fixed inside it."""
    try:
        saved = read_spec(path)
    except SpecError:
        raise
    except Exception as error:  # the metadata readers raise their libraries' own errors
        raise ModelLoadError(f"cannot read the detector spec of {path}: {first_line(error)}") from None
    graph_fields = ("backbone", "anchors", "pyramid_levels") + RESIZE_FIELDS  # inside the graph
    if saved is None:  # exported before the detector spec existed: the graph still knows what it does
        ignored = sorted({(flag_names or {}).get(field, field) for field in graph_fields if given.get(field) is not None})
        notes = [f"{path} preprocesses, resizes and decodes inside its graph: {', '.join(ignored)} not used"]
        return DetectorSpec(class_names=given.get("class_names")), notes if ignored else []
    needed = ("backbone", "class_names") + RESIZE_FIELDS
    needed += tuple(field for field in ("anchors", "pyramid_levels") if given.get(field) is not None)
    recipe = resolve_recipe(
        saved, given, needed=needed, fixed=FIXED_FIELDS + RESIZE_FIELDS, source=f"{path} (an exported graph)",
        flag_names=flag_names,
    )  # fmt: skip
    return recipe.spec, list(recipe.notes)


def _throughput_threads(path, given):
    """``utils.threads.use_parallel_ops_for`` the Keras model at ``path`` run with the ``given`` recipe values."""
    try:
        saved = read_spec(path)
    except (ModelLoadError, SpecError, OSError, ValueError):
        return None  # open_keras_model says what is wrong with the file

    def value(field):
        return given.get(field) if given.get(field) is not None else getattr(saved, field, None)

    return use_parallel_ops_for(value("backbone"), value("image_max_side"), value("no_resize"))


def load_detector(
    path,
    backbone=None,
    config=None,
    image_min_side=None,
    image_max_side=None,
    no_resize=None,
    score_threshold=DEFAULT_SCORE_THRESHOLD,
    max_detections=None,
    batch_size=1,
    class_names=None,
    flag_names=None,
    clip_boxes=True,
    many_images=False,
    **convert_options,
):
    """A ``Detector`` for a model file of any supported format, configured by its detector spec.

    Everything the model's spec records (backbone and preprocessing, anchors, pyramid
    levels, image sizes, classes) comes from the model. The arguments are for models
    without a spec, and must agree with a spec where the value cannot change after
    training (backbone, config, class_names; for exported graphs also the image sizes);
    image sizes given for a Keras model replace the saved ones (see ``Detector.notes``).

    Args:
        path: training or inference model (``.keras``), SavedModel directory,
            ``.tflite`` or ``.onnx`` file (exported by ``retinanet-convert-model``).
        backbone: backbone name.
        config: config file of a training model (anchor parameters, pyramid levels).
        image_min_side, image_max_side, no_resize: resize settings.
        score_threshold, max_detections, batch_size, clip_boxes: see ``Detector``.
        class_names: class names by label (e.g. from a classes CSV).
        flag_names: how notes and errors name these arguments (the tools pass their flags).
        many_images: the detector will run on many images, through ``predict_iter`` with
            workers: a Keras model whose ops are too short to split between the cores gets
            whole ops and several model calls at once (``utils.threads``), which must be
            decided before TensorFlow's first op (so before anything else is loaded).
        **convert_options: ``models.convert_model`` options for a training model
            (nms, class_specific_filter, nms_threshold, max_detections (in the graph)...).

    Returns:
        ``Detector`` with ``.spec``, ``.class_names`` and ``.notes``.

    Raises:
        ModelLoadError: the file is missing, unreadable or not a RetinaNet model.
        SpecConflictError: an argument contradicts the model's spec.
        SpecError: the model's spec is malformed.
    """
    path = os.fspath(path)
    format = model_file_format(path)
    given = dict(
        recipe_from_config(config), backbone=backbone, class_names=class_names,
        image_min_side=image_min_side, image_max_side=image_max_side, no_resize=no_resize,
    )  # fmt: skip
    if format == "keras" and many_images:
        _throughput_threads(path, given)
    if format == "keras":  # a training model converted here filters at least as loosely as asked
        convert_options.setdefault("score_threshold", min(score_threshold, DEFAULT_SCORE_THRESHOLD))
        convert_options.setdefault("max_detections", max(max_detections or 0, constants.DEFAULT_MAX_DETECTIONS))
        loaded = open_keras_model(path, given, flag_names=flag_names, **convert_options)
        spec = loaded.spec
        runner = KerasRunner(
            loaded.model, functools.partial(preprocess_image, mode=spec.preprocess_mode),
            spec.image_min_side, spec.image_max_side, spec.no_resize,
        )  # fmt: skip
        notes = list(loaded.recipe.notes)
        if not loaded.converted:
            notes += _filter_notes(spec, score_threshold, max_detections, path)
    else:
        if format == "saved_model":
            runner = SavedModelRunner(path)
        elif format == "tflite":
            runner = TFLiteRunner(path)
        else:
            runner = OnnxRunner(path)
        spec, notes = _exported_recipe(path, given, flag_names)
        notes += _filter_notes(spec, score_threshold, max_detections, path)
    return Detector(
        runner, score_threshold=score_threshold, max_detections=max_detections, batch_size=batch_size,
        spec=spec, clip_boxes=clip_boxes, notes=notes,
    )  # fmt: skip


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
