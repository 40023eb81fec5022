"""A parallel tf.data input pipeline over any ``Generator`` (what retinanet-train feeds to fit).

Per image, in parallel (``num_parallel_calls``): read and decode, drop invalid boxes,
visual effect, affine transform, resize, preprocess -- the generator's own methods, whose
heavy work (OpenCV decode / warp / resize, NumPy arithmetic) runs outside the GIL -- and
zero padding up to a multiple of the largest anchor stride, into memory that TF takes
over without a copy. Per batch, in parallel: anchor targets on the padded batch shape
(sparse NumPy, see ``utils.anchors.anchor_assignment``), carried compactly (a class index
and a state per anchor) and expanded with ``tf.one_hot`` in the graph. Random draws
(augmentation parameters, group order) happen in one Python thread in dataset order, so a
seeded pipeline is repeatable whatever the parallelism.

Elements: ``(images, {"regression": regression, "classification": classification})``::

    images          (B, H, W, 3) float32, preprocessed, H and W multiples of 128
    regression      (B, N, 4 + 1) float32: bbox_transform targets, anchor state
    classification  (B, N, C + 1) float32: one-hot class, anchor state

with N the anchors of an (H, W) input and anchor state -1 ignore / 0 negative /
1 positive; the same values as ``Generator[i]`` gives for the same images without
augmentation. An epoch is ``steps_per_epoch(generator)`` batches.
"""
import atexit
import itertools
import threading
import time

import numpy as np
import tensorflow as tf

from ..utils.anchors import (
    ANCHOR_IGNORE,
    ANCHOR_POSITIVE,
    anchor_assignment,
    anchor_targets_bbox,
    bbox_transform,
    check_annotations,
)
from ..utils.image import adjust_transform_for_image

_IDENTITY = np.eye(3, dtype=np.float64)
# tf.numpy_function shares (instead of copying) the memory of outputs aligned like this.
_TENSOR_ALIGNMENT = 64


def _aligned_zeros(shape, dtype):
    """np.zeros whose data is _TENSOR_ALIGNMENT-aligned, so TF takes it over without a copy."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    buffer = np.zeros(nbytes + _TENSOR_ALIGNMENT, dtype=np.uint8)
    offset = -buffer.ctypes.data % _TENSOR_ALIGNMENT
    return buffer[offset : offset + nbytes].view(dtype).reshape(shape)


class _ShutdownGuard:
    """Stops the Python work of live pipelines when the interpreter exits.

    tf.data threads that call into Python while the interpreter finalizes hang forever
    (and with them the exit). At exit, calls still to come fail at once and the ones
    under way are given a moment to finish, so a program that keeps an iterator alive to
    the end still exits.
    """

    GRACE_SECONDS = 5.0

    def __init__(self):
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._running = 0
        atexit.register(self.stop)

    def stop(self):
        self._stopping.set()
        deadline = time.monotonic() + self.GRACE_SECONDS
        while self._running and time.monotonic() < deadline:
            time.sleep(0.01)

    @property
    def stopping(self):
        return self._stopping.is_set()

    def wrap(self, function):
        def guarded(*args):
            if self._stopping.is_set():
                raise RuntimeError("the interpreter is exiting: keras_retinanet input pipeline stopped")
            with self._lock:
                self._running += 1
            try:
                return function(*args)
            finally:
                with self._lock:
                    self._running -= 1

        return guarded


_GUARD = _ShutdownGuard()


def steps_per_epoch(generator):
    """Batches in one epoch of ``build_dataset(generator)`` (= ``len(generator)``)."""
    return len(generator.groups)


class _EffectRegistry:
    """Hands the visual effects drawn by the source thread to the parallel workers."""

    def __init__(self):
        self._effects = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def put(self, effect):
        with self._lock:
            effect_id = next(self._ids)
            self._effects[effect_id] = effect
        return effect_id

    def pop(self, effect_id):
        with self._lock:
            return self._effects.pop(int(effect_id))


def _source(generator, shuffle, rng, effects):
    """Python generator of one epoch: (image index, effect id or -1, raw transform, has transform)."""

    def epoch():
        groups = list(generator.groups)
        if shuffle:
            rng.shuffle(groups)
        for group in groups:
            if _GUARD.stopping:
                return
            for image_index in group:
                effect_id = -1
                if generator.visual_effect_generator is not None:
                    effect_id = effects.put(next(generator.visual_effect_generator))
                transform, has_transform = _IDENTITY, False
                if generator.transform_generator is not None:
                    transform, has_transform = next(generator.transform_generator), True
                yield image_index, effect_id, np.asarray(transform, dtype=np.float64), has_transform

    return epoch


def _load_entry(generator, effects, image_index, effect_id, transform, has_transform):
    """One image through the generator's steps; NumPy in, NumPy out (runs in tf.numpy_function).

    Returns:
        image: (H', W', 3) float32, zero-padded to multiples of generator.padding_multiple.
        boxes: (K, 4) float64; labels: (K,) int32; shape: (2,) int32 size before padding.
    """
    group = [int(image_index)]
    image_group = generator.load_image_group(group)
    annotations_group = generator.load_annotations_group(group)
    image_group, annotations_group = generator.filter_annotations(image_group, annotations_group, group)
    image, annotations = image_group[0], annotations_group[0]
    if effect_id >= 0:
        image = effects.pop(effect_id)(image)
    if has_transform:
        transform = adjust_transform_for_image(
            transform, image, generator.transform_parameters.relative_translation
        )
        image, annotations = generator.random_transform_group_entry(image, annotations, transform)
    image, annotations = generator.preprocess_group_entry(image, annotations)
    boxes = np.asarray(annotations["bboxes"], dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(annotations["labels"]).astype(np.int32).reshape(-1)
    height, width = image.shape[:2]
    padded = _aligned_zeros(generator.padded_shape([image.shape]), np.float32)
    padded[:height, :width] = image
    return padded, boxes, labels, np.array([height, width], dtype=np.int32)


def _compact_targets(generator, padded_shape, boxes, labels, num_boxes, shapes):
    """Batch targets without the dense one-hot.

    Returns:
        regression: (B, N, 5) float32, as in ``anchor_targets_bbox``.
        classes: (B, N) int32, class + 1 of positive anchors, 0 for the others.
    """
    anchors = generator.generate_anchors(tuple(padded_shape))
    batch_size, num_anchors = len(shapes), len(anchors)
    # Zeros are mapped lazily: only the rows written below cost anything.
    regression = _aligned_zeros((batch_size, num_anchors, 4 + 1), np.float32)
    classes = _aligned_zeros((batch_size, num_anchors), np.int32)
    num_classes = generator.num_classes()
    for b in range(batch_size):
        count = int(num_boxes[b])
        image_boxes, image_labels = check_annotations(
            {"bboxes": boxes[b, :count], "labels": labels[b, :count]}, num_classes, "image annotations"
        )
        positive, matched, ignored = anchor_assignment(anchors, tuple(shapes[b]), image_boxes)
        regression[b, ignored, 4] = ANCHOR_IGNORE
        regression[b, positive, 4] = ANCHOR_POSITIVE
        regression[b, positive, :4] = bbox_transform(anchors[positive], image_boxes[matched])
        classes[b, positive] = image_labels[matched] + 1
    return regression, classes


def _dense_targets(generator, padded_shape, boxes, labels, num_boxes, shapes):
    """Batch targets from the generator's own ``compute_anchor_targets`` (a custom one)."""
    anchors = generator.generate_anchors(tuple(padded_shape))
    annotations_group = [
        {"bboxes": boxes[b, : int(num_boxes[b])], "labels": labels[b, : int(num_boxes[b])]}
        for b in range(len(shapes))
    ]
    image_shapes = [tuple(int(s) for s in shape) + (3,) for shape in shapes]
    regression, classification = generator.compute_anchor_targets(
        anchors, image_shapes, annotations_group, generator.num_classes()
    )
    return np.asarray(regression, np.float32), np.asarray(classification, np.float32)


def build_dataset(
    generator,
    shuffle=True,
    num_parallel_calls=tf.data.AUTOTUNE,
    prefetch=tf.data.AUTOTUNE,
    repeat=False,
    seed=None,
    deterministic=True,
):
    """tf.data pipeline of training batches over ``generator`` (see the module docstring).

    Args:
        generator: a ``Generator`` (CSVGenerator, CocoGenerator, ...); its batch_size,
            grouping, augmentation generators, resize bounds, preprocess_image, config
            and compute_anchor_targets are used. Do not iterate the generator itself at
            the same time (they share the augmentation iterators).
        shuffle: shuffle the order of the groups at every epoch.
        num_parallel_calls: images (and batches) processed in parallel.
        prefetch: batches prepared ahead (None: no prefetch).
        repeat: True: repeat forever (pass ``steps_per_epoch`` to fit); False: one epoch
            per iteration of the dataset.
        seed: seed of the group shuffling (the augmentation draws use the generators'
            own prng); None: a different order every run.
        deterministic: keep dataset order under parallelism (needed for repeatability).

    Returns:
        ``tf.data.Dataset`` of ``(images (B, H, W, 3) float32, {"regression": (B, N, 5)
        float32, "classification": (B, N, C + 1) float32})``, ``steps_per_epoch(generator)``
        batches per epoch.
    """
    rng = np.random.default_rng(seed)
    effects = _EffectRegistry()
    num_classes = generator.num_classes()
    compact = generator.compute_anchor_targets is anchor_targets_bbox

    dataset = tf.data.Dataset.from_generator(
        _source(generator, shuffle, rng, effects),
        output_signature=(
            tf.TensorSpec((), tf.int64),
            tf.TensorSpec((), tf.int64),
            tf.TensorSpec((3, 3), tf.float64),
            tf.TensorSpec((), tf.bool),
        ),
    )
    if repeat:
        dataset = dataset.repeat()

    def load(image_index, effect_id, transform, has_transform):
        image, boxes, labels, shape = tf.numpy_function(
            _GUARD.wrap(lambda *args: _load_entry(generator, effects, *args)),
            [image_index, effect_id, transform, has_transform],
            [tf.float32, tf.float64, tf.int32, tf.int32],
            name="load_entry",
        )
        image.set_shape((None, None, 3))
        boxes.set_shape((None, 4))
        labels.set_shape((None,))
        shape.set_shape((2,))
        return image, boxes, labels, tf.shape(labels)[0], shape

    dataset = dataset.map(load, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    # Consecutive elements are the images of one group; a group always has batch_size images.
    if generator.batch_size == 1:  # a batch of one needs no copy
        dataset = dataset.map(lambda *entry: tuple(tf.expand_dims(t, 0) for t in entry))
    else:
        dataset = dataset.padded_batch(
            generator.batch_size,
            padded_shapes=([None, None, 3], [None, 4], [None], [], [2]),
            padding_values=(
                tf.constant(0.0, tf.float32),
                tf.constant(0.0, tf.float64),
                tf.constant(-1, tf.int32),
                tf.constant(0, tf.int32),
                tf.constant(0, tf.int32),
            ),
        )

    def targets(images, boxes, labels, num_boxes, shapes):
        padded_shape = tf.shape(images)[1:3]
        if compact:
            regression, classes = tf.numpy_function(
                _GUARD.wrap(lambda *args: _compact_targets(generator, *args)),
                [padded_shape, boxes, labels, num_boxes, shapes],
                [tf.float32, tf.int32],
                name="anchor_targets",
            )
            classes.set_shape((None, None))
            regression.set_shape((None, None, 5))
            one_hot = tf.one_hot(classes - 1, num_classes, dtype=tf.float32)  # -1: all zero
            classification = tf.concat([one_hot, regression[..., 4:]], axis=-1)
        else:
            regression, classification = tf.numpy_function(
                _GUARD.wrap(lambda *args: _dense_targets(generator, *args)),
                [padded_shape, boxes, labels, num_boxes, shapes],
                [tf.float32, tf.float32],
                name="anchor_targets",
            )
            regression.set_shape((None, None, 5))
            classification.set_shape((None, None, num_classes + 1))
        return images, {"regression": regression, "classification": classification}

    dataset = dataset.map(targets, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    if not repeat:
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps_per_epoch(generator)))
    if prefetch is not None:
        dataset = dataset.prefetch(prefetch)
    options = tf.data.Options()
    # One thread per op: parallelism comes from the parallel maps; multi-threaded ops here
    # would only spin and compete with them (and with the model) for the cores.
    options.threading.max_intra_op_parallelism = 1
    return dataset.with_options(options)
