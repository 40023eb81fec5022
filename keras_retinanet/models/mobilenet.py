"""MobileNet (v1), MobileNetV2 and MobileNetV3 backbones (keras.applications, tf preprocessing).

Names: ``mobilenet{128,160,192,224}_{1.0,0.75,0.5,0.25}`` (the number picks the ImageNet
weights trained at that input size; the network is the same),
``mobilenetv2_{0.35,0.5,0.75,1.0,1.3,1.4}`` and ``mobilenetv3{small,large}_{0.75,1.0}``
(224 px ImageNet weights).
"""
import keras

from . import Backbone
from ._applications import application_retinanet, download_weights, resolve_weights

MOBILENET_ROWS = (128, 160, 192, 224)
MOBILENET_ALPHAS = ("1.0", "0.75", "0.5", "0.25")
MOBILENETV2_ALPHAS = ("0.35", "0.5", "0.75", "1.0", "1.3", "1.4")
MOBILENETV2_WEIGHTS_ROWS = 224
MOBILENETV3_SIZES = ("small", "large")
MOBILENETV3_ALPHAS = ("0.75", "1.0")

_V1_ORIGIN = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/"
_V2_ORIGIN = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
_V3_ORIGIN = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/"
# MD5 of keras.applications' MobileNetV3 no-top weight files
_V3_WEIGHTS_HASHES = {
    "large_224_0.75_float": "40af19a13ebea4e2ee0c676887f69a2e",
    "large_224_1.0_float": "07fb09a5933dd0c8eaafa16978110389",
    "small_224_0.75_float": "ebdb5cc8e0b497cd13a7c275d475c819",
    "small_224_1.0_float": "d3e8ec802a04aa4fc771ee12a9a9b836",
}
# alpha as written in keras.applications' MobileNet weight file names
_V1_ALPHA_TEXT = {"1.0": "1_0", "0.75": "7_5", "0.5": "5_0", "0.25": "2_5"}

# C2..C5 at strides 4, 8, 16, 32.
_V1_LAYER_NAMES = ("conv_pw_3_relu", "conv_pw_5_relu", "conv_pw_11_relu", "conv_pw_13_relu")
_V2_LAYER_NAMES = ("block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu", "out_relu")
# The last block of each stride; None: the application's output (its final activation
# layer has no fixed name).
_V3_LAYER_NAMES = {
    "small": ("expanded_conv_project_bn", "expanded_conv_2_add", "expanded_conv_7_add", None),
    "large": ("expanded_conv_2_add", "expanded_conv_5_add", "expanded_conv_11_add", None),
}


def _parse(backbone):
    """('mobilenet' | 'mobilenetv2' | 'mobilenetv3small' | 'mobilenetv3large', rows, alpha text) of a validated name."""
    prefix, alpha = backbone.split("_")
    if prefix.startswith(("mobilenetv2", "mobilenetv3")):
        return prefix, MOBILENETV2_WEIGHTS_ROWS, alpha
    return "mobilenet", int(prefix[len("mobilenet"):]), alpha


class MobileNetBackbone(Backbone):
    """MobileNet v1 backbones, e.g. mobilenet224_1.0."""

    allowed_backbones = tuple(f"mobilenet{rows}_{alpha}" for rows in MOBILENET_ROWS for alpha in MOBILENET_ALPHAS)
    preprocess_mode = "tf"
    light_ops = True

    def retinanet(self, *args, **kwargs):
        """Training model on this MobileNet (see ``mobilenet_retinanet``)."""
        return mobilenet_retinanet(*args, backbone=self.backbone, **kwargs)

    def download_imagenet(self):
        _, rows, alpha = _parse(self.backbone)
        file_name = f"mobilenet_{_V1_ALPHA_TEXT[alpha]}_{rows}_tf_no_top.h5"
        return download_weights(file_name, _V1_ORIGIN + file_name)


class MobileNetV2Backbone(MobileNetBackbone):
    """MobileNetV2 backbones, e.g. mobilenetv2_1.0."""

    allowed_backbones = tuple(f"mobilenetv2_{alpha}" for alpha in MOBILENETV2_ALPHAS)

    def download_imagenet(self):
        _, rows, alpha = _parse(self.backbone)
        file_name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"
        return download_weights(file_name, _V2_ORIGIN + file_name)


class MobileNetV3Backbone(MobileNetBackbone):
    """MobileNetV3 backbones, e.g. mobilenetv3large_1.0 (the non-minimalistic models)."""

    allowed_backbones = tuple(f"mobilenetv3{size}_{alpha}" for size in MOBILENETV3_SIZES for alpha in MOBILENETV3_ALPHAS)

    def download_imagenet(self):
        version, rows, alpha = _parse(self.backbone)
        model_name = f"{version[len('mobilenetv3'):]}_{rows}_{alpha}_float"
        file_name = f"weights_mobilenet_v3_{model_name}_no_top_v2.h5"
        return download_weights(file_name, _V3_ORIGIN + file_name, file_hash=_V3_WEIGHTS_HASHES[model_name])


def _backbone_class(backbone):
    if backbone.startswith("mobilenetv3"):
        return MobileNetV3Backbone
    return MobileNetV2Backbone if backbone.startswith("mobilenetv2") else MobileNetBackbone


def mobilenet_retinanet(num_classes, backbone="mobilenet224_1.0", inputs=None, modifier=None, weights=None, **kwargs):
    """RetinaNet training model on a MobileNet (v1, v2 or v3, by name).

    Args:
        num_classes: number of object classes.
        backbone: e.g. 'mobilenet224_1.0', 'mobilenet128_0.25', 'mobilenetv2_1.0' or
            'mobilenetv3large_1.0'.
        inputs: image input tensor (default (None, None, 3)).
        modifier: f(backbone_model) -> backbone_model (e.g. ``utils.model.freeze``).
        weights: backbone weights: None, 'imagenet' or a weights file of the bare application.
        **kwargs: freeze_bn, freeze_backbone and ``retinanet.retinanet`` arguments.

    Returns:
        keras.Model with outputs ``regression`` and ``classification``.
    """
    meta = _backbone_class(backbone)(backbone)
    version, _, alpha = _parse(backbone)
    weights = resolve_weights(weights, meta)

    if version.startswith("mobilenetv3"):
        size = version[len("mobilenetv3"):]
        layer_names = _V3_LAYER_NAMES[size]
        constructor = keras.applications.MobileNetV3Small if size == "small" else keras.applications.MobileNetV3Large

        def application(input_tensor):
            # the images arrive scaled to [-1, 1] by preprocess_image ('tf' mode)
            return constructor(
                input_tensor=input_tensor,
                alpha=float(alpha),
                include_top=False,
                weights=weights,
                include_preprocessing=False,
            )

    elif version == "mobilenetv2":
        layer_names = _V2_LAYER_NAMES

        def application(input_tensor):
            return keras.applications.MobileNetV2(
                input_tensor=input_tensor, alpha=float(alpha), include_top=False, weights=weights
            )

    else:
        layer_names = _V1_LAYER_NAMES

        def application(input_tensor):
            return keras.applications.MobileNet(
                input_tensor=input_tensor, alpha=float(alpha), include_top=False, weights=weights
            )

    layer_names = dict(zip(("C2", "C3", "C4", "C5"), layer_names))
    return application_retinanet(
        num_classes, application, layer_names, inputs=inputs, modifier=modifier, backbone=meta, **kwargs
    )


BACKBONE_CLASSES = (MobileNetBackbone, MobileNetV2Backbone, MobileNetV3Backbone)
