import numpy as np
import pytest

from keras_retinanet.utils.image import TransformParameters, adjust_transform_for_image, apply_transform
from keras_retinanet.utils.transform import (
    change_transform_origin,
    colvec,
    random_flip,
    random_rotation,
    random_scaling,
    random_shear,
    random_transform,
    random_transform_generator,
    random_translation,
    rotation,
    scaling,
    shear,
    transform_aabb,
    translation,
)

CONSTANT_FILL = TransformParameters(fill_mode="constant", cval=0, relative_translation=False)


def _apply(matrix, point):
    return (np.asarray(matrix) @ colvec(point[0], point[1], 1))[:2, 0]


def test_basic_matrices():
    assert colvec(1, 2, 3).shape == (3, 1)
    np.testing.assert_allclose(_apply(rotation(np.pi / 2), (1, 0)), (0, 1), atol=1e-12)
    np.testing.assert_allclose(_apply(translation((3, -2)), (1, 1)), (4, -1))
    np.testing.assert_allclose(_apply(scaling((2, 3)), (1, 1)), (2, 3))
    np.testing.assert_allclose(_apply(shear(np.pi / 6), (0, 2)), (-1, 2 * np.cos(np.pi / 6)))
    # around (5, 5), a rotation keeps (5, 5) in place
    around = change_transform_origin(rotation(0.7), (5, 5))
    np.testing.assert_allclose(_apply(around, (5, 5)), (5, 5), atol=1e-12)


def test_random_draws_stay_in_range_and_repeat_for_a_seed():
    prng = np.random.RandomState(0)
    for _ in range(20):
        angle = np.arctan2(random_rotation(-0.3, 0.2, prng)[1, 0], random_rotation(-0.3, 0.2, prng)[0, 0])
        assert -0.3 <= angle <= 0.2
        t = random_translation((-2, 1), (3, 4), prng)[:2, 2]
        assert -2 <= t[0] <= 3 and 1 <= t[1] <= 4
        s = np.diag(random_scaling((0.5, 0.9), (1.5, 1.1), prng))[:2]
        assert 0.5 <= s[0] <= 1.5 and 0.9 <= s[1] <= 1.1
        assert abs(random_shear(-0.1, 0.1, prng)[0, 1]) <= np.sin(0.1)
    np.testing.assert_array_equal(random_flip(1, 0, prng), scaling((-1, 1)))
    np.testing.assert_array_equal(random_flip(0, 1, prng), scaling((1, -1)))
    np.testing.assert_array_equal(random_flip(0, 0, prng), np.eye(3))
    kwargs = dict(
        min_rotation=-0.1, max_rotation=0.1, flip_x_chance=0.5, min_scaling=(0.9, 0.9), max_scaling=(1.1, 1.1)
    )
    a = random_transform_generator(prng=np.random.RandomState(7), **kwargs)
    b = random_transform_generator(prng=np.random.RandomState(7), **kwargs)
    for _ in range(5):
        np.testing.assert_array_equal(next(a), next(b))
    assert next(random_transform_generator()).shape == (3, 3)
    np.testing.assert_array_equal(random_transform(prng=prng), np.eye(3))
    with pytest.raises(ValueError, match="min and max must be vectors of one length"):
        random_translation((0, 0), (1, 1, 1), prng)


def test_transform_aabb():
    box = [10, 20, 30, 60]
    assert transform_aabb(translation((5, -5)), box) == [15, 15, 35, 55]
    np.testing.assert_allclose(transform_aabb(rotation(np.pi / 2), box), [-60, 10, -20, 30], atol=1e-12)
    boxes = np.array([box, [0, 0, 2, 2]], float)
    result = transform_aabb(scaling((2, 0.5)), boxes)
    np.testing.assert_allclose(result, [[20, 10, 60, 30], [0, 0, 4, 1]])
    # a 45 degree rotation of a square: the enclosing box grows by sqrt(2)
    side = transform_aabb(rotation(np.pi / 4), [-1, -1, 1, 1])
    np.testing.assert_allclose(side, [-np.sqrt(2), -np.sqrt(2), np.sqrt(2), np.sqrt(2)])


def _drawn(height, width, box, value=255):
    image = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = value
    return image


def _pixel_box(image, threshold=127):
    ys, xs = np.nonzero(image[..., 0] > threshold)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@pytest.mark.parametrize(
    "name, matrix",
    [
        ("flip x", scaling((-1, 1))),
        ("flip y", scaling((1, -1))),
        ("flip both", scaling((-1, -1))),
        ("rotate 90", rotation(np.pi / 2)),
        ("rotate -90", rotation(-np.pi / 2)),
        ("rotate 180", rotation(np.pi)),
        ("translate", translation((7, -3))),
        ("scale 2", scaling((2, 2))),
        ("scale 0.5", scaling((0.5, 0.5))),
        ("scale x 1.5", scaling((1.5, 1))),
    ],
)
@pytest.mark.parametrize("shape", [(64, 64), (48, 64)])
def test_boxes_follow_the_pixels(name, matrix, shape):
    height, width = shape
    box = [26, 18, 36, 30] if name.startswith("scale") else [20, 12, 38, 22]
    image = _drawn(height, width, box)
    transform = adjust_transform_for_image(matrix, image, relative_translation=False)
    moved = apply_transform(transform, image, CONSTANT_FILL)
    assert moved.shape == image.shape
    expected = transform_aabb(transform, box)
    np.testing.assert_allclose(_pixel_box(moved), expected, atol=1e-9, err_msg=name)


def test_flip_moves_pixels_exactly():
    image = np.random.default_rng(0).integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    for matrix, expected in [
        (scaling((-1, 1)), image[:, ::-1]),
        (scaling((1, -1)), image[::-1]),
        (scaling((-1, -1)), image[::-1, ::-1]),
        (np.eye(3), image),
    ]:
        transform = adjust_transform_for_image(matrix, image, relative_translation=True)
        np.testing.assert_array_equal(apply_transform(transform, image, TransformParameters()), expected)


def test_relative_translation_and_no_mutation():
    matrix = translation((0.25, -0.5))
    original = matrix.copy()
    image = np.zeros((40, 80, 3), np.uint8)
    adjusted = adjust_transform_for_image(matrix, image, relative_translation=True)
    np.testing.assert_allclose(adjusted[:2, 2], [20, -20])
    np.testing.assert_array_equal(matrix, original)
    np.testing.assert_allclose(adjust_transform_for_image(matrix, image, False)[:2, 2], [0.25, -0.5])


def test_fill_modes():
    image = _drawn(10, 10, [0, 0, 10, 10], value=200)
    shift = adjust_transform_for_image(translation((3, 0)), image, relative_translation=False)
    constant = apply_transform(shift, image, TransformParameters(fill_mode="constant", cval=7))
    assert (constant[:, :3] == 7).all() and (constant[:, 3:] == 200).all()
    nearest = apply_transform(shift, image, TransformParameters(fill_mode="nearest"))
    assert (nearest == 200).all()
    with pytest.raises(ValueError, match="unknown fill_mode 'mirror'"):
        TransformParameters(fill_mode="mirror")
    with pytest.raises(ValueError, match="unknown interpolation 'bicubic'"):
        TransformParameters(interpolation="bicubic")
