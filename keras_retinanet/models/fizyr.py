"""fizyr/keras-retinanet 1.0 models (Keras 2 ``.h5`` files), rebuilt in Keras 3 with their weights.

A fizyr ``.h5`` file holds a Keras 2 model config and the weights of every layer by name;
its custom layers (Keras 2 code) cannot be deserialised here. ``load_fizyr_model`` reads
the file with h5py, works out the recipe from the config (backbone, classes, anchors per
location, pyramid levels, FPN and head sizes; for an inference model its anchors and
filter settings), builds this package's model of the same architecture and copies the
weights layer by layer. A layer it cannot place is an error naming it.

Backbones: the keras.applications ones (MobileNet, VGG, DenseNet; layer names are the
same in Keras 2 and 3) are this package's own; fizyr's ResNets come from keras-resnet,
whose layout differs from keras.applications' (``same`` padding in conv1 and pool1, no
convolution biases, other names), so ``keras_resnet_backbone`` rebuilds that layout
exactly: a loaded fizyr ResNet gives fizyr's detections.
"""
import json
import os
import re

import numpy as np

from ..errors import ModelLoadError
from ..spec import AnchorSpec, DetectorSpec, FilterSpec

# keras-resnet 0.2's ResNets: bottleneck blocks per stage, and whether blocks after the
# first are named by number (res4b1) instead of letter (res4b).
KERAS_RESNET_BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3), "resnet152": (3, 8, 36, 3)}
KERAS_RESNET_NUMERICAL_NAMES = {
    "resnet50": (False, False, False, False),
    "resnet101": (False, True, True, False),
    "resnet152": (False, True, True, False),
}
KERAS_RESNET_EPSILON = 1e-5
MOBILENET_ALPHAS = {32: "1.0", 24: "0.75", 16: "0.5", 8: "0.25"}  # conv1 filters -> alpha
DENSENET_BLOCKS = {24: "densenet121", 32: "densenet169", 48: "densenet201"}  # blocks in stage 4
WEIGHT_ALIASES = {"depthwise_kernel": "kernel"}  # Keras 2 name -> Keras 3 name


# ----------------------------------------------------------------------------------- reading


class FizyrFile:
    """What a fizyr ``.h5`` file says about its model.

    Attributes:
        path, keras_version; layers: {name: Keras 2 layer config}; weights:
        {layer path ('conv1', 'regression_submodel/pyramid_regression_0'): {weight name: array}};
        training: whether it is a training model (else an inference model).
    """

    def __init__(self, path):
        import h5py

        self.path = os.fspath(path)
        try:
            file = h5py.File(self.path, "r")
        except OSError as error:
            raise ModelLoadError(f"cannot read {self.path}: not an HDF5 file ({error})") from None
        with file:
            if "model_config" not in file.attrs:
                raise ModelLoadError(f"{self.path} holds no model (weights only?): it is not a fizyr model file")
            config = json.loads(_text(file.attrs["model_config"]))
            self.keras_version = _text(file.attrs.get("keras_version", "unknown"))
            group = file["model_weights"] if "model_weights" in file else file
            self.weights = {}
            for name in (_text(n) for n in group.attrs.get("layer_names", [])):
                layer = group[name]
                for weight_name in (_text(n) for n in layer.attrs.get("weight_names", [])):
                    *owner, variable = weight_name.split("/")
                    key = name if not owner or owner[-1] == name else f"{name}/{owner[-1]}"
                    self.weights.setdefault(key, {})[variable.split(":")[0]] = np.asarray(layer[weight_name])
        self.config = config
        self.layers = {layer["config"]["name"]: layer for layer in config.get("config", {}).get("layers", [])}
        outputs = [entry[0] for entry in config.get("config", {}).get("output_layers", [])]
        self.training = "regression" in outputs and "classification" in outputs
        if not self.training and "filtered_detections" not in self.layers:
            raise ModelLoadError(f"{self.path} is not a fizyr RetinaNet model (outputs {outputs})")

    def layer_config(self, name):
        return self.layers[name]["config"]

    def nested_config(self, model_name, layer_name):
        model = self.layers[model_name]["config"]
        for layer in model.get("layers", []):
            if layer["config"]["name"] == layer_name:
                return layer["config"]
        raise KeyError(layer_name)


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_fizyr_spec(path):
    """The ``DetectorSpec`` a fizyr ``.h5`` file's config shows, without building the model (None for
    an ``.h5`` file that is not a fizyr model)."""
    if not is_fizyr_file(path):
        return None
    info = FizyrFile(path)
    return recipe_of(info, detect_backbone(info))[0]


def is_fizyr_file(path):
    """Whether ``path`` is an HDF5 file with a Keras 2 model (fizyr's ``.h5`` format)."""
    try:
        import h5py

        with h5py.File(os.fspath(path), "r") as file:
            return "model_config" in file.attrs
    except (OSError, ImportError):
        return False


def detect_backbone(info):
    """The backbone name of a fizyr model from its layer names (MobileNet's input size is not recorded)."""
    names = set(info.layers)
    if "res2a_branch2a" in names:
        stage4 = sum(1 for name in names if name.startswith("res4") and name.endswith("_branch2a"))
        for backbone, blocks in KERAS_RESNET_BLOCKS.items():
            if blocks[2] == stage4:
                return backbone
    if "conv_pw_13_relu" in names:
        alpha = MOBILENET_ALPHAS.get(info.layer_config("conv1")["filters"])
        if alpha:
            return f"mobilenet224_{alpha}"
    if "block5_conv4" in names:
        return "vgg19"
    if "block5_conv3" in names:
        return "vgg16"
    if "conv5_block1_concat" in names:
        stage4 = sum(1 for name in names if name.startswith("conv4_block") and name.endswith("_concat"))
        if stage4 in DENSENET_BLOCKS:
            return DENSENET_BLOCKS[stage4]
    raise ModelLoadError(
        f"cannot tell the backbone of {info.path} from its layers (not a fizyr ResNet, MobileNet, VGG or DenseNet); "
        "give backbone_name (--backbone)"
    )


def recipe_of(info, backbone):
    """The ``DetectorSpec`` a fizyr model's config shows (its classes' names are not in the file)."""
    regression = info.nested_config("regression_submodel", "pyramid_regression")
    classification = info.nested_config("classification_submodel", "pyramid_classification")
    num_anchors = regression["filters"] // 4
    num_classes = classification["filters"] // num_anchors
    hidden = [name for name in (layer["config"]["name"] for layer in info.layers["regression_submodel"]["config"]["layers"])
              if re.fullmatch(r"pyramid_regression_\d+", name)]  # fmt: skip
    levels = tuple(level for level in range(2, 8) if f"P{level}" in info.layers)
    spec = DetectorSpec(
        backbone=backbone,
        num_classes=num_classes,
        pyramid_levels=levels,
        feature_size=info.layer_config("C5_reduced")["filters"],
        head_depth=len(hidden),
        clip_margin=1.0,  # fizyr clips boxes to the last pixel's index
    )
    if not info.training:
        anchors = [info.layer_config(f"anchors_{i}") for i in range(len(levels))]
        spec = spec.replace(
            anchors=AnchorSpec(
                [a["size"] for a in anchors], [a["stride"] for a in anchors], anchors[0]["ratios"], anchors[0]["scales"]
            )
        )
        filtering = info.layer_config("filtered_detections")
        spec = spec.replace(filter=FilterSpec(
            filtering.get("nms", True), filtering.get("class_specific_filter", True),
            filtering.get("nms_threshold", 0.5), filtering.get("score_threshold", 0.05),
            filtering.get("max_detections", 300),
        ))  # fmt: skip
    return spec, num_anchors


# ----------------------------------------------------------------------------------- building


def keras_resnet_backbone(inputs, backbone, freeze_bn=True):
    """A ResNet in keras-resnet 0.2's layout and names (fizyr's ResNets): [C2, C3, C4, C5] tensors.

    conv1 7x7/2 and pool1 3x3/2 with ``same`` padding; bottleneck blocks with the stride
    in the first 1x1 convolution, explicit zero padding before the 3x3 one; no
    convolution biases; batch normalisation with epsilon 1e-5 (frozen: inference mode).
    """
    import keras

    blocks, numerical = KERAS_RESNET_BLOCKS[backbone], KERAS_RESNET_NUMERICAL_NAMES[backbone]

    def batch_norm(name):
        layer = keras.layers.BatchNormalization(epsilon=KERAS_RESNET_EPSILON, name=name)
        layer.trainable = not freeze_bn
        return layer

    x = keras.layers.Conv2D(64, 7, strides=2, use_bias=False, padding="same", name="conv1")(inputs)
    x = batch_norm("bn_conv1")(x)
    x = keras.layers.Activation("relu", name="conv1_relu")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    outputs = []
    for stage, count in enumerate(blocks):
        filters = 64 * 2**stage
        for block in range(count):
            name = f"{stage + 2}{f'b{block}' if block > 0 and numerical[stage] else chr(ord('a') + block)}"
            stride = 2 if block == 0 and stage > 0 else 1
            y = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"res{name}_branch2a")(x)
            y = batch_norm(f"bn{name}_branch2a")(y)
            y = keras.layers.Activation("relu", name=f"res{name}_branch2a_relu")(y)
            y = keras.layers.ZeroPadding2D(1, name=f"padding{name}_branch2b")(y)
            y = keras.layers.Conv2D(filters, 3, use_bias=False, name=f"res{name}_branch2b")(y)
            y = batch_norm(f"bn{name}_branch2b")(y)
            y = keras.layers.Activation("relu", name=f"res{name}_branch2b_relu")(y)
            y = keras.layers.Conv2D(filters * 4, 1, use_bias=False, name=f"res{name}_branch2c")(y)
            y = batch_norm(f"bn{name}_branch2c")(y)
            shortcut = x
            if block == 0:
                shortcut = keras.layers.Conv2D(filters * 4, 1, strides=stride, use_bias=False,
                                               name=f"res{name}_branch1")(x)  # fmt: skip
                shortcut = batch_norm(f"bn{name}_branch1")(shortcut)
            x = keras.layers.Add(name=f"res{name}")([y, shortcut])
            x = keras.layers.Activation("relu", name=f"res{name}_relu")(x)
        outputs.append(x)
    return outputs


def build_fizyr_architecture(spec, num_anchors, num_classes=None):
    """This package's training model in the architecture of a fizyr model (random weights).

    Args:
        spec: ``recipe_of``'s spec (backbone, levels, sizes).
        num_anchors: anchors per location.
        num_classes: classes of the heads (default: the fizyr model's).
    """
    import functools

    from . import backbone as get_backbone
    from .retinanet import create_pyramid_features, retinanet

    pyramid = functools.partial(create_pyramid_features, half_pixel_centers=False)  # TF 1's nearest upsampling

    num_classes = spec.num_classes if num_classes is None else num_classes
    backbone = get_backbone(spec.backbone)
    model_spec = spec.replace(preprocess_mode=backbone.preprocess_mode, num_classes=num_classes, anchors=None,
                              filter=None)  # fmt: skip
    if spec.backbone in KERAS_RESNET_BLOCKS:
        import keras

        inputs = keras.Input(shape=(None, None, 3), name="image")
        c2, c3, c4, c5 = keras_resnet_backbone(inputs, spec.backbone)
        layers = {"C2": c2, "C3": c3, "C4": c4, "C5": c5} if 2 in spec.pyramid_levels else {"C3": c3, "C4": c4, "C5": c5}
        return retinanet(
            inputs, layers, num_classes, num_anchors=num_anchors, create_pyramid_features=pyramid,
            pyramid_levels=list(spec.pyramid_levels), feature_size=spec.feature_size,
            submodel_depth=spec.head_depth, spec=model_spec,
        )  # fmt: skip
    return backbone.retinanet(
        num_classes, num_anchors=num_anchors, create_pyramid_features=pyramid,
        pyramid_levels=list(spec.pyramid_levels), feature_size=spec.feature_size, submodel_depth=spec.head_depth,
        weights=None, freeze_bn=True, spec=model_spec,
    )  # fmt: skip


def _layers_with_weights(model, prefix=""):
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers_with_weights(layer, f"{layer.name}/")
        elif layer.weights:
            yield f"{prefix}{layer.name}", layer


def copy_weights(model, info, skip_mismatch=False):
    """Copy a fizyr file's weights into ``model`` layer by layer, by name.

    Args:
        model: this package's model of the same architecture (``build_fizyr_architecture``).
        info: ``FizyrFile``.
        skip_mismatch: leave layers whose shapes differ as they are (re-initialised heads
            when fine-tuning to other classes) instead of raising.

    Returns:
        list of the layer paths left as they were (shapes that differ).

    Raises:
        ModelLoadError: a layer with weights that the file does not have, or (without
            ``skip_mismatch``) of another shape, named.
    """
    skipped = []
    for path, layer in _layers_with_weights(model):
        stored = info.weights.get(path)
        if stored is None and "/" in path:
            stored = info.weights.get(path.split("/")[-1])
        if stored is None:
            raise ModelLoadError(f"{info.path}: no weights for layer {path} (is it a fizyr model of this backbone?)")
        values = []
        for variable in layer.weights:
            name = variable.name.split("/")[-1].split(":")[0]
            value = stored.get(name)
            if value is None:
                value = next((v for k, v in stored.items() if WEIGHT_ALIASES.get(k) == name), None)
            if value is None:
                raise ModelLoadError(f"{info.path}: layer {path} has no weight {name!r} (it has {sorted(stored)})")
            values.append(value)
        shapes = [tuple(v.shape) for v in values]
        wanted = [tuple(v.shape) for v in layer.weights]
        if shapes != wanted:
            if skip_mismatch:
                skipped.append(path)
                continue
            raise ModelLoadError(f"{info.path}: layer {path} has weights of shapes {shapes}, the model needs {wanted}")
        layer.set_weights(values)
    return skipped


def load_fizyr_model(path, backbone_name=None):
    """Load a fizyr 1.0 ``.h5`` model (training or inference) as this package's Keras 3 model.

    Args:
        path: the ``.h5`` file.
        backbone_name: the backbone (default: told by the layers; MobileNets are named
            ``mobilenet224_<alpha>``, the input size of their ImageNet weights being
            unrecorded: the networks are the same).

    Returns:
        ``RetinaNetModel`` with a detector spec: a training model (not compiled: a Keras 2
        optimiser state cannot be carried over), or an inference model with the file's
        anchors and filter settings, giving fizyr's detections.

    Raises:
        ModelLoadError: not a fizyr model, or a layer that cannot be placed.
    """
    info = FizyrFile(path)
    backbone = _checked_backbone(info, backbone_name, "backbone_name")
    spec, num_anchors = recipe_of(info, backbone)
    model = build_fizyr_architecture(spec, num_anchors)
    copy_weights(model, info)
    if info.training:
        return model
    from .retinanet import retinanet_bbox

    return retinanet_bbox(
        model=model, anchor_params=spec.anchor_params, pyramid_levels=list(spec.pyramid_levels),
        nms=spec.filter.nms, class_specific_filter=spec.filter.class_specific_filter,
        nms_threshold=spec.filter.nms_threshold, score_threshold=spec.filter.score_threshold,
        max_detections=spec.filter.max_detections, pre_nms_top_k=FIZYR_PRE_NMS_TOP_K,
    )  # fmt: skip


# fizyr filtered every candidate above the score threshold; this package keeps the best
# ``pre_nms_top_k`` (layers.filter_detections). With this many, fizyr's detections are
# kept for any image with fewer candidates, and the best ones for any image.
FIZYR_PRE_NMS_TOP_K = 4000


def fizyr_weights_model(path, num_classes, spec=None):
    """A training model of a fizyr file's architecture for ``num_classes``, with its weights (fine-tuning).

    Layers whose shapes differ (the classification output for other classes, the heads'
    outputs for another number of anchors) keep their fresh initialisation.

    Args:
        path: fizyr ``.h5`` file (training or inference model).
        num_classes: classes of the new model.
        spec: ``DetectorSpec`` of the run (anchors, classes, sizes) merged into the model's.

    Returns:
        (``RetinaNetModel``, list of the re-initialised layer paths).
    """
    info = FizyrFile(path)
    backbone = _checked_backbone(info, None if spec is None else spec.backbone, "--backbone")
    recipe, num_anchors = recipe_of(info, backbone)
    if spec is not None and spec.anchors is not None:
        num_anchors = spec.anchors.num_anchors()
    model = build_fizyr_architecture(recipe, num_anchors, num_classes)
    skipped = copy_weights(model, info, skip_mismatch=True)
    if spec is not None:
        model.spec = model.spec.merged(spec.replace(backbone=None, preprocess_mode=None))
    return model, skipped


def _architecture(name):
    """What decides a backbone's layers: the name, but for MobileNet v1 only its width (the
    number in mobilenet128_0.25 picks ImageNet weights)."""
    if name.startswith("mobilenet") and not name.startswith(("mobilenetv2", "mobilenetv3")):
        return "mobilenet_" + name.split("_")[-1]
    return name


def _checked_backbone(info, backbone_name, flag):
    """``backbone_name`` if it has the file's architecture (default: the detected one), else SpecConflictError."""
    detected = detect_backbone(info)
    if backbone_name is None:
        return detected
    if _architecture(backbone_name) != _architecture(detected):
        from ..errors import SpecConflictError

        raise SpecConflictError(f"{flag} {backbone_name} contradicts {info.path}: its layers are those of {detected}")
    return backbone_name
