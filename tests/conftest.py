"""Shared fixtures: tiny synthetic datasets written to temporary folders."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from keras_retinanet.utils import synthetic  # noqa: E402


@pytest.fixture(scope="session")
def shapes_dataset(tmp_path_factory):
    """A small shapes dataset shared by the whole session (treat it as read-only).

    Returns a dict with ``classes``, ``train`` and ``val`` CSV paths and ``dir``.
    """
    out_dir = tmp_path_factory.mktemp("shapes")
    paths = synthetic.make_dataset(
        str(out_dir), {"train": 16, "val": 4}, seed=7, image_size=128, min_size=24, max_size=64
    )
    paths["dir"] = str(out_dir)
    return paths


# --- evaluation fakes (issue 6): a generator and an inference model without Keras ---


class FakeDetectionGenerator:
    """Generator-like object over in-memory images, resized by a fixed factor.

    Args:
        images: list of (H, W, 3) uint8 BGR.
        annotations: list of {'bboxes': (K, 4), 'labels': (K,)}, original-image pixels.
        class_names: list of names; label i is class_names[i].
        scale: resize factor of resize_image.
    """

    def __init__(self, images, annotations, class_names, scale=1.0):
        self.images, self.annotations = images, annotations
        self.class_names, self.scale = list(class_names), scale

    def size(self):
        return len(self.images)

    def num_classes(self):
        return len(self.class_names)

    def has_label(self, label):
        return 0 <= label < len(self.class_names)

    def label_to_name(self, label):
        return self.class_names[label]

    def image_path(self, index):
        return f"image_{index}.png"

    def load_image(self, index):
        return self.images[index].copy()

    def load_annotations(self, index):
        return {key: value.copy() for key, value in self.annotations[index].items()}

    def preprocess_image(self, image):
        return image.astype("float32") - 100.0

    def resize_image(self, image):
        import cv2

        height, width = image.shape[:2]
        size = (int(round(width * self.scale)), int(round(height * self.scale)))
        return cv2.resize(image, size), self.scale


class FakeInferenceModel:
    """Inference-model stand-in: returns given detections for images in call order (cycling).

    Args:
        detections: per image (boxes (K, 4) original pixels, scores (K,), labels (K,)).
        scale: factor the generator resizes by (boxes are returned in resized pixels).
        padded_size: D, detections per image in the output, padded with -1.
    """

    def __init__(self, detections, scale=1.0, padded_size=50):
        self.detections, self.scale, self.padded_size = detections, scale, padded_size
        self.next_index = 0
        self.batch_shapes = []

    def predict_on_batch(self, images):
        import numpy as np

        batch = images.shape[0]
        self.batch_shapes.append(images.shape)
        boxes = -np.ones((batch, self.padded_size, 4), dtype=np.float32)
        scores = -np.ones((batch, self.padded_size), dtype=np.float32)
        labels = -np.ones((batch, self.padded_size), dtype=np.int32)
        for position in range(batch):
            image_boxes, image_scores, image_labels = self.detections[self.next_index % len(self.detections)]
            self.next_index += 1
            count = len(image_scores)
            boxes[position, :count] = np.asarray(image_boxes) * self.scale
            scores[position, :count] = image_scores
            labels[position, :count] = image_labels
        return [boxes, scores, labels]


@pytest.fixture
def fake_detection_generator():
    """The FakeDetectionGenerator class (see its docstring)."""
    return FakeDetectionGenerator


@pytest.fixture
def fake_inference_model():
    """The FakeInferenceModel class (see its docstring)."""
    return FakeInferenceModel
