import os

import numpy as np
import pytest
import tensorflow as tf

from keras_retinanet.preprocessing.csv_generator import CSVGenerator
from keras_retinanet.preprocessing.pipeline import build_dataset, steps_per_epoch
from keras_retinanet.utils import synthetic
from keras_retinanet.utils.anchors import anchor_targets_bbox, anchors_for_shape
from keras_retinanet.utils.image import random_visual_effect_generator
from keras_retinanet.utils.transform import random_transform_generator


@pytest.fixture(scope="module")
def mixed_dataset(tmp_path_factory):
    """Shapes images of two sizes (landscape and portrait), so batches need padding."""
    root = str(tmp_path_factory.mktemp("mixed"))
    classes = synthetic.write_classes(os.path.join(root, "classes.csv"))
    wide, _ = synthetic.write_split(root, "wide", num_images=3, image_size=(72, 112), seed=1, max_size=40)
    tall, _ = synthetic.write_split(root, "tall", num_images=3, image_size=(112, 72), seed=2, max_size=40)
    combined = os.path.join(root, "train.csv")
    with open(combined, "w") as out:
        for path in (wide, tall):
            with open(path) as f:
                out.write(f.read())
    return {"train": combined, "classes": classes}


def _generator(paths, **kwargs):
    defaults = dict(image_min_side=96, image_max_side=160, group_method="none", shuffle_groups=False)
    defaults.update(kwargs)
    return CSVGenerator(paths["train"], paths["classes"], **defaults)


def _numpy(dataset):
    return [(x.numpy(), {k: v.numpy() for k, v in y.items()}) for x, y in dataset]


def test_structure_and_equality_with_the_generator(mixed_dataset):
    generator = _generator(mixed_dataset, batch_size=2)
    dataset = build_dataset(generator, shuffle=False)
    spec_images, spec_targets = dataset.element_spec
    assert spec_images.shape.as_list() == [None, None, None, 3] and spec_images.dtype == tf.float32
    assert spec_targets["regression"].shape.as_list() == [None, None, 5]
    assert spec_targets["classification"].shape.as_list() == [None, None, 4]
    assert steps_per_epoch(generator) == len(generator) == 3
    assert dataset.cardinality().numpy() == 3

    batches = _numpy(dataset)
    assert len(batches) == 3
    for index, (images, targets) in enumerate(batches):
        assert images.dtype == np.float32 and images.shape[0] == 2
        assert images.shape[1] % 32 == 0 and images.shape[2] % 32 == 0
        expected_images, (expected_regression, expected_labels) = generator[index]
        np.testing.assert_array_equal(images, expected_images)
        np.testing.assert_array_equal(targets["regression"], expected_regression)
        np.testing.assert_array_equal(targets["classification"], expected_labels)
    # the mixed batch (wide + tall images, each resized to 96 x 149) pads to 256 x 256
    assert batches[1][0].shape == (2, 160, 160, 3)


def test_targets_equal_anchor_targets_bbox(mixed_dataset):
    generator = _generator(mixed_dataset, batch_size=1)
    for index, (images, targets) in enumerate(_numpy(build_dataset(generator, shuffle=False))):
        image_index = generator.groups[index][0]
        image = generator.load_image(image_index)
        annotations = generator.load_annotations(image_index)
        resized, annotations = generator.preprocess_group_entry(image, annotations)
        anchors = anchors_for_shape(images.shape[1:3])
        regression, labels = anchor_targets_bbox(anchors, [resized.shape], [annotations], generator.num_classes())
        np.testing.assert_array_equal(targets["regression"], regression)
        np.testing.assert_array_equal(targets["classification"], labels)
        assert targets["regression"].shape[1] == len(anchors)


def test_augmented_pipeline_is_repeatable_for_a_seed(mixed_dataset):
    def run():
        generator = _generator(
            mixed_dataset,
            batch_size=2,
            transform_generator=random_transform_generator(
                prng=np.random.RandomState(5), flip_x_chance=0.5, min_rotation=-0.2, max_rotation=0.2
            ),
            visual_effect_generator=random_visual_effect_generator(prng=np.random.RandomState(6)),
        )
        return _numpy(build_dataset(generator, shuffle=True, seed=9, repeat=True).take(5))

    first, second = run(), run()
    assert len(first) == 5  # repeat crosses the epoch boundary (3 batches an epoch)
    for (images_a, targets_a), (images_b, targets_b) in zip(first, second):
        np.testing.assert_array_equal(images_a, images_b)
        np.testing.assert_array_equal(targets_a["classification"], targets_b["classification"])
    # augmentation did something: not every batch equals the plain generator's
    plain = _generator(mixed_dataset, batch_size=2)
    assert any(not np.array_equal(images, plain[i][0]) for i, (images, _) in enumerate(first[:3]))


def test_custom_anchor_target_function_is_used(mixed_dataset):
    calls = []

    def targets(anchors, image_group, annotations_group, num_classes):
        calls.append(len(image_group))
        return anchor_targets_bbox(anchors, image_group, annotations_group, num_classes, 0.3, 0.6)

    generator = _generator(mixed_dataset, batch_size=1, compute_anchor_targets=targets)
    (images, result), *_ = _numpy(build_dataset(generator, shuffle=False).take(1))
    expected = generator[0][1]
    np.testing.assert_array_equal(result["classification"], expected[1])
    assert calls and set(calls) == {1}


def test_an_unreadable_image_is_skipped_named_and_replaced(tmp_path):
    paths = synthetic.make_dataset(str(tmp_path), {"train": 3}, image_size=64)
    generator = CSVGenerator(
        paths["train"], paths["classes"], group_method="none", image_min_side=64, image_max_side=64,
        shuffle_groups=False,
    )
    missing = generator.image_path(1)
    os.remove(missing)
    batches = _numpy(build_dataset(generator, shuffle=False))
    assert len(batches) == 3  # the batch of the missing image holds the next readable one
    np.testing.assert_array_equal(batches[1][0], batches[2][0])
    assert generator.skipped_images.items() == [(1, missing, f"image file not found: {missing}")]
    # every image unreadable: one clear error, not an endless search
    for index in (0, 2):
        os.remove(generator.image_path(index))
    with pytest.raises(tf.errors.OpError, match="images in a row could not be read"):
        _numpy(build_dataset(generator, shuffle=False))


def test_shards_load_their_slices_of_the_batches_augmented_as_the_whole_batch(tmp_path):
    from keras_retinanet.preprocessing.pipeline import BatchShard

    paths = synthetic.make_dataset(str(tmp_path), {"train": 8}, seed=4, image_size=64, min_size=20, max_size=40)

    def run(shard, loaded):
        generator = CSVGenerator(
            paths["train"], paths["classes"], batch_size=4, image_min_side=64, image_max_side=64, seed=2,
            transform_generator=random_transform_generator(prng=np.random.RandomState(5), flip_x_chance=0.5),
            visual_effect_generator=random_visual_effect_generator(prng=np.random.RandomState(6)),
        )  # fmt: skip
        load_image = generator.load_image
        generator.load_image = lambda index: loaded.append(index) or load_image(index)
        return _numpy(build_dataset(generator, seed=9, shard=shard).take(4))

    whole_loaded, first_loaded, second_loaded = [], [], []
    whole = run(None, whole_loaded)
    first, second = run(BatchShard(0, 1, 2), first_loaded), run(BatchShard(1, 1, 2), second_loaded)
    assert len(whole) == 2 and len(first) == len(second) == 2  # an epoch: two batches, two half batches each
    for (images, targets), (images_a, targets_a), (images_b, targets_b) in zip(whole, first, second):
        assert images_a.shape[0] == images_b.shape[0] == 2
        np.testing.assert_array_equal(np.concatenate([images_a, images_b]), images)
        for key in ("regression", "classification"):
            np.testing.assert_array_equal(np.concatenate([targets_a[key], targets_b[key]]), targets[key])
    # each shard decoded its half of the images only
    assert sorted(first_loaded + second_loaded) == sorted(whole_loaded) == list(range(8))
    assert not set(first_loaded) & set(second_loaded)

    # a worker with two replicas: both slices, one element each
    both = run(BatchShard(0, 2, 2), [])
    assert len(both) == 4
    np.testing.assert_array_equal(np.concatenate([both[0][0], both[1][0]]), whole[0][0])


def test_a_shard_must_cut_the_batch_into_equal_slices(mixed_dataset):
    from keras_retinanet.preprocessing.pipeline import BatchShard

    with pytest.raises(ValueError, match="a batch of 4 images cannot be cut into 3 equal slices"):
        build_dataset(_generator(mixed_dataset, batch_size=4), shard=BatchShard(0, 1, 3))
    with pytest.raises(ValueError, match="invalid batch shard"):
        build_dataset(_generator(mixed_dataset, batch_size=4), shard=BatchShard(2, 1, 2))
    assert BatchShard(1, 1, 2).positions(4) == [(2, 4)]
