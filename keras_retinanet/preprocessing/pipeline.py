"""A parallel tf.data input pipeline over any ``Generator`` (what retinanet-train feeds to fit).

Batches are prepared in parallel (``num_parallel_calls``) by the generator's own steps:
for each image, read and decode, drop invalid boxes, visual effect, affine transform,
resize, preprocess; then the zero-padded batch (a multiple of the backbones' largest stride, 32)
and its anchor targets on the padded shape (``compute_anchor_targets``, by default
``anchor_targets_bbox``). Their heavy work -- OpenCV decode / warp / resize, NumPy
arithmetic, the pruned IoU -- runs outside the GIL. The dense classification targets
cost only their non-negative rows: they are written sparsely into lazily zero-mapped,
aligned memory that TensorFlow adopts without a copy. Random draws (augmentation
parameters, group order) happen in one Python thread in dataset order, so a seeded
pipeline is repeatable whatever the parallelism.

Elements: ``(images, {"regression": regression, "classification": classification})``::

    images          (B, H, W, 3) float32, preprocessed, H and W multiples of 32 (PADDING_MULTIPLE)
    regression      (B, N, 4 + 1) float32: bbox_transform targets, anchor state
    classification  (B, N, C + 1) float32: one-hot class, anchor state

with N the anchors of an (H, W) input and anchor state -1 ignore / 0 negative /
1 positive: the values ``Generator[i]`` gives for the same images and augmentation.
An epoch is ``steps_per_epoch(generator)`` batches.

Distributed training (``BatchShard``): each of the generator's batches (the global batch)
is cut into equal per-replica slices and a pipeline loads only its own slices, so every
worker of a multi-worker run decodes only its share of the images. The random draws are
made for the whole global batch on every pipeline (cheap), so the slices get the
augmentation that one process loading the whole batch would give them.
"""
import atexit
import itertools
import threading
import time
from typing import NamedTuple

import numpy as np
import tensorflow as tf

_IDENTITY = np.eye(3, dtype=np.float64)


class _ShutdownGuard:
    """Stops the Python work of live pipelines when the interpreter exits.

    A tf.data thread that calls into Python once the interpreter has started finalizing
    hangs forever, and the exit with it (when an iterator is still alive at exit). At
    exit, every later call fails at once, so the pipelines' buffers fill with errors and
    their threads park; the exit waits until no call has started for QUIET_SECONDS (at
    most GRACE_SECONDS). Deleting iterators before exit avoids all this.
    """

    GRACE_SECONDS = 5.0
    QUIET_SECONDS = 0.2

    def __init__(self):
        self._lock = threading.Lock()
        self._stopping = False
        self._running = 0
        self._last_call = 0.0
        atexit.register(self.stop)

    def stop(self):
        with self._lock:
            self._stopping = True
        deadline = time.monotonic() + self.GRACE_SECONDS
        while time.monotonic() < deadline:
            with self._lock:
                quiet = self._running == 0 and time.monotonic() - self._last_call > self.QUIET_SECONDS
            if quiet:
                return
            time.sleep(0.01)

    @property
    def stopping(self):
        with self._lock:
            self._last_call = time.monotonic()
            return self._stopping

    def wrap(self, function):
        def guarded(*args):
            with self._lock:
                self._last_call = time.monotonic()
                if self._stopping:
                    raise RuntimeError("the interpreter is exiting: keras_retinanet input pipeline stopped")
                self._running += 1
            try:
                return function(*args)
            finally:
                with self._lock:
                    self._running -= 1
                    self._last_call = time.monotonic()

        return guarded


_GUARD = _ShutdownGuard()


class BatchShard(NamedTuple):
    """The part of every global batch that one input pipeline loads.

    Every group (global batch) of the generator is cut into ``slices`` equal per-replica
    batches, in order; the pipeline yields slices ``first`` .. ``first + count - 1`` of each
    group as separate elements (one per replica of its worker). ``BatchShard(0, 1, 1)`` is
    the whole batch.
    """

    first: int
    count: int
    slices: int

    def check(self, batch_size):
        """Raise ValueError unless the shard fits groups of ``batch_size`` images."""
        if self.slices < 1 or self.count < 1 or not 0 <= self.first <= self.slices - self.count:
            raise ValueError(f"invalid batch shard {tuple(self)}: expected 0 <= first <= slices - count, count >= 1")
        if batch_size % self.slices:
            raise ValueError(f"a batch of {batch_size} images cannot be cut into {self.slices} equal slices")

    def positions(self, batch_size):
        """[(start, stop)] of this shard's slices within a group of ``batch_size`` images."""
        size = batch_size // self.slices
        return [(i * size, (i + 1) * size) for i in range(self.first, self.first + self.count)]


WHOLE_BATCH = BatchShard(0, 1, 1)


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


def _source(generator, shuffle, rng, effects, shard=WHOLE_BATCH):
    """Python generator of one epoch, one group (batch), or one slice of it per ``shard``, at a time.

    The augmentation of every image of a group is drawn, in group order, whichever slices
    are kept: the draws do not depend on the shard.

    Yields:
        image indices (b,) int64, effect ids (b,) int64 (-1: none), raw transforms
        (b, 3, 3) float64 and has-transform flags (b,) bool; b = B / ``shard.slices``.
    """

    def epoch():
        groups = list(generator.groups)
        if shuffle:
            rng.shuffle(groups)
        for group in groups:
            if _GUARD.stopping:
                return
            kept = np.zeros(len(group), dtype=bool)
            for start, stop in shard.positions(len(group)):
                kept[start:stop] = True
            effect_ids, transforms, has_transform = [], [], []
            for position in range(len(group)):
                effect_id = -1
                if generator.visual_effect_generator is not None:
                    effect = next(generator.visual_effect_generator)
                    effect_id = effects.put(effect) if kept[position] else -1
                effect_ids.append(effect_id)
                if generator.transform_generator is not None:
                    transforms.append(next(generator.transform_generator))
                    has_transform.append(True)
                else:
                    transforms.append(_IDENTITY)
                    has_transform.append(False)
            for start, stop in shard.positions(len(group)):
                yield (
                    np.asarray(group[start:stop], dtype=np.int64),
                    np.asarray(effect_ids[start:stop], dtype=np.int64),
                    np.asarray(transforms[start:stop], dtype=np.float64).reshape(stop - start, 3, 3),
                    np.asarray(has_transform[start:stop], dtype=bool),
                )

    return epoch


def _load_entry(generator, effects, image_index, effect_id, transform, has_transform):
    """One image through ``Generator.load_training_image`` with the pre-drawn augmentation.

    Returns:
        image: (H, W, 3) float32, resized and preprocessed.
        annotations: dict with ``bboxes`` (K, 4) and ``labels`` (K,), moved with the image.
    """
    entry = generator.load_training_image_or_substitute(
        int(image_index),
        visual_effect=effects.pop(effect_id) if effect_id >= 0 else None,
        transform=transform if has_transform else None,
    )
    return entry.image, entry.annotations


def _load_batch(generator, effects, image_indices, effect_ids, transforms, has_transform):
    """One batch (runs in tf.numpy_function): what ``Generator.compute_input_output`` computes, with pre-drawn augmentation.

    Returns:
        images (B, H, W, 3), regression (B, N, 5) and labels (B, N, C + 1), float32.
    """
    entries = [
        _load_entry(generator, effects, *entry)
        for entry in zip(image_indices, effect_ids, transforms, has_transform)
    ]
    image_group = [image for image, _ in entries]
    annotations_group = [annotations for _, annotations in entries]
    inputs = generator.compute_inputs(image_group)
    regression, labels = generator.compute_targets(image_group, annotations_group)
    # float32 arrays pass as they are (aligned ones without a copy); others are converted
    return (
        np.asarray(inputs, dtype=np.float32),
        np.asarray(regression, dtype=np.float32),
        np.asarray(labels, dtype=np.float32),
    )


def build_dataset(
    generator,
    shuffle=True,
    num_parallel_calls=tf.data.AUTOTUNE,
    prefetch=tf.data.AUTOTUNE,
    repeat=False,
    seed=None,
    deterministic=True,
    shard=None,
):
    """tf.data pipeline of training batches over ``generator`` (see the module docstring).

    Args:
        generator: a ``Generator`` (CSVGenerator, CocoGenerator, ...); its batch_size,
            grouping, augmentation generators, resize bounds, preprocess_image, config
            and compute_anchor_targets are used. Do not iterate the generator itself at
            the same time (they share the augmentation iterators).
        shuffle: shuffle the order of the groups at every epoch.
        num_parallel_calls: batches prepared in parallel.
        prefetch: batches prepared ahead (None: no prefetch).
        repeat: True: repeat forever (pass ``steps_per_epoch`` to fit); False: one epoch
            per iteration of the dataset.
        seed: seed of the group shuffling (the augmentation draws use the generators'
            own prng); None: a different order every run.
        deterministic: keep dataset order under parallelism (needed for repeatability).
        shard: ``BatchShard``: load only these slices of every batch (distributed
            training; ``distribute.distribute_input`` chooses them); None: whole batches.

    Returns:
        ``tf.data.Dataset`` of ``(images (B, H, W, 3) float32, {"regression": (B, N, 5)
        float32, "classification": (B, N, C + 1) float32})``, ``steps_per_epoch(generator)``
        batches per epoch (with a shard: ``shard.count`` slices of B / ``shard.slices``
        images per batch, padded each on its own).

    Raises:
        ValueError: the shard does not cut the generator's batches into equal slices.
    """
    shard = WHOLE_BATCH if shard is None else BatchShard(*shard)
    shard.check(generator.batch_size)
    rng = np.random.default_rng(seed)
    effects = _EffectRegistry()
    num_classes = generator.num_classes()

    dataset = tf.data.Dataset.from_generator(
        _source(generator, shuffle, rng, effects, shard),
        output_signature=(
            tf.TensorSpec((None,), tf.int64),
            tf.TensorSpec((None,), tf.int64),
            tf.TensorSpec((None, 3, 3), tf.float64),
            tf.TensorSpec((None,), tf.bool),
        ),
    )
    if repeat:
        dataset = dataset.repeat()

    def load(image_indices, effect_ids, transforms, has_transform):
        images, regression, classification = tf.numpy_function(
            _GUARD.wrap(lambda *args: _load_batch(generator, effects, *args)),
            [image_indices, effect_ids, transforms, has_transform],
            [tf.float32, tf.float32, tf.float32],
            name="load_batch",
        )
        images.set_shape((None, None, None, 3))
        regression.set_shape((None, None, 5))
        classification.set_shape((None, None, num_classes + 1))
        return images, {"regression": regression, "classification": classification}

    dataset = dataset.map(load, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    if not repeat:
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps_per_epoch(generator) * shard.count))
    if prefetch is not None:
        dataset = dataset.prefetch(prefetch)
    options = tf.data.Options()
    # One thread per op: parallelism comes from the parallel map; multi-threaded ops here
    # would only spin and compete with it (and with the model) for the cores.
    options.threading.max_intra_op_parallelism = 1
    return dataset.with_options(options)
