"""Shared builder: a RetinaNet on a ``keras.applications`` backbone.

The application is built on the model's input tensor, so its layers sit directly in the
RetinaNet graph (not as a nested model) under their usual names ('conv1_conv', ...);
ImageNet weight files of keras.applications therefore load by name into the full model.
"""
import os

import keras

from ..constants import BACKBONE_NORMS
from ..layers.group_norm import BackboneGroupNormalization
from ..utils.model import freeze
from . import retinanet as retinanet_module
from .retinanet import group_norm_groups


def default_inputs(inputs=None):
    """The image input: (B, H, W, 3) of any size unless ``inputs`` is given."""
    if inputs is None:
        return keras.Input(shape=(None, None, 3), name="image")
    return inputs


def download_weights(file_name, origin, file_hash=None):
    """Fetch a weights file into the Keras cache (``~/.keras/models``) and return its path."""
    return keras.utils.get_file(file_name, origin, cache_subdir="models", file_hash=file_hash)


def resolve_weights(weights, backbone):
    """Weights argument for a keras.applications constructor.

    Args:
        weights: None (random), 'imagenet' (downloaded via ``backbone.download_imagenet()``)
            or the path of a weights file for the bare application (include_top=False).
        backbone: the ``Backbone`` object of the name being built.
    """
    if weights is None:
        return None
    if weights == "imagenet":
        return backbone.download_imagenet()
    if not os.path.exists(weights):
        raise ValueError(f"backbone weights file not found: {weights}")
    return weights


def with_group_norm(model, inputs):
    """``model`` rebuilt on ``inputs`` with every BatchNormalization replaced by a GroupNormalization.

    BatchNormalization normalises by the statistics of the training batch, and at inference
    by running averages of them. With the batches of one or two images that detection
    trains with on a CPU, the two differ image by image, and a backbone trained from
    scratch that way detects far worse at inference than in training (shapes scenes, 10
    minutes at batch 1: AP50 0.32 with the running averages; the same weights run with
    each image's own statistics 0.84). GroupNormalization normalises each image by its own
    statistics, in training and at inference alike (Wu and He, 2018; the same 10 minutes
    trained with it: AP50 0.95). Each replacement is named ``<name>_gn`` after the
    BatchNormalization it replaces, with the groups of ``group_norm_groups`` (and a fresh
    scale and offset); every other layer keeps its weights.
    """

    def clone(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = int(layer.input.shape[-1])
            return BackboneGroupNormalization(
                groups=group_norm_groups(channels), epsilon=layer.epsilon, name=f"{layer.name}_gn"
            )
        return layer.__class__.from_config(layer.get_config())

    structure = [inputs] if isinstance(model.input, list) else inputs
    rebuilt = keras.models.clone_model(model, input_tensors=structure, clone_function=clone)
    for layer in model.layers:
        if layer.weights and not isinstance(layer, keras.layers.BatchNormalization):
            rebuilt.get_layer(layer.name).set_weights(layer.get_weights())
    return rebuilt


def application_retinanet(
    num_classes,
    application,
    layer_names,
    inputs=None,
    modifier=None,
    freeze_bn=True,
    freeze_backbone=False,
    backbone=None,
    anchor_params=None,
    spec=None,
    backbone_norm=None,
    **kwargs,
):
    """RetinaNet on a keras.applications model.

    Args:
        num_classes: number of object classes.
        application: f(input_tensor) -> keras.applications model (include_top=False).
        layer_names: dict 'C2'..'C5' -> layer name in the application (None: its output).
        inputs: image input tensor (default ``default_inputs()``).
        modifier: f(backbone_model) -> backbone_model, applied before the heads are added
            (e.g. ``utils.model.freeze``).
        freeze_bn: run the backbone's BatchNormalization layers in inference mode with
            frozen statistics (RetinaNet trains with small batches).
        freeze_backbone: make every backbone layer non-trainable.
        backbone_norm: None / 'batch' (the application's BatchNormalization) or 'group'
            (``with_group_norm``: pretrained convolutions are kept, the normalisation
            starts afresh, so it is meant for training from scratch).
        backbone: the ``Backbone`` being built (its name and preprocessing go into the spec).
        anchor_params: ``AnchorParameters`` the model will be trained with: sets
            num_anchors and goes into the spec (default: only num_anchors, if given, is known).
        spec: ``DetectorSpec`` with more of the recipe (classes, image sizes, ...).
        **kwargs: passed to ``retinanet.retinanet`` (num_anchors, pyramid_levels, submodels, name,
            feature_size, submodel_depth).

    Returns:
        The training model (a ``RetinaNetModel`` with ``.spec``).
    """
    from ..spec import AnchorSpec, DetectorSpec

    model_spec = DetectorSpec() if backbone is None else backbone.spec()
    if spec is not None:
        model_spec = model_spec.merged(spec)
    if anchor_params is not None:
        anchors = AnchorSpec.from_parameters(anchor_params)
        if kwargs.get("num_anchors") not in (None, anchors.num_anchors()):
            raise ValueError(
                f"num_anchors ({kwargs['num_anchors']}) does not match the anchor parameters "
                f"({anchors.num_anchors()} anchors per location)"
            )
        kwargs["num_anchors"] = anchors.num_anchors()
        model_spec = model_spec.replace(anchors=anchors)
    inputs = default_inputs(inputs)
    levels = retinanet_module.check_pyramid_levels(kwargs.get("pyramid_levels"))
    wanted = [c for c in ("C2", "C3", "C4", "C5") if c != "C2" or 2 in levels]

    if backbone_norm not in (None,) + BACKBONE_NORMS:
        raise ValueError(f"unknown backbone_norm {backbone_norm!r}; expected one of {BACKBONE_NORMS}")
    model = application(inputs)
    if backbone_norm == "group":
        model = with_group_norm(model, inputs)
    model_spec = model_spec.replace(backbone_norm=backbone_norm or "batch")
    outputs = [model.output if layer_names[c] is None else model.get_layer(layer_names[c]).output for c in wanted]
    backbone_model = keras.Model(inputs=inputs, outputs=outputs, name=model.name)
    if freeze_bn:
        for layer in backbone_model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    if freeze_backbone:
        backbone_model = freeze(backbone_model)
    if modifier is not None:
        backbone_model = modifier(backbone_model)

    backbone_layers = dict(zip(wanted, backbone_model.outputs))
    return retinanet_module.retinanet(
        inputs=inputs, num_classes=num_classes, backbone_layers=backbone_layers, spec=model_spec, **kwargs
    )
