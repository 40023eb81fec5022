"""Custom Keras layers: Anchors, UpsampleLike, RegressBoxes, ClipBoxes, FilterDetections."""
from ._misc import Anchors, ClipBoxes, RegressBoxes, UpsampleLike
from .filter_detections import FilterDetections, filter_detections

__all__ = [
    "Anchors",
    "ClipBoxes",
    "FilterDetections",
    "RegressBoxes",
    "UpsampleLike",
    "filter_detections",
]
