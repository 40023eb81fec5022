"""Squeeze-and-excitation backbones: seresnet18/34/50/101/152, seresnext50/101, senet154.

The architectures of fizyr's SE backbones (the ``classification_models`` package: Hu et
al., "Squeeze-and-Excitation Networks", in Cadene's pretrained-models layout), built from
Keras 3 layers only: grouped 3x3 convolutions are ``Conv2D(groups=...)`` and the SE block
is global pooling -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid -> multiply, so the models
hold no Lambda layer and no custom object, and save and load as any ``.keras`` file.

Layouts (C3..C5 at strides 8, 16, 32 are the outputs of stages 2..4; C2 of stage 1):

- seresnet18/34: pre-activation ResNet (BatchNormalization of the input, ``bn_data``,
  then basic blocks); a stage's output is taken after the next stage's first BN-ReLU, and
  C5 after the final one, as fizyr took ``stage3_unit1_relu1``, ``stage4_unit1_relu1``,
  ``relu1``. Images: BGR as they are (``preprocess_mode`` 'none'; ``bn_data`` normalises).
- seresnet50/101/152: bottleneck blocks (stride in the first 1x1 conv); seresnext50/101:
  ResNeXt bottlenecks (32 groups of width 4); senet154: 64-group bottlenecks, a 3x3 stem
  and 3x3 downsampling shortcuts. Images: keras' 'torch' mode on the BGR channels, as
  fizyr preprocessed them (``preprocess_mode`` 'torch').

No weights can be downloaded here: ``weights`` is None (random), a weights file of the
bare backbone (``se_backbone(name).save_weights('x.weights.h5')`` writes one), or
'imagenet', which looks for ``<name>_notop.weights.h5`` in the Keras cache
(``~/.keras/models``, or ``$KERAS_HOME/models``) and says where to put it when it is not
there. ``classification_models``' own Keras 2 ``.h5`` files are not read.
"""
import os
from typing import NamedTuple

import keras

from . import Backbone
from ._applications import application_retinanet, default_inputs


class SeParams(NamedTuple):
    """An SE architecture: blocks per stage, block kind, groups, SE reduction, stem."""

    repetitions: tuple
    block: str  # 'basic' (pre-activation), 'bottleneck', 'resnext' or 'senet'
    groups: int = 1
    reduction: int = 16
    input_3x3: bool = False


SE_ARCHITECTURES = {
    "seresnet18": SeParams((2, 2, 2, 2), "basic"),
    "seresnet34": SeParams((3, 4, 6, 3), "basic"),
    "seresnet50": SeParams((3, 4, 6, 3), "bottleneck"),
    "seresnet101": SeParams((3, 4, 23, 3), "bottleneck"),
    "seresnet152": SeParams((3, 8, 36, 3), "bottleneck"),
    "seresnext50": SeParams((3, 4, 6, 3), "resnext", groups=32),
    "seresnext101": SeParams((3, 4, 23, 3), "resnext", groups=32),
    "senet154": SeParams((3, 8, 36, 3), "senet", groups=64, input_3x3=True),
}
#: fizyr's list of SE backbone names
allowed_backbones = tuple(SE_ARCHITECTURES)

INIT_FILTERS = 64
RESNEXT_BASE_WIDTH = 4
BASIC_BN = {"epsilon": 2e-5, "momentum": 0.99}  # classification_models' ResNet-18/34
SE_BN = {"epsilon": 9.999999747378752e-06}  # its SENets (1e-5 in float32)
WEIGHTS_SUFFIX = "_notop.weights.h5"


def _conv(filters, kernel, name, strides=1, groups=1, use_bias=False):
    return keras.layers.Conv2D(
        filters, kernel, strides=strides, groups=groups, use_bias=use_bias, kernel_initializer="he_uniform",
        name=name,
    )  # fmt: skip


def _pad(x, padding, name):
    return keras.layers.ZeroPadding2D(padding, name=name)(x)


def _squeeze_excite(x, reduction, name):
    """Channel attention: x * sigmoid(conv(relu(conv(mean over H, W)))), (B, H, W, C) -> same."""
    channels = x.shape[-1]
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_pool")(x)
    s = _conv(channels // reduction, 1, f"{name}_se_reduce", use_bias=True)(s)
    s = keras.layers.Activation("relu", name=f"{name}_se_relu")(s)
    s = _conv(channels, 1, f"{name}_se_expand", use_bias=True)(s)
    s = keras.layers.Activation("sigmoid", name=f"{name}_se_sigmoid")(s)
    return keras.layers.Multiply(name=f"{name}_se_scale")([x, s])


def _basic_block(x, filters, strides, project, reduction, name):
    """Pre-activation basic block (BN-ReLU first; the projection shortcut after it)."""
    x = keras.layers.BatchNormalization(name=f"{name}_bn1", **BASIC_BN)(x)
    shortcut_input = x = keras.layers.Activation("relu", name=f"{name}_relu1")(x)
    x = _conv(filters, 3, f"{name}_conv1", strides=strides)(_pad(x, 1, f"{name}_pad1"))
    x = keras.layers.BatchNormalization(name=f"{name}_bn2", **BASIC_BN)(x)
    x = keras.layers.Activation("relu", name=f"{name}_relu2")(x)
    x = _conv(filters, 3, f"{name}_conv2")(_pad(x, 1, f"{name}_pad2"))
    x = _squeeze_excite(x, reduction, name)
    return x, (_conv(filters, 1, f"{name}_sc", strides=strides)(shortcut_input) if project else None)


def _bottleneck_block(x, filters, strides, params, first, name):
    """SE-ResNet / SE-ResNeXt / SENet bottleneck: 1x1, 3x3 (grouped), 1x1, SE, + shortcut, ReLU."""
    residual = x
    if params.block == "bottleneck":
        widths, conv_strides, groups = (filters // 4, filters // 4), (strides, 1), 1
    elif params.block == "resnext":
        width = (filters // 4) * RESNEXT_BASE_WIDTH * params.groups // 64
        widths, conv_strides, groups = (width, width), (1, strides), params.groups
    else:  # senet
        widths, conv_strides, groups = (filters // 2, filters), (1, strides), params.groups
    x = _conv(widths[0], 1, f"{name}_conv1", strides=conv_strides[0])(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn1", **SE_BN)(x)
    x = keras.layers.Activation("relu", name=f"{name}_relu1")(x)
    x = _conv(widths[1], 3, f"{name}_conv2", strides=conv_strides[1], groups=groups)(_pad(x, 1, f"{name}_pad2"))
    x = keras.layers.BatchNormalization(name=f"{name}_bn2", **SE_BN)(x)
    x = keras.layers.Activation("relu", name=f"{name}_relu2")(x)
    x = _conv(filters, 1, f"{name}_conv3")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn3", **SE_BN)(x)
    if strides != 1 or residual.shape[-1] != filters:
        if params.block == "senet" and not first:  # SENet-154 downsamples with a 3x3 conv
            residual = _conv(filters, 3, f"{name}_sc", strides=strides)(_pad(residual, 1, f"{name}_sc_pad"))
        else:
            residual = _conv(filters, 1, f"{name}_sc", strides=strides)(residual)
        residual = keras.layers.BatchNormalization(name=f"{name}_sc_bn", **SE_BN)(residual)
    x = _squeeze_excite(x, params.reduction, name)
    x = keras.layers.Add(name=f"{name}_add")([x, residual])
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def _stem(x, params):
    if params.block == "basic":
        x = keras.layers.BatchNormalization(scale=False, name="bn_data", **BASIC_BN)(x)
        x = _conv(INIT_FILTERS, 7, "conv0", strides=2)(_pad(x, 3, "conv0_pad"))
        x = keras.layers.BatchNormalization(name="bn0", **BASIC_BN)(x)
        x = keras.layers.Activation("relu", name="relu0")(x)
    elif params.input_3x3:
        for i, (filters, strides) in enumerate(((INIT_FILTERS, 2), (INIT_FILTERS, 1), (2 * INIT_FILTERS, 1))):
            x = _conv(filters, 3, f"conv0_{i}", strides=strides)(_pad(x, 1, f"conv0_{i}_pad"))
            x = keras.layers.BatchNormalization(name=f"bn0_{i}", **SE_BN)(x)
            x = keras.layers.Activation("relu", name=f"relu0_{i}")(x)
    else:
        x = _conv(INIT_FILTERS, 7, "conv0", strides=2)(_pad(x, 3, "conv0_pad"))
        x = keras.layers.BatchNormalization(name="bn0", **SE_BN)(x)
        x = keras.layers.Activation("relu", name="relu0")(x)
    return keras.layers.MaxPooling2D(3, strides=2, name="pooling0")(_pad(x, 1, "pooling0_pad"))


def feature_layer_names(backbone):
    """{'C2'..'C5': name of the layer giving that feature map} of an SE backbone."""
    params = SE_ARCHITECTURES[backbone]
    if params.block == "basic":  # pre-activation: after the next BN-ReLU (fizyr's layers)
        names = [f"stage{stage + 1}_unit1_relu1" for stage in (1, 2, 3)] + ["relu1"]
    else:
        names = [f"stage{stage + 1}_unit{units}_relu" for stage, units in enumerate(params.repetitions)]
    return dict(zip(("C2", "C3", "C4", "C5"), names))


def se_backbone(backbone="seresnext50", inputs=None):
    """The bare SE backbone: image (B, H, W, 3) -> [C2, C3, C4, C5] at strides 4, 8, 16, 32.

    Args:
        backbone: a name of ``allowed_backbones``.
        inputs: the image input tensor (default (None, None, 3)).

    Returns:
        keras.Model named ``backbone`` with the four feature maps (``feature_layer_names``).
    """
    if backbone not in SE_ARCHITECTURES:
        raise ValueError(f"Backbone ('{backbone}') not in allowed backbones ({list(allowed_backbones)}).")
    params = SE_ARCHITECTURES[backbone]
    inputs = default_inputs(inputs)
    x = _stem(inputs, params)
    for stage, repetitions in enumerate(params.repetitions):
        for unit in range(repetitions):
            name = f"stage{stage + 1}_unit{unit + 1}"
            strides = 2 if unit == 0 and stage > 0 else 1
            if params.block == "basic":
                filters = INIT_FILTERS * 2**stage
                block_out, shortcut = _basic_block(x, filters, strides, unit == 0, params.reduction, name)
                x = keras.layers.Add(name=f"{name}_add")([block_out, x if shortcut is None else shortcut])
            else:
                filters = 4 * INIT_FILTERS * 2**stage
                x = _bottleneck_block(x, filters, strides, params, stage == 0 and unit == 0, name)
    if params.block == "basic":
        x = keras.layers.BatchNormalization(name="bn1", **BASIC_BN)(x)
        x = keras.layers.Activation("relu", name="relu1")(x)
    graph = keras.Model(inputs, x)
    outputs = [graph.get_layer(name).output for name in feature_layer_names(backbone).values()]
    return keras.Model(inputs, outputs, name=backbone)


def imagenet_weights_path(backbone):
    """Where ``weights='imagenet'`` looks for the weights of ``backbone`` (the Keras cache)."""
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.join(home, "models", backbone + WEIGHTS_SUFFIX)


class SeBackbone(Backbone):
    """SE backbones: seresnet18/34/50/101/152, seresnext50/101, senet154."""

    allowed_backbones = allowed_backbones

    def __init__(self, backbone):
        super().__init__(backbone)
        self.preprocess_mode = "none" if SE_ARCHITECTURES[backbone].block == "basic" else "torch"

    def retinanet(self, *args, **kwargs):
        """Training model on this SE backbone (see ``senet_retinanet``)."""
        return senet_retinanet(*args, backbone=self.backbone, **kwargs)

    def download_imagenet(self):
        """The local ImageNet weights file of the backbone (nothing can be downloaded).

        Raises:
            FileNotFoundError: the file is not in the Keras cache; the message says where to put it.
        """
        path = imagenet_weights_path(self.backbone)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"no ImageNet weights for {self.backbone}: they cannot be downloaded; put a Keras 3 weights file of "
                f"the bare backbone at {path}, give a weights file, or train from scratch (--no-weights)"
            )
        return path


def senet_retinanet(num_classes, backbone="seresnext50", inputs=None, modifier=None, weights=None, **kwargs):
    """RetinaNet training model on an SE backbone.

    Args:
        num_classes: number of object classes.
        backbone: a name of ``allowed_backbones``.
        inputs: image input tensor (default (None, None, 3)).
        modifier: f(backbone_model) -> backbone_model (e.g. ``utils.model.freeze``).
        weights: None, 'imagenet' (``SeBackbone.download_imagenet``) or a weights file of the
            bare backbone (``se_backbone``).
        **kwargs: freeze_bn, freeze_backbone and ``retinanet.retinanet`` arguments.

    Returns:
        keras.Model with outputs ``regression`` (B, N, 4) and ``classification`` (B, N, C).

    Raises:
        FileNotFoundError: the weights file (or the ImageNet one) is not there.
    """
    meta = SeBackbone(backbone)
    if weights == "imagenet":
        weights = meta.download_imagenet()
    elif weights is not None and not os.path.isfile(weights):
        raise FileNotFoundError(f"backbone weights file not found: {weights}")

    def application(input_tensor):
        model = se_backbone(backbone, input_tensor)
        if weights is not None:
            model.load_weights(weights)
        return model

    return application_retinanet(
        num_classes, application, feature_layer_names(backbone), inputs=inputs, modifier=modifier, backbone=meta,
        **kwargs,
    )  # fmt: skip


def seresnet18_retinanet(num_classes, inputs=None, **kwargs):
    return senet_retinanet(num_classes=num_classes, backbone="seresnet18", inputs=inputs, **kwargs)


def seresnet34_retinanet(num_classes, inputs=None, **kwargs):
    return senet_retinanet(num_classes=num_classes, backbone="seresnet34", inputs=inputs, **kwargs)


def seresnet50_retinanet(num_classes, inputs=None, **kwargs):
    return senet_retinanet(num_classes=num_classes, backbone="seresnet50", inputs=inputs, **kwargs)


def seresnet101_retinanet(num_classes, inputs=None, **kwargs):
    return senet_retinanet(num_classes=num_classes, backbone="seresnet101", inputs=inputs, **kwargs)


def seresnet152_retinanet(num_classes, inputs=None, **kwargs):
    return senet_retinanet(num_classes=num_classes, backbone="seresnet152", inputs=inputs, **kwargs)


def seresnext50_retinanet(num_classes, inputs=None, **kwargs):
    return senet_retinanet(num_classes=num_classes, backbone="seresnext50", inputs=inputs, **kwargs)


def seresnext101_retinanet(num_classes, inputs=None, **kwargs):
    return senet_retinanet(num_classes=num_classes, backbone="seresnext101", inputs=inputs, **kwargs)


def senet154_retinanet(num_classes, inputs=None, **kwargs):
    return senet_retinanet(num_classes=num_classes, backbone="senet154", inputs=inputs, **kwargs)


BACKBONE_CLASSES = (SeBackbone,)
