"""NumPy / OpenCV utilities: anchors, overlaps, images, transforms, evaluation, drawing."""
