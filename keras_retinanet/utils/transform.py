"""Random affine transforms for data augmentation, as 3x3 homogeneous matrices.

A matrix maps a point ``(x, y, 1)`` of the input image to the output image. Points are
continuous pixel coordinates: pixel (column c, row r) covers [c, c + 1) x [r, r + 1), the
same plane as the box corners. The generators below draw transforms around the origin;
``utils.image.adjust_transform_for_image`` moves them to the image centre before use.
"""
import numpy as np

DEFAULT_PRNG = np.random


def colvec(*args):
    """A column vector: (len(args), 1) array."""
    return np.array([args]).T


def transform_aabb(transform, aabb):
    """The axis-aligned box around ``aabb`` after transforming its four corners.

    Args:
        transform: (3, 3) matrix.
        aabb: (4,) box x1, y1, x2, y2, or (K, 4) boxes.

    Returns:
        [x1, y1, x2, y2] list for one box (fizyr's return type), (K, 4) array for several.
    """
    boxes = np.asarray(aabb, dtype=np.float64)
    single = boxes.ndim == 1
    boxes = boxes.reshape(-1, 4)
    x1, y1, x2, y2 = boxes.T
    # (3, K, 4): the four corners of every box in homogeneous coordinates
    corners = np.stack(
        [
            np.stack([x1, x2, x1, x2], axis=1),
            np.stack([y1, y2, y2, y1], axis=1),
            np.ones((len(boxes), 4)),
        ]
    )
    points = np.tensordot(np.asarray(transform, dtype=np.float64), corners, axes=1)
    result = np.stack(
        [
            points[0].min(axis=1),
            points[1].min(axis=1),
            points[0].max(axis=1),
            points[1].max(axis=1),
        ],
        axis=1,
    )
    return result[0].tolist() if single else result


def _random_vector(min, max, prng=DEFAULT_PRNG):
    """A uniform random vector between ``min`` and ``max`` (component-wise)."""
    min = np.asarray(min, dtype=np.float64)
    max = np.asarray(max, dtype=np.float64)
    if min.ndim != 1 or min.shape != max.shape:
        raise ValueError(f"min and max must be vectors of one length, got {min} and {max}")
    return prng.uniform(min, max)


def rotation(angle):
    """Rotation by ``angle`` radians around the origin (3x3)."""
    return np.array(
        [
            [np.cos(angle), -np.sin(angle), 0],
            [np.sin(angle), np.cos(angle), 0],
            [0, 0, 1],
        ]
    )


def random_rotation(min, max, prng=DEFAULT_PRNG):
    """Rotation by a uniform random angle in [min, max] radians."""
    return rotation(prng.uniform(min, max))


def translation(translation):
    """Translation by the 2-vector ``translation`` (3x3)."""
    return np.array([[1, 0, translation[0]], [0, 1, translation[1]], [0, 0, 1]])


def random_translation(min, max, prng=DEFAULT_PRNG):
    """Translation by a uniform random 2-vector between ``min`` and ``max``."""
    return translation(_random_vector(min, max, prng))


def shear(angle):
    """Shear along x by ``angle`` radians (3x3)."""
    return np.array([[1, -np.sin(angle), 0], [0, np.cos(angle), 0], [0, 0, 1]])


def random_shear(min, max, prng=DEFAULT_PRNG):
    """Shear by a uniform random angle in [min, max] radians."""
    return shear(prng.uniform(min, max))


def scaling(factor):
    """Scaling by the 2-vector ``factor`` (x, y) around the origin (3x3)."""
    return np.array([[factor[0], 0, 0], [0, factor[1], 0], [0, 0, 1]])


def random_scaling(min, max, prng=DEFAULT_PRNG):
    """Scaling by a uniform random 2-vector between ``min`` and ``max``."""
    return scaling(_random_vector(min, max, prng))


def random_flip(flip_x_chance, flip_y_chance, prng=DEFAULT_PRNG):
    """Mirror along x and / or y, each with its own chance (3x3)."""
    flip_x = prng.uniform(0, 1) < flip_x_chance
    flip_y = prng.uniform(0, 1) < flip_y_chance
    # 1 - 2 * bool: 1 (keep) or -1 (mirror)
    return scaling((1 - 2 * flip_x, 1 - 2 * flip_y))


def change_transform_origin(transform, center):
    """The same transform applied around ``center`` instead of the origin."""
    center = np.array(center)
    return np.linalg.multi_dot([translation(center), transform, translation(-center)])


def random_transform(
    min_rotation=0,
    max_rotation=0,
    min_translation=(0, 0),
    max_translation=(0, 0),
    min_shear=0,
    max_shear=0,
    min_scaling=(1, 1),
    max_scaling=(1, 1),
    flip_x_chance=0,
    flip_y_chance=0,
    prng=DEFAULT_PRNG,
):
    """A random transform: rotation, translation, shear, scaling and flips, in that order.

    Angles are radians; translations are in pixels, or in fractions of the image size when
    the generator's ``TransformParameters.relative_translation`` is set (the default).

    Returns:
        (3, 3) float64 matrix around the origin.
    """
    return np.linalg.multi_dot(
        [
            random_rotation(min_rotation, max_rotation, prng),
            random_translation(min_translation, max_translation, prng),
            random_shear(min_shear, max_shear, prng),
            random_scaling(min_scaling, max_scaling, prng),
            random_flip(flip_x_chance, flip_y_chance, prng),
        ]
    )


def random_transform_generator(prng=None, **kwargs):
    """Endless generator of ``random_transform(**kwargs)`` matrices.

    Args:
        prng: ``numpy.random.RandomState`` (or ``Generator``) to draw from; pass a
            seeded one for repeatable runs. None: a ``RandomState`` seeded by the OS.
        **kwargs: ``random_transform`` arguments.
    """
    if prng is None:
        prng = np.random.RandomState()
    while True:
        yield random_transform(prng=prng, **kwargs)
