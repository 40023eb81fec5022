"""Anchor boxes: generation per pyramid level and their placement over an image.

All boxes are absolute ``x1, y1, x2, y2`` float32. Anchors of one image are ordered
level by level (P3 first), then by feature-map row, column, and last by anchor
(ratio-major, scale-minor) -- the order in which the model's submodels emit them.
"""
import numpy as np

DEFAULT_PYRAMID_LEVELS = (3, 4, 5, 6, 7)
DEFAULT_ANCHOR_SIZES = (32, 64, 128, 256, 512)
DEFAULT_ANCHOR_STRIDES = (8, 16, 32, 64, 128)
DEFAULT_ANCHOR_RATIOS = (0.5, 1.0, 2.0)
DEFAULT_ANCHOR_SCALES = (2.0**0.0, 2.0 ** (1.0 / 3.0), 2.0 ** (2.0 / 3.0))

# Regression targets are normalised with these (fizyr's convention).
DEFAULT_REGRESSION_MEAN = (0.0, 0.0, 0.0, 0.0)
DEFAULT_REGRESSION_STD = (0.2, 0.2, 0.2, 0.2)


class AnchorParameters:
    """Sizes and strides (one per pyramid level), ratios and scales (shared by all levels).

    Args:
        sizes: base anchor size per level, in pixels.
        strides: stride of each level's feature map, in pixels.
        ratios: height / width ratios.
        scales: multipliers of the base size.
    """

    def __init__(self, sizes, strides, ratios, scales):
        self.sizes = [float(s) for s in sizes]
        self.strides = [int(s) for s in strides]
        self.ratios = np.asarray(ratios, dtype=np.float32)
        self.scales = np.asarray(scales, dtype=np.float32)
        if len(self.sizes) != len(self.strides):
            raise ValueError(
                f"anchor parameters: {len(self.sizes)} sizes but {len(self.strides)} strides;"
                " give one size and one stride per pyramid level"
            )

    def num_anchors(self):
        """Number of anchors per feature-map location."""
        return len(self.ratios) * len(self.scales)

    def __repr__(self):
        return (
            f"AnchorParameters(sizes={self.sizes}, strides={self.strides}, "
            f"ratios={self.ratios.tolist()}, scales={self.scales.tolist()})"
        )


AnchorParameters.default = AnchorParameters(
    sizes=DEFAULT_ANCHOR_SIZES,
    strides=DEFAULT_ANCHOR_STRIDES,
    ratios=DEFAULT_ANCHOR_RATIOS,
    scales=DEFAULT_ANCHOR_SCALES,
)


def generate_anchors(base_size=16, ratios=None, scales=None):
    """Reference anchors centred on (0, 0).

    Args:
        base_size: side of the square anchor of ratio 1 and scale 1.
        ratios: height / width ratios (default ``AnchorParameters.default.ratios``).
        scales: size multipliers (default ``AnchorParameters.default.scales``).

    Returns:
        (len(ratios) * len(scales), 4) float32, ratio-major then scale.
    """
    if ratios is None:
        ratios = AnchorParameters.default.ratios
    if scales is None:
        scales = AnchorParameters.default.scales
    ratios = np.asarray(ratios, dtype=np.float64)
    scales = np.asarray(scales, dtype=np.float64)

    sides = base_size * np.tile(scales, len(ratios))  # square side per anchor
    per_anchor_ratio = np.repeat(ratios, len(scales))
    widths = np.sqrt(sides * sides / per_anchor_ratio)
    heights = widths * per_anchor_ratio
    anchors = np.stack([-0.5 * widths, -0.5 * heights, 0.5 * widths, 0.5 * heights], axis=1)
    return anchors.astype(np.float32)


def guess_shapes(image_shape, pyramid_levels):
    """Feature-map shapes (H, W) of each pyramid level for an image of ``image_shape``.

    Level ``p`` has stride ``2**p``; sizes are rounded up as strided convolutions do.
    """
    image_shape = np.array(image_shape[:2])
    return [(image_shape + 2**p - 1) // (2**p) for p in pyramid_levels]


def shift(shape, stride, anchors):
    """Place ``anchors`` at the centre of every cell of a feature map.

    Args:
        shape: (H, W) of the feature map.
        stride: its stride in pixels.
        anchors: (A, 4) reference anchors from ``generate_anchors``.

    Returns:
        (H * W * A, 4) float32 anchors, row-major over cells then anchor.
    """
    shift_x = (np.arange(0, shape[1], dtype=np.float32) + 0.5) * stride
    shift_y = (np.arange(0, shape[0], dtype=np.float32) + 0.5) * stride
    shift_x, shift_y = np.meshgrid(shift_x, shift_y)
    shifts = np.stack([shift_x.ravel(), shift_y.ravel(), shift_x.ravel(), shift_y.ravel()], axis=1)
    all_anchors = shifts[:, None, :] + np.asarray(anchors, dtype=np.float32)[None, :, :]
    return all_anchors.reshape(-1, 4).astype(np.float32)


def anchors_for_shape(image_shape, pyramid_levels=None, anchor_params=None, shapes_callback=None):
    """All anchors of an image, over every pyramid level.

    Args:
        image_shape: (H, W[, C]) of the network input.
        pyramid_levels: levels to use (default 3..7); ``anchor_params.sizes[i]`` and
            ``strides[i]`` belong to ``pyramid_levels[i]``.
        anchor_params: ``AnchorParameters`` (default ``AnchorParameters.default``).
        shapes_callback: ``f(image_shape, pyramid_levels) -> [(H, W), ...]``
            (default ``guess_shapes``).

    Returns:
        (N, 4) float32 anchors, absolute x1, y1, x2, y2.
    """
    if pyramid_levels is None:
        pyramid_levels = list(DEFAULT_PYRAMID_LEVELS)
    if anchor_params is None:
        anchor_params = AnchorParameters.default
    if shapes_callback is None:
        shapes_callback = guess_shapes
    if len(anchor_params.sizes) < len(pyramid_levels):
        raise ValueError(
            f"anchor parameters give {len(anchor_params.sizes)} sizes for "
            f"{len(pyramid_levels)} pyramid levels {list(pyramid_levels)}"
        )
    image_shapes = shapes_callback(image_shape, pyramid_levels)

    all_anchors = [
        shift(
            image_shapes[i],
            anchor_params.strides[i],
            generate_anchors(anchor_params.sizes[i], anchor_params.ratios, anchor_params.scales),
        )
        for i in range(len(pyramid_levels))
    ]
    if not all_anchors:
        return np.zeros((0, 4), dtype=np.float32)
    return np.concatenate(all_anchors, axis=0)


def bbox_transform(anchors, gt_boxes, mean=None, std=None):
    """Regression targets that move ``anchors`` onto ``gt_boxes`` (corner offsets / anchor size).

    Args:
        anchors: (N, 4) anchors, x1, y1, x2, y2.
        gt_boxes: (N, 4) matched ground-truth boxes, x1, y1, x2, y2.
        mean, std: normalisation (default 0 and 0.2 for every coordinate).

    Returns:
        (N, 4) float32 targets ``((gt - anchor) / (w, h, w, h) - mean) / std``.
    """
    mean = np.asarray(DEFAULT_REGRESSION_MEAN if mean is None else mean, dtype=np.float32)
    std = np.asarray(DEFAULT_REGRESSION_STD if std is None else std, dtype=np.float32)
    if mean.shape != (4,) or std.shape != (4,):
        raise ValueError(f"mean and std must be 1-D of 4 values, got {mean} and {std}")
    anchors = np.asarray(anchors, dtype=np.float32)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float32)
    widths = anchors[:, 2] - anchors[:, 0]
    heights = anchors[:, 3] - anchors[:, 1]
    scale = np.stack([widths, heights, widths, heights], axis=1)
    targets = (gt_boxes - anchors) / scale
    return ((targets - mean) / std).astype(np.float32)
