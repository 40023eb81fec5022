import warnings

import numpy as np
import pytest

from keras_retinanet.preprocessing.generator import Generator
from keras_retinanet.utils.anchors import anchor_targets_bbox, anchors_for_shape
from keras_retinanet.utils.image import random_visual_effect_generator
from keras_retinanet.utils.transform import random_transform_generator


class InMemoryGenerator(Generator):
    """Images and boxes held in lists: the smallest concrete Generator."""

    def __init__(self, images, annotations, **kwargs):
        self.images = images
        self.annotations = annotations
        super().__init__(**kwargs)

    def size(self):
        return len(self.images)

    def num_classes(self):
        return 2

    def has_label(self, label):
        return label in (0, 1)

    def has_name(self, name):
        return name in ("a", "b")

    def name_to_label(self, name):
        return {"a": 0, "b": 1}[name]

    def label_to_name(self, label):
        return "ab"[label]

    def image_aspect_ratio(self, image_index):
        height, width = self.images[image_index].shape[:2]
        return width / height

    def image_path(self, image_index):
        return f"memory/{image_index}.png"

    def load_image(self, image_index):
        return self.images[image_index].copy()

    def load_annotations(self, image_index):
        boxes, labels = self.annotations[image_index]
        return {"bboxes": np.array(boxes, dtype=np.float64).reshape(-1, 4), "labels": np.array(labels)}


def _dataset(shapes=((64, 96), (96, 64), (64, 64), (80, 120), (64, 96))):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=shape + (3,), dtype=np.uint8) for shape in shapes]
    annotations = [([[10, 10, 40, 40], [20, 5, 60, 30]], [0, 1]) for _ in shapes]
    annotations[2] = ([], [])
    return images, annotations


def test_grouping_methods():
    images, annotations = _dataset()
    kwargs = dict(batch_size=2, image_min_side=64, image_max_side=128)
    none = InMemoryGenerator(images, annotations, group_method="none", shuffle_groups=False, **kwargs)
    assert none.groups == [[0, 1], [2, 3], [4, 0]]  # the last group wraps around
    assert len(none) == 3
    ratio = InMemoryGenerator(images, annotations, group_method="ratio", shuffle_groups=False, **kwargs)
    ratios = [ratio.image_aspect_ratio(i) for group in ratio.groups for i in group][:5]
    assert ratios == sorted(ratios)
    a = InMemoryGenerator(images, annotations, group_method="random", seed=3, **kwargs)
    b = InMemoryGenerator(images, annotations, group_method="random", seed=3, **kwargs)
    assert a.groups == b.groups and sorted(sum(a.groups, [])[:5]) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="unknown group_method 'size'"):
        InMemoryGenerator(images, annotations, group_method="size")
    with pytest.raises(IndexError, match="batch index 3 out of range for 3 batches"):
        none[3]


def test_batch_is_padded_to_a_multiple_of_32_and_targets_use_the_padded_shape():
    images, annotations = _dataset()
    generator = InMemoryGenerator(
        images,
        annotations,
        batch_size=2,
        group_method="none",
        shuffle_groups=False,
        image_min_side=64,
        image_max_side=200,
    )
    inputs, (regression, labels) = generator[0]  # images 64x96 -> 64x96 and 96x64 -> 96x64
    assert inputs.shape == (2, 96, 96, 3) and inputs.dtype == np.float32
    # each image sits top-left, preprocessed (caffe), zeros around it
    np.testing.assert_array_equal(inputs[0, :64, :96], generator.preprocess_image(images[0]))
    assert not inputs[0, 64:].any() and not inputs[0, :, 96:].any()
    assert not inputs[1, 96:].any() and not inputs[1, :, 64:].any()
    anchors = anchors_for_shape((96, 96))
    assert regression.shape == (2, len(anchors), 5) and labels.shape == (2, len(anchors), 3)
    expected = anchor_targets_bbox(
        anchors, [(64, 96, 3), (96, 64, 3)], [generator.load_annotations(0), generator.load_annotations(1)], 2
    )
    np.testing.assert_array_equal(regression, expected[0])
    np.testing.assert_array_equal(labels, expected[1])
    assert (labels[0, :, -1] == 1).sum() > 0


def test_resize_and_no_resize():
    images, annotations = _dataset()
    resized = InMemoryGenerator(
        images, annotations, group_method="none", shuffle_groups=False, image_min_side=128, image_max_side=160
    )
    image, annotation = resized.preprocess_group_entry(images[0], resized.load_annotations(0))
    assert image.shape == (107, 160, 3)  # 64x96 scaled by 160 / 96
    np.testing.assert_allclose(annotation["bboxes"][0], np.array([10, 10, 40, 40]) * 160 / 96)
    same = InMemoryGenerator(images, annotations, no_resize=True, group_method="none", shuffle_groups=False)
    image, annotation = same.preprocess_group_entry(images[0], same.load_annotations(0))
    assert image.shape == (64, 96, 3)
    np.testing.assert_array_equal(annotation["bboxes"][0], [10, 10, 40, 40])


def test_filter_annotations_warns_with_the_image():
    images, annotations = _dataset()
    annotations[0] = ([[10, 10, 40, 40], [30, 10, 20, 40], [-1, 0, 10, 10], [50, 50, 97, 60]], [0, 1, 0, 1])
    generator = InMemoryGenerator(images, annotations, group_method="none", shuffle_groups=False)
    with pytest.warns(UserWarning, match=r"image memory/0.png \(index 0\) of shape \(64, 96, 3\) has invalid boxes"):
        _, filtered = generator.filter_annotations([images[0]], [generator.load_annotations(0)], [0])
    np.testing.assert_array_equal(filtered[0]["bboxes"], [[10, 10, 40, 40]])
    np.testing.assert_array_equal(filtered[0]["labels"], [0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        generator.filter_annotations([images[1]], [generator.load_annotations(1)], [1])


def test_flip_transform_moves_boxes():
    images, annotations = _dataset()
    generator = InMemoryGenerator(
        images,
        annotations,
        group_method="none",
        shuffle_groups=False,
        no_resize=True,
        transform_generator=random_transform_generator(prng=np.random.RandomState(0), flip_x_chance=1.0),
    )
    image, annotation = generator.random_transform_group_entry(images[0], generator.load_annotations(0))
    np.testing.assert_array_equal(image, images[0][:, ::-1])
    np.testing.assert_allclose(annotation["bboxes"], [[56, 10, 86, 40], [36, 5, 76, 30]])


def test_visual_effects_and_config(tmp_path):
    images, annotations = _dataset()
    config = tmp_path / "config.ini"
    config.write_text(
        "[anchor_parameters]\nsizes = 32 64 128 256 512\nstrides = 8 16 32 64 128\nratios = 1\nscales = 1 2\n"
    )
    generator = InMemoryGenerator(
        images,
        annotations,
        group_method="none",
        shuffle_groups=False,
        image_min_side=64,
        image_max_side=128,
        visual_effect_generator=random_visual_effect_generator(prng=np.random.RandomState(0)),
        config=str(config),
    )
    assert generator.anchor_params.num_anchors() == 2
    inputs, (regression, _) = generator[0]
    assert inputs.shape == (1, 64, 96, 3)  # 64x96 is already a multiple of 32
    cells = sum((-(-64 // 2**level)) * (-(-96 // 2**level)) for level in range(3, 8))
    assert regression.shape == (1, cells * 2, 5)
    unchanged = generator.preprocess_image(images[0])
    assert not np.array_equal(inputs[0, :64, :96], unchanged)  # the visual effect changed the pixels
    assert np.abs(inputs[0, :64, :96] - unchanged).mean() < 40


def test_abstract_methods_raise():
    generator = Generator.__new__(Generator)
    for name in ("size", "num_classes"):
        with pytest.raises(NotImplementedError):
            getattr(generator, name)()
    with pytest.raises(NotImplementedError):
        generator.load_image(0)


def test_the_per_image_step_goes_through_the_subclass_hooks(shapes_dataset):
    """fizyr-style subclasses override the per-image hooks; Generator[i] and the pipeline both use them."""
    from keras_retinanet.preprocessing.csv_generator import CSVGenerator
    from keras_retinanet.preprocessing.pipeline import build_dataset
    from keras_retinanet.utils.transform import random_transform_generator

    calls = []

    class Logged(CSVGenerator):
        def random_transform_group_entry(self, image, annotations, transform=None):
            calls.append("transform")
            return super().random_transform_group_entry(image, annotations, transform)

        def preprocess_group_entry(self, image, annotations):
            calls.append("preprocess")
            image, annotations = super().preprocess_group_entry(image, annotations)
            return image + 1000.0, annotations  # visible in the batch

    generator = Logged(shapes_dataset["train"], shapes_dataset["classes"], batch_size=2, image_min_side=128,
                       image_max_side=128, transform_generator=random_transform_generator(flip_x_chance=0.5),
                       shuffle_groups=False)  # fmt: skip
    inputs, _ = generator[0]
    assert calls == ["transform", "preprocess"] * 2
    assert inputs[:, :128, :128].min() > 500
    calls.clear()
    images, _ = next(iter(build_dataset(generator, shuffle=False)))
    assert calls.count("preprocess") >= 2 and calls.count("transform") >= 2
    assert images.numpy()[:, :128, :128].min() > 500
