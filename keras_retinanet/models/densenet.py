"""DenseNet-121/169/201 backbones (keras.applications, tf preprocessing)."""
import keras

from . import Backbone
from ._applications import application_retinanet, download_weights, resolve_weights

_WEIGHTS_ORIGIN = "https://storage.googleapis.com/tensorflow/keras-applications/densenet/"
# MD5 of the include_top=False ImageNet weights, as keras.applications checks them.
_WEIGHTS_HASHES = {
    "densenet121": "30ee3e1110167f948a6b9946edeeb738",
    "densenet169": "b8c4d4c20dd625c148057b9ff1c1176b",
    "densenet201": "c13680b51ded0fb44dff2d8f86ac8bb1",
}
#: {name: (dense layers per block, keras.applications constructor)}, fizyr's module-level table.
#: The output of block b (before its transition) is C(b + 2).
allowed_backbones = {
    "densenet121": ([6, 12, 24, 16], keras.applications.DenseNet121),
    "densenet169": ([6, 12, 32, 32], keras.applications.DenseNet169),
    "densenet201": ([6, 12, 48, 32], keras.applications.DenseNet201),
}


class DenseNetBackbone(Backbone):
    """DenseNet backbones: densenet121, densenet169, densenet201."""

    allowed_backbones = tuple(allowed_backbones)
    preprocess_mode = "tf"

    def retinanet(self, *args, **kwargs):
        """Training model on this DenseNet (see ``densenet_retinanet``)."""
        return densenet_retinanet(*args, backbone=self.backbone, **kwargs)

    def download_imagenet(self):
        file_name = f"{self.backbone}_weights_tf_dim_ordering_tf_kernels_notop.h5"
        return download_weights(file_name, _WEIGHTS_ORIGIN + file_name, _WEIGHTS_HASHES[self.backbone])


def densenet_retinanet(num_classes, backbone="densenet121", inputs=None, modifier=None, weights=None, **kwargs):
    """RetinaNet training model on a DenseNet.

    Args:
        num_classes: number of object classes.
        backbone: 'densenet121', 'densenet169' or 'densenet201'.
        inputs: image input tensor (default (None, None, 3)).
        modifier: f(backbone_model) -> backbone_model (e.g. ``utils.model.freeze``).
        weights: backbone weights: None, 'imagenet' or a weights file of the bare application.
        **kwargs: freeze_bn, freeze_backbone and ``retinanet.retinanet`` arguments.

    Returns:
        keras.Model with outputs ``regression`` and ``classification``.
    """
    meta = DenseNetBackbone(backbone)
    weights = resolve_weights(weights, meta)

    blocks, constructor = allowed_backbones[backbone]

    def application(input_tensor):
        return constructor(input_tensor=input_tensor, include_top=False, weights=weights)

    layer_names = {
        f"C{block + 2}": f"conv{block + 2}_block{layers}_concat" for block, layers in enumerate(blocks)
    }
    return application_retinanet(
        num_classes, application, layer_names, inputs=inputs, modifier=modifier, backbone=meta, **kwargs
    )


BACKBONE_CLASSES = (DenseNetBackbone,)
