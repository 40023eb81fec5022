"""Distinct, deterministic drawing colours per class label."""
import colorsys

# Successive hues step by the golden-ratio conjugate, which spreads any number of labels
# around the colour wheel with neighbouring labels far apart.
_HUE_STEP = 0.618033988749895
_VALUE = 1.0
# Even and odd labels differ in saturation too, which separates labels whose hues come close.
_SATURATION_EVEN = 0.8
_SATURATION_ODD = 1.0


NUM_LISTED_COLORS = 80  # fizyr's list had 80 colours (one per COCO class)


def _hue_color(label):
    hue = (label * _HUE_STEP) % 1.0
    saturation = _SATURATION_EVEN if label % 2 == 0 else _SATURATION_ODD
    red, green, blue = colorsys.hsv_to_rgb(hue, saturation, _VALUE)
    return tuple(int(round(channel * 255)) for channel in (blue, green, red))


#: The colours of labels 0..79 as (b, g, r) tuples (fizyr's name; ``label_color`` reads them from here).
colors = [_hue_color(label) for label in range(NUM_LISTED_COLORS)]


def label_color(label):
    """A BGR colour for a class label, the same for the same label in every run.

    Labels below ``len(colors)`` take their colour from ``colors``; higher labels continue
    the same sequence of hues (fizyr returned green for them, with a warning).

    Args:
        label: int >= 0.

    Returns:
        (b, g, r) tuple of Python ints in 0..255, ready for OpenCV drawing calls.
    """
    label = int(label)
    if label < 0:
        raise ValueError(f"label_color: label must be >= 0, got {label}")
    if label < len(colors):
        return tuple(colors[label])
    return _hue_color(label)
