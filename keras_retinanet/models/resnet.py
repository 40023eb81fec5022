"""ResNet-50/101/152 backbones (keras.applications, caffe preprocessing)."""
import keras

from . import Backbone
from ._applications import application_retinanet, download_weights, resolve_weights

_WEIGHTS_ORIGIN = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
# MD5 of the include_top=False ImageNet weights, as keras.applications checks them.
_WEIGHTS_HASHES = {
    "resnet50": "4d473c1dd8becc155b73f8504c6f6626",
    "resnet101": "88cf7a10940856eca736dc7b7e228a21",
    "resnet152": "ee4c566cf9a93f14d82f913c2dc6dd0c",
}
_APPLICATIONS = {
    "resnet50": keras.applications.ResNet50,
    "resnet101": keras.applications.ResNet101,
    "resnet152": keras.applications.ResNet152,
}
# Last layer of each stage: C2..C5 at strides 4, 8, 16, 32.
_LAYER_NAMES = {
    "resnet50": ("conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"),
    "resnet101": ("conv2_block3_out", "conv3_block4_out", "conv4_block23_out", "conv5_block3_out"),
    "resnet152": ("conv2_block3_out", "conv3_block8_out", "conv4_block36_out", "conv5_block3_out"),
}


class ResNetBackbone(Backbone):
    """ResNet backbones: resnet50, resnet101, resnet152."""

    allowed_backbones = tuple(_APPLICATIONS)
    preprocess_mode = "caffe"

    def retinanet(self, *args, **kwargs):
        """Training model on this ResNet (see ``resnet_retinanet``)."""
        return resnet_retinanet(*args, backbone=self.backbone, **kwargs)

    def download_imagenet(self):
        file_name = f"{self.backbone}_weights_tf_dim_ordering_tf_kernels_notop.h5"
        return download_weights(file_name, _WEIGHTS_ORIGIN + file_name, _WEIGHTS_HASHES[self.backbone])


def resnet_retinanet(num_classes, backbone="resnet50", inputs=None, modifier=None, weights=None, **kwargs):
    """RetinaNet training model on a ResNet.

    Args:
        num_classes: number of object classes.
        backbone: 'resnet50', 'resnet101' or 'resnet152'.
        inputs: image input tensor (default (None, None, 3)).
        modifier: f(backbone_model) -> backbone_model (e.g. ``utils.model.freeze``).
        weights: backbone weights: None, 'imagenet' or a weights file of the bare application.
        **kwargs: freeze_bn, freeze_backbone (see ``_applications.application_retinanet``) and
            ``retinanet.retinanet`` arguments (num_anchors, pyramid_levels, submodels, name).

    Returns:
        keras.Model with outputs ``regression`` and ``classification``.
    """
    meta = ResNetBackbone(backbone)
    weights = resolve_weights(weights, meta)

    def application(input_tensor):
        return _APPLICATIONS[backbone](input_tensor=input_tensor, include_top=False, weights=weights)

    layer_names = dict(zip(("C2", "C3", "C4", "C5"), _LAYER_NAMES[backbone]))
    return application_retinanet(
        num_classes, application, layer_names, inputs=inputs, modifier=modifier, backbone=meta, **kwargs
    )


def resnet50_retinanet(num_classes, inputs=None, **kwargs):
    return resnet_retinanet(num_classes=num_classes, backbone="resnet50", inputs=inputs, **kwargs)


def resnet101_retinanet(num_classes, inputs=None, **kwargs):
    return resnet_retinanet(num_classes=num_classes, backbone="resnet101", inputs=inputs, **kwargs)


def resnet152_retinanet(num_classes, inputs=None, **kwargs):
    return resnet_retinanet(num_classes=num_classes, backbone="resnet152", inputs=inputs, **kwargs)


BACKBONE_CLASSES = (ResNetBackbone,)
