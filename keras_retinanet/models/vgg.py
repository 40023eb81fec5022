"""VGG16 / VGG19 backbones (keras.applications, caffe preprocessing)."""
import keras

from . import Backbone
from ._applications import application_retinanet, download_weights, resolve_weights

_WEIGHTS_ORIGIN = "https://storage.googleapis.com/tensorflow/keras-applications/{name}/"
# MD5 of the include_top=False ImageNet weights, as keras.applications checks them.
_WEIGHTS_HASHES = {
    "vgg16": "6d6bbae143d832006294945121d1f1fc",
    "vgg19": "253f8cb515780f3b799900260a226db6",
}
_APPLICATIONS = {"vgg16": keras.applications.VGG16, "vgg19": keras.applications.VGG19}
# Pooling outputs: C2..C5 at strides 4, 8, 16, 32.
_LAYER_NAMES = ("block2_pool", "block3_pool", "block4_pool", "block5_pool")


class VGGBackbone(Backbone):
    """VGG backbones: vgg16, vgg19."""

    allowed_backbones = tuple(_APPLICATIONS)
    preprocess_mode = "caffe"

    def retinanet(self, *args, **kwargs):
        """Training model on this VGG (see ``vgg_retinanet``)."""
        return vgg_retinanet(*args, backbone=self.backbone, **kwargs)

    def download_imagenet(self):
        file_name = f"{self.backbone}_weights_tf_dim_ordering_tf_kernels_notop.h5"
        origin = _WEIGHTS_ORIGIN.format(name=self.backbone) + file_name
        return download_weights(file_name, origin, _WEIGHTS_HASHES[self.backbone])


def vgg_retinanet(num_classes, backbone="vgg16", inputs=None, modifier=None, weights=None, **kwargs):
    """RetinaNet training model on a VGG.

    Args:
        num_classes: number of object classes.
        backbone: 'vgg16' or 'vgg19'.
        inputs: image input tensor (default (None, None, 3)).
        modifier: f(backbone_model) -> backbone_model (e.g. ``utils.model.freeze``).
        weights: backbone weights: None, 'imagenet' or a weights file of the bare application.
        **kwargs: freeze_bn, freeze_backbone and ``retinanet.retinanet`` arguments.

    Returns:
        keras.Model with outputs ``regression`` and ``classification``.
    """
    meta = VGGBackbone(backbone)
    weights = resolve_weights(weights, meta)

    def application(input_tensor):
        return _APPLICATIONS[backbone](input_tensor=input_tensor, include_top=False, weights=weights)

    layer_names = dict(zip(("C2", "C3", "C4", "C5"), _LAYER_NAMES))
    return application_retinanet(
        num_classes, application, layer_names, inputs=inputs, modifier=modifier, backbone=meta, **kwargs
    )


BACKBONE_CLASSES = (VGGBackbone,)
