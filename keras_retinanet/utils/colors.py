"""Distinct, deterministic drawing colours per class label."""
import colorsys

# Successive hues step by the golden-ratio conjugate, which spreads any number of labels
# around the colour wheel with neighbouring labels far apart.
_HUE_STEP = 0.618033988749895
_VALUE = 1.0
# Even and odd labels differ in saturation too, which separates labels whose hues come close.
_SATURATION_EVEN = 0.8
_SATURATION_ODD = 1.0


def label_color(label):
    """A BGR colour for a class label, the same for the same label in every run.

    Args:
        label: int >= 0.

    Returns:
        (b, g, r) tuple of Python ints in 0..255, ready for OpenCV drawing calls.
    """
    label = int(label)
    if label < 0:
        raise ValueError(f"label_color: label must be >= 0, got {label}")
    hue = (label * _HUE_STEP) % 1.0
    saturation = _SATURATION_EVEN if label % 2 == 0 else _SATURATION_ODD
    red, green, blue = colorsys.hsv_to_rgb(hue, saturation, _VALUE)
    return tuple(int(round(channel * 255)) for channel in (blue, green, red))
