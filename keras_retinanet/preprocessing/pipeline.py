"""A parallel tf.data input pipeline over any ``Generator`` (what retinanet-train feeds to fit).

Per image, in parallel (``num_parallel_calls``): read and decode, drop invalid boxes,
visual effect, affine transform, resize, preprocess -- the generator's own methods, whose
heavy work (OpenCV decode / warp / resize, NumPy arithmetic) runs outside the GIL --
then zero padding up to a multiple of the largest anchor stride (a TF op). Per batch, in
parallel: anchor targets on the padded batch shape, carried compactly (a class index and
a state per anchor) and expanded with ``tf.one_hot`` in the graph. Random draws
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
import itertools
import threading

import numpy as np
import tensorflow as tf

from ..utils.anchors import anchor_targets_bbox, anchor_targets_compact
from ..utils.image import adjust_transform_for_image

_IDENTITY = np.eye(3, dtype=np.float64)


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
    """One image through the generator's steps; NumPy in, NumPy out (runs in tf.numpy_function)."""
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
    shape = np.array(image.shape[:2], dtype=np.int32)
    return np.asarray(image, dtype=np.float32), boxes, labels, shape


def _compact_targets(generator, padded_shape, boxes, labels, num_boxes, shapes):
    """Batch targets without the dense one-hot: regression (B, N, 5) float32, classes (B, N) int32."""
    anchors = generator.generate_anchors(tuple(padded_shape))
    batch_size, num_anchors = len(shapes), len(anchors)
    regression = np.zeros((batch_size, num_anchors, 4 + 1), dtype=np.float32)
    classes = np.full((batch_size, num_anchors), -1, dtype=np.int32)
    num_classes = generator.num_classes()
    for b in range(batch_size):
        count = int(num_boxes[b])
        image_labels = labels[b, :count]
        if count and (image_labels.min() < 0 or image_labels.max() >= num_classes):
            raise ValueError(f"labels {sorted(set(image_labels.tolist()))} outside [0, {num_classes})")
        image_regression, classes[b], states = anchor_targets_compact(
            anchors, tuple(shapes[b]), boxes[b, :count], image_labels
        )
        regression[b, :, :4] = image_regression
        regression[b, :, 4] = states
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
    multiple = generator.padding_multiple
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
            lambda *args: _load_entry(generator, effects, *args),
            [image_index, effect_id, transform, has_transform],
            [tf.float32, tf.float64, tf.int32, tf.int32],
            name="load_entry",
        )
        image.set_shape((None, None, 3))
        boxes.set_shape((None, 4))
        labels.set_shape((None,))
        shape.set_shape((2,))
        padded = (shape + multiple - 1) // multiple * multiple
        image = tf.pad(image, [[0, padded[0] - shape[0]], [0, padded[1] - shape[1]], [0, 0]])
        return image, boxes, labels, tf.shape(labels)[0], shape

    dataset = dataset.map(load, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    # Consecutive elements are the images of one group; a group always has batch_size images.
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
        drop_remainder=False,
    )

    def targets(images, boxes, labels, num_boxes, shapes):
        padded_shape = tf.shape(images)[1:3]
        if compact:
            regression, classes = tf.numpy_function(
                lambda *args: _compact_targets(generator, *args),
                [padded_shape, boxes, labels, num_boxes, shapes],
                [tf.float32, tf.int32],
                name="anchor_targets",
            )
            classes.set_shape((None, None))
            regression.set_shape((None, None, 5))
            classification = tf.concat(
                [tf.one_hot(classes, num_classes, dtype=tf.float32), regression[..., 4:]], axis=-1
            )
        else:
            regression, classification = tf.numpy_function(
                lambda *args: _dense_targets(generator, *args),
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
    return dataset
