"""Custom Keras layers: Anchors, UpsampleLike, RegressBoxes, ClipBoxes, FilterDetections, BackboneGroupNormalization."""
from ._misc import Anchors, ClipBoxes, RegressBoxes, UpsampleLike
from .filter_detections import FilterDetections, filter_detections
from .group_norm import BackboneGroupNormalization

__all__ = [
    "Anchors",
    "BackboneGroupNormalization",
    "ClipBoxes",
    "FilterDetections",
    "RegressBoxes",
    "UpsampleLike",
    "filter_detections",
]
