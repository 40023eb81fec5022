"""Image reading, preprocessing, resizing and augmentation. Images are BGR; float32 after preprocessing."""
import os

import cv2
import numpy as np

from ..constants import DEFAULT_IMAGE_MAX_SIDE, DEFAULT_IMAGE_MIN_SIDE
from .transform import change_transform_origin

# ImageNet channel means in BGR order, as subtracted by caffe-style backbones (ResNet, VGG).
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
# Keras' 'torch' mode (SE-ResNets, as fizyr preprocessed them): x / 255, then these means and
# deviations, listed for RGB but applied to the channels as they come (BGR), as fizyr did.
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)
PREPROCESS_MODES = ("caffe", "tf", "torch", "none")
# file suffixes read as images when a folder is given (what OpenCV decodes)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp",
                    ".ppm", ".pgm", ".pbm", ".pnm", ".jp2")  # fmt: skip


def preprocess_image(x, mode="caffe"):
    """Bring a BGR image (or batch) into the range a backbone expects.

    Args:
        x: (..., H, W, 3) BGR, uint8 or float.
        mode: 'caffe' subtracts the ImageNet BGR means (ResNet, VGG); 'tf' scales to
            [-1, 1] (MobileNet, DenseNet); 'torch' scales to [0, 1] and normalises with
            ``TORCH_MEAN`` / ``TORCH_STD`` (SE-ResNeXts, SENet-154); 'none' only casts
            (EfficientNet and SE-ResNet-18/34, whose models normalise internally).

    Returns:
        float32 array of the same shape.
    """
    x = np.asarray(x)
    if mode == "caffe":
        if x.ndim >= 2 and x.shape[-1] == len(CAFFE_BGR_MEAN) and x.flags.c_contiguous:
            # One pass over (..., W * 3) rows: broadcasting over a last axis of 3 is slow.
            rows = x.reshape(x.shape[:-2] + (-1,))
            mean = np.tile(np.asarray(CAFFE_BGR_MEAN, dtype=np.float32), x.shape[-2])
            return np.subtract(rows, mean, dtype=np.float32).reshape(x.shape)
        return np.subtract(x, np.asarray(CAFFE_BGR_MEAN, dtype=np.float32), dtype=np.float32)
    if mode == "tf":
        x = np.divide(x, np.float32(127.5), dtype=np.float32)
        x -= 1.0
        return x
    if mode == "torch":
        x = np.divide(x, np.float32(255.0), dtype=np.float32)
        x -= np.asarray(TORCH_MEAN, dtype=np.float32)
        x /= np.asarray(TORCH_STD, dtype=np.float32)
        return x
    if mode == "none":
        return x.astype(np.float32, copy=True)
    raise ValueError(f"unknown preprocessing mode {mode!r}; expected one of {PREPROCESS_MODES}")


def read_image_bgr(path):
    """Read an image file as a (H, W, 3) uint8 BGR array.

    Grey and alpha images are converted to 3 channels, 16-bit images to 8 bits. EXIF
    orientation is ignored: boxes refer to the pixels as stored in the file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        OSError: the file exists but is not an image OpenCV can decode, or a JPEG that
            ends before its end marker (OpenCV would decode its missing part as grey).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    data = np.fromfile(path, dtype=np.uint8)
    if _truncated_jpeg(data):
        raise OSError(f"could not read image {path}: a JPEG cut short (no end marker)")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if data.size else None
    if image is None:
        raise OSError(f"could not read image {path}: not an image file, or corrupt")
    return image


JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"
_JPEG_TAIL = 4096  # the end marker is looked for in this many last bytes (some writers pad after it)


def _truncated_jpeg(data):
    """Whether ``data`` (file bytes) is a JPEG without its end-of-image marker."""
    if data.size < 2 or data[:2].tobytes() != JPEG_START:
        return False
    return JPEG_END not in data[-_JPEG_TAIL:].tobytes()


def read_image_size(path):
    """(height, width) of an image file, from its header only (fast; nothing is decoded).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        OSError: the file is not an image PIL can identify.
    """
    from PIL import Image  # only needed here; keeps `import utils.image` light

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            width, height = image.size
    except OSError as error:
        raise OSError(f"could not read image {path}: {error}") from None
    return height, width


def compute_resize_scale(image_shape, min_side=DEFAULT_IMAGE_MIN_SIDE, max_side=DEFAULT_IMAGE_MAX_SIDE):
    """Scale that brings the short side to ``min_side`` unless the long side would pass ``max_side``.

    Args:
        image_shape: (H, W[, C]).

    Returns:
        float scale factor.
    """
    rows, cols = image_shape[:2]
    smallest_side = min(rows, cols)
    largest_side = max(rows, cols)
    scale = min_side / smallest_side
    if largest_side * scale > max_side:
        scale = max_side / largest_side
    return scale


def resize_image(img, min_side=DEFAULT_IMAGE_MIN_SIDE, max_side=DEFAULT_IMAGE_MAX_SIDE):
    """Resize (bilinear) by ``compute_resize_scale``.

    Args:
        img: (H, W, C) array.

    Returns:
        (resized image of size round(H * scale) x round(W * scale), scale).
    """
    scale = compute_resize_scale(img.shape, min_side=min_side, max_side=max_side)
    img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    return img, scale


def bgr_uint8(image):
    """``image`` as a (H, W, 3) uint8 array (other dtypes are clipped to 0..255).

    Raises:
        ValueError: not an (H, W, 3) array.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a (H, W, 3) BGR image, got an array of shape {image.shape}")
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return image


def letterbox_image(image, height, width):
    """Fit an image into a (height, width) canvas: resize keeping the aspect ratio, pad bottom-right.

    What a model with a fixed input size (TFLite) is given for an image of another size.

    Args:
        image: (H, W, C) array.
        height, width: the canvas size.

    Returns:
        (canvas (height, width, C) of the image's dtype, zero padded; scale: canvas pixels
        per image pixel, 1.0 when the image has the canvas' size).
    """
    rows, cols = image.shape[:2]
    if (rows, cols) == (height, width):
        return image, 1.0
    scale = min(height / rows, width / cols)
    size = (max(1, min(width, round(cols * scale))), max(1, min(height, round(rows * scale))))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    canvas = np.zeros((height, width) + image.shape[2:], dtype=image.dtype)
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    return canvas, scale


class TransformParameters:
    """How ``apply_transform`` fills and interpolates.

    Args:
        fill_mode: 'constant', 'nearest', 'reflect' or 'wrap': what appears where the
            transformed image leaves the frame.
        interpolation: 'nearest', 'linear', 'cubic', 'area' or 'lanczos4'.
        cval: fill value for 'constant'.
        relative_translation: translations of the transform are fractions of the image
            size (True) or pixels (False).
    """

    BORDER_MODES = {
        "constant": cv2.BORDER_CONSTANT,
        "nearest": cv2.BORDER_REPLICATE,
        "reflect": cv2.BORDER_REFLECT_101,
        "wrap": cv2.BORDER_WRAP,
    }
    INTERPOLATIONS = {
        "nearest": cv2.INTER_NEAREST,
        "linear": cv2.INTER_LINEAR,
        "cubic": cv2.INTER_CUBIC,
        "area": cv2.INTER_AREA,
        "lanczos4": cv2.INTER_LANCZOS4,
    }

    def __init__(self, fill_mode="nearest", interpolation="linear", cval=0, relative_translation=True):
        if fill_mode not in self.BORDER_MODES:
            raise ValueError(f"unknown fill_mode {fill_mode!r}; expected one of {sorted(self.BORDER_MODES)}")
        if interpolation not in self.INTERPOLATIONS:
            raise ValueError(
                f"unknown interpolation {interpolation!r}; expected one of {sorted(self.INTERPOLATIONS)}"
            )
        self.fill_mode = fill_mode
        self.cval = cval
        self.interpolation = interpolation
        self.relative_translation = relative_translation

    def cvBorderMode(self):  # noqa: N802 (fizyr's name)
        return self.BORDER_MODES[self.fill_mode]

    def cvInterpolation(self):  # noqa: N802 (fizyr's name)
        return self.INTERPOLATIONS[self.interpolation]


# Pixel index i is the continuous coordinate i + 0.5 (its centre); OpenCV's warps use the index.
_INDEX_TO_PLANE = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
_PLANE_TO_INDEX = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]])


_NO_FLIP = 2  # not an OpenCV flip code (those are 0: vertical, 1: horizontal, -1: both)
_EXACT = 1e-9


def _flip_code(index_matrix, height, width):
    """The cv2.flip code when ``index_matrix`` maps pixels to pixels as identity or a mirror, else None."""
    linear, offset = index_matrix[:2, :2], index_matrix[:2, 2]
    if abs(linear[0, 1]) > _EXACT or abs(linear[1, 0]) > _EXACT:
        return None
    mirrored = []
    for axis, size in ((0, width), (1, height)):
        if abs(linear[axis, axis] - 1) <= _EXACT and abs(offset[axis]) <= _EXACT:
            mirrored.append(False)
        elif abs(linear[axis, axis] + 1) <= _EXACT and abs(offset[axis] - (size - 1)) <= _EXACT:
            mirrored.append(True)
        else:
            return None
    return {(False, False): _NO_FLIP, (True, False): 1, (False, True): 0, (True, True): -1}[tuple(mirrored)]


def apply_transform(matrix, image, params):
    """Warp ``image`` by the affine ``matrix``; the output keeps the input's size.

    Args:
        matrix: (3, 3) transform of continuous pixel coordinates (the plane the boxes
            live on, see ``utils.transform``); ``transform_aabb`` moves boxes the same way.
        image: (H, W, C) array.
        params: ``TransformParameters``.

    Returns:
        (H, W, C) array of the input's dtype.
    """
    index_matrix = _PLANE_TO_INDEX @ np.asarray(matrix, dtype=np.float64) @ _INDEX_TO_PLANE
    flip_code = _flip_code(index_matrix, image.shape[0], image.shape[1])
    if flip_code is not None:  # identity or mirror: exact pixel moves, much faster than a warp
        return image.copy() if flip_code == _NO_FLIP else cv2.flip(image, flip_code)
    return cv2.warpAffine(
        image,
        index_matrix[:2, :],
        dsize=(image.shape[1], image.shape[0]),
        flags=params.cvInterpolation(),
        borderMode=params.cvBorderMode(),
        # a scalar fills every channel (OpenCV would fill only the first)
        borderValue=(params.cval,) * 4 if np.isscalar(params.cval) else params.cval,
    )


def adjust_transform_for_image(transform, image, relative_translation):
    """Make a transform drawn around the origin act around the image centre.

    Args:
        transform: (3, 3) matrix from ``utils.transform``.
        image: (H, W, C) array (or anything with that ``shape``).
        relative_translation: the translation part is in fractions of the image size and
            is scaled to pixels.

    Returns:
        a new (3, 3) matrix; ``transform`` is not modified.
    """
    height, width = image.shape[:2]
    result = np.array(transform, dtype=np.float64)
    if relative_translation:
        result[0:2, 2] *= [width, height]
    return change_transform_origin(result, (0.5 * width, 0.5 * height))


def _clip_uint8(image):
    return np.clip(image, 0, 255).astype(np.uint8)


def adjust_contrast(image, factor):
    """Scale each channel's distance to its mean by ``factor``; (H, W, 3) uint8 in and out."""
    mean = image.mean(axis=(0, 1))
    return _clip_uint8((image - mean) * factor + mean)


def adjust_brightness(image, delta):
    """Add ``delta`` (a fraction of 255) to every pixel; uint8 in and out."""
    return _clip_uint8(image + delta * 255)


def adjust_hue(image, delta):
    """Rotate the hue of an OpenCV HSV uint8 image (H in [0, 180)) by ``delta`` turns."""
    image[..., 0] = np.mod(image[..., 0] + delta * 180, 180)
    return image


def adjust_saturation(image, factor):
    """Scale the saturation of an OpenCV HSV uint8 image by ``factor``."""
    image[..., 1] = np.clip(image[..., 1] * factor, 0, 255)
    return image


class VisualEffect:
    """Colour augmentation of a BGR uint8 image, applied as contrast, brightness, hue, saturation.

    Args:
        contrast_factor: contrast multiplier (1: unchanged), or None.
        brightness_delta: brightness offset in fractions of 255 (0: unchanged), or None.
        hue_delta: hue rotation in turns, in [-1, 1] (0: unchanged), or None.
        saturation_factor: saturation multiplier (1: unchanged), or None.
    """

    def __init__(self, contrast_factor, brightness_delta, hue_delta, saturation_factor):
        self.contrast_factor = contrast_factor
        self.brightness_delta = brightness_delta
        self.hue_delta = hue_delta
        self.saturation_factor = saturation_factor

    def __call__(self, image):
        """(H, W, 3) uint8 BGR -> (H, W, 3) uint8 BGR."""
        if self.contrast_factor:
            image = adjust_contrast(image, self.contrast_factor)
        if self.brightness_delta:
            image = adjust_brightness(image, self.brightness_delta)
        if self.hue_delta or self.saturation_factor:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
            if self.hue_delta:
                image = adjust_hue(image, self.hue_delta)
            if self.saturation_factor:
                image = adjust_saturation(image, self.saturation_factor)
            image = cv2.cvtColor(image, cv2.COLOR_HSV2BGR)
        return image

    def __repr__(self):
        return (
            f"VisualEffect(contrast_factor={self.contrast_factor}, brightness_delta="
            f"{self.brightness_delta}, hue_delta={self.hue_delta}, saturation_factor="
            f"{self.saturation_factor})"
        )


def _check_range(name, value_range, low, high):
    lo, hi = value_range
    if not low <= lo <= hi <= high:
        raise ValueError(f"{name} must be an interval within [{low}, {high}], got {value_range}")


def random_visual_effect_generator(
    contrast_range=(0.9, 1.1),
    brightness_range=(-0.1, 0.1),
    hue_range=(-0.05, 0.05),
    saturation_range=(0.95, 1.05),
    prng=None,
):
    """Endless generator of ``VisualEffect`` with parameters drawn uniformly from the ranges.

    Args:
        contrast_range: (min, max) contrast factor, >= 0.
        brightness_range: (min, max) brightness delta in [-1, 1].
        hue_range: (min, max) hue delta in [-1, 1].
        saturation_range: (min, max) saturation factor, >= 0.
        prng: ``numpy.random.RandomState`` (or ``Generator``); None: NumPy's global one.
    """
    _check_range("contrast_range", contrast_range, 0, np.inf)
    _check_range("brightness_range", brightness_range, -1, 1)
    _check_range("hue_range", hue_range, -1, 1)
    _check_range("saturation_range", saturation_range, 0, np.inf)
    prng = np.random if prng is None else prng

    def _generate():
        while True:
            yield VisualEffect(
                contrast_factor=prng.uniform(*contrast_range),
                brightness_delta=prng.uniform(*brightness_range),
                hue_delta=prng.uniform(*hue_range),
                saturation_factor=prng.uniform(*saturation_range),
            )

    return _generate()
