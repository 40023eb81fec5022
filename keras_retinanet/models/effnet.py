"""EfficientNet-B0..B7 backbones (keras.applications).

These applications rescale and normalise their input themselves, so images only need
casting (``utils.image`` mode 'none'); values stay in [0, 255].
"""
import keras

from . import Backbone
from ._applications import application_retinanet, download_weights, resolve_weights

_WEIGHTS_ORIGIN = "https://storage.googleapis.com/keras-applications/"
# MD5 of the include_top=False ImageNet weights, as keras.applications checks them.
_WEIGHTS_HASHES = {
    "EfficientNetB0": "50bc09e76180e00e4465e1a485ddc09d",
    "EfficientNetB1": "74c4e6b3e1f6a1eea24c589628592432",
    "EfficientNetB2": "111f8e2ac8aa800a7a99e3239f7bfb39",
    "EfficientNetB3": "af6d107764bb5b1abb91932881670226",
    "EfficientNetB4": "ebc24e6d6c33eaebbd558eafbeedf1ba",
    "EfficientNetB5": "38879255a25d3c92d5e44e04ae6cec6f",
    "EfficientNetB6": "9ecce42647a20130c1f39a5d4cb75743",
    "EfficientNetB7": "cbcfe4450ddf6f3ad90b1b398090fe4a",
}
# Expansion of the first block of each stride-2 stage: C2..C5 at strides 4, 8, 16, 32.
_LAYER_NAMES = ("block3a_expand_activation", "block4a_expand_activation", "block6a_expand_activation", "top_activation")


class EfficientNetBackbone(Backbone):
    """EfficientNet backbones: EfficientNetB0 .. EfficientNetB7."""

    allowed_backbones = tuple(_WEIGHTS_HASHES)
    preprocess_mode = "none"

    def retinanet(self, *args, **kwargs):
        """Training model on this EfficientNet (see ``effnet_retinanet``)."""
        return effnet_retinanet(*args, backbone=self.backbone, **kwargs)

    def download_imagenet(self):
        file_name = f"{self.backbone.lower()}_notop.h5"
        return download_weights(file_name, _WEIGHTS_ORIGIN + file_name, _WEIGHTS_HASHES[self.backbone])


def effnet_retinanet(num_classes, backbone="EfficientNetB0", inputs=None, modifier=None, weights=None, **kwargs):
    """RetinaNet training model on an EfficientNet.

    Args:
        num_classes: number of object classes.
        backbone: 'EfficientNetB0' .. 'EfficientNetB7'.
        inputs: image input tensor (default (None, None, 3)).
        modifier: f(backbone_model) -> backbone_model (e.g. ``utils.model.freeze``).
        weights: backbone weights: None, 'imagenet' or a weights file of the bare application.
        **kwargs: freeze_bn, freeze_backbone and ``retinanet.retinanet`` arguments.

    Returns:
        keras.Model with outputs ``regression`` and ``classification``.
    """
    meta = EfficientNetBackbone(backbone)
    weights = resolve_weights(weights, meta)
    constructor = getattr(keras.applications, backbone)

    def application(input_tensor):
        return constructor(input_tensor=input_tensor, include_top=False, weights=weights)

    layer_names = dict(zip(("C2", "C3", "C4", "C5"), _LAYER_NAMES))
    return application_retinanet(
        num_classes, application, layer_names, inputs=inputs, modifier=modifier, backbone=meta, **kwargs
    )


def _named_builder(name):
    def build(num_classes, inputs=None, **kwargs):
        return effnet_retinanet(num_classes=num_classes, backbone=name, inputs=inputs, **kwargs)

    build.__name__ = f"{name}_retinanet"
    build.__doc__ = f"RetinaNet training model on {name} (see ``effnet_retinanet``)."
    return build


EfficientNetB0_retinanet = _named_builder("EfficientNetB0")
EfficientNetB1_retinanet = _named_builder("EfficientNetB1")
EfficientNetB2_retinanet = _named_builder("EfficientNetB2")
EfficientNetB3_retinanet = _named_builder("EfficientNetB3")
EfficientNetB4_retinanet = _named_builder("EfficientNetB4")
EfficientNetB5_retinanet = _named_builder("EfficientNetB5")
EfficientNetB6_retinanet = _named_builder("EfficientNetB6")
EfficientNetB7_retinanet = _named_builder("EfficientNetB7")

BACKBONE_CLASSES = (EfficientNetBackbone,)
