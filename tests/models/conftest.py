"""Models shared by the model tests (building a backbone costs seconds, so build each once)."""
import pytest

from keras_retinanet import models

NUM_CLASSES = 3

# One backbone name per family for the forward-pass tests.
FAMILY_REPRESENTATIVES = (
    "resnet50",
    "mobilenet128_0.25",
    "mobilenetv2_0.35",
    "mobilenetv3small_1.0",
    "vgg16",
    "densenet121",
    "EfficientNetB0",
)

_cache = {}


def training_model(name):
    """Training model of ``name`` with NUM_CLASSES classes, built once per session."""
    if name not in _cache:
        _cache[name] = models.backbone(name).retinanet(num_classes=NUM_CLASSES)
    return _cache[name]


@pytest.fixture(scope="session")
def small_model():
    """mobilenet128_0.25 training model: the cheapest backbone, for tests of the plumbing."""
    return training_model("mobilenet128_0.25")
