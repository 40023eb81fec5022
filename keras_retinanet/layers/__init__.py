"""Custom Keras layers: Anchors, UpsampleLike, RegressBoxes, ClipBoxes, FilterDetections, GroupNormalization, BackboneGroupNormalization."""
from ._misc import Anchors, ClipBoxes, RegressBoxes, UpsampleLike
from .filter_detections import FilterDetections, filter_detections
from .group_norm import BackboneGroupNormalization, GroupNormalization

__all__ = [
    "Anchors",
    "BackboneGroupNormalization",
    "ClipBoxes",
    "FilterDetections",
    "GroupNormalization",
    "RegressBoxes",
    "UpsampleLike",
    "filter_detections",
]
