"""Custom Keras layers: Anchors, UpsampleLike, RegressBoxes, ClipBoxes, FilterDetections."""
