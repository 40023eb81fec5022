"""RetinaNet heads and models: FPN, shared submodels, training and inference models.

Training model (``retinanet``): image (B, H, W, 3) -> backbone C3..C5 -> FPN P3..P7 ->
the same regression and classification submodels on every level, concatenated level by
level (P3 first) in the anchor order of ``utils.anchors.anchors_for_shape``:

- ``regression``: (B, N, 4) normalised corner offsets (see ``utils.anchors.bbox_transform``);
- ``classification``: (B, N, C) sigmoid scores.

Inference model (``retinanet_bbox``): the training model + Anchors -> RegressBoxes ->
ClipBoxes -> FilterDetections, outputs ``[boxes (B, D, 4), scores (B, D), labels (B, D)]``
padded with -1.
"""

import keras

from .. import constants, initializers, layers
from ..errors import SpecConflictError
from ..spec import AnchorSpec, DetectorSpec, FilterSpec, conflict_message
from ..utils.anchors import DEFAULT_PYRAMID_LEVELS, AnchorParameters, check_anchor_levels
from ..utils.model import fold_batch_normalization
from .retinanet_model import RetinaNetModel, model_spec

FEATURE_SIZE = 256  # channels of every pyramid level and of the submodels' hidden layers
SUBMODEL_DEPTH = 4  # 3x3 conv + ReLU layers before each submodel's output layer
PRIOR_PROBABILITY = 0.01
KERNEL_STDDEV = 0.01
SUPPORTED_PYRAMID_LEVELS = (2, 3, 4, 5, 6, 7)


def _head_conv(filters, name, **kwargs):
    return keras.layers.Conv2D(
        filters=filters,
        kernel_size=3,
        strides=1,
        padding="same",
        kernel_initializer=keras.initializers.RandomNormal(mean=0.0, stddev=KERNEL_STDDEV),
        name=name,
        **kwargs,
    )


def _check_head_norm(norm):
    norm = None if norm in (None, "none") else norm
    if norm is not None and norm not in constants.HEAD_NORMS:
        raise ValueError(f"head norm must be one of 'none', 'group', got {norm!r}")
    return norm


def group_norm_groups(channels, max_groups=32):
    """Groups of a GroupNormalization over ``channels``: the largest divisor of it up to ``max_groups``
    (32 for any multiple of 32; the heads' and ``--backbone-norm group``'s rule)."""
    return max(groups for groups in range(1, min(max_groups, channels) + 1) if channels % groups == 0)


def _head_hidden(outputs, filters, name, norm):
    """One hidden head layer: 3x3 conv + ReLU, or conv + GroupNorm + ReLU for ``norm='group'``."""
    if norm is None:
        return _head_conv(filters, name, activation="relu", bias_initializer="zeros")(outputs)
    outputs = _head_conv(filters, name, bias_initializer="zeros")(outputs)
    outputs = layers.GroupNormalization(groups=group_norm_groups(filters), epsilon=1e-5, name=f"{name}_gn")(outputs)
    return keras.layers.Activation("relu", name=f"{name}_relu")(outputs)


def default_classification_model(
    num_classes,
    num_anchors,
    pyramid_feature_size=FEATURE_SIZE,
    prior_probability=PRIOR_PROBABILITY,
    classification_feature_size=FEATURE_SIZE,
    name="classification_submodel",
    depth=SUBMODEL_DEPTH,
    norm=None,
):
    """Classification head shared by all levels: (B, H, W, F) -> (B, H * W * A, num_classes) sigmoid.

    ``depth`` 3x3 conv + ReLU layers of ``classification_feature_size`` channels (with
    ``norm='group'``, a GroupNorm before each ReLU, as detectron2 and torchvision v2 do),
    then the output conv, whose bias starts every score at ``prior_probability``.
    """
    norm = _check_head_norm(norm)
    inputs = keras.Input(shape=(None, None, pyramid_feature_size))
    outputs = inputs
    for i in range(depth):
        outputs = _head_hidden(outputs, classification_feature_size, f"pyramid_classification_{i}", norm)
    outputs = _head_conv(
        num_classes * num_anchors,
        "pyramid_classification",
        bias_initializer=initializers.PriorProbability(probability=prior_probability),
    )(outputs)
    outputs = keras.layers.Reshape((-1, num_classes), name="pyramid_classification_reshape")(outputs)
    # float32 output keeps the scores exact under a mixed-precision policy.
    outputs = keras.layers.Activation("sigmoid", dtype="float32", name="pyramid_classification_sigmoid")(outputs)
    return keras.Model(inputs=inputs, outputs=outputs, name=name)


def default_regression_model(
    num_values,
    num_anchors,
    pyramid_feature_size=FEATURE_SIZE,
    regression_feature_size=FEATURE_SIZE,
    name="regression_submodel",
    depth=SUBMODEL_DEPTH,
    norm=None,
):
    """Regression head shared by all levels: (B, H, W, F) -> (B, H * W * A, num_values).

    ``depth`` 3x3 conv + ReLU layers of ``regression_feature_size`` channels (GroupNorm
    before each ReLU with ``norm='group'``), then the output conv.
    """
    norm = _check_head_norm(norm)
    inputs = keras.Input(shape=(None, None, pyramid_feature_size))
    outputs = inputs
    for i in range(depth):
        outputs = _head_hidden(outputs, regression_feature_size, f"pyramid_regression_{i}", norm)
    outputs = _head_conv(num_anchors * num_values, "pyramid_regression", bias_initializer="zeros")(outputs)
    outputs = keras.layers.Reshape((-1, num_values), name="pyramid_regression_reshape")(outputs)
    outputs = keras.layers.Activation("linear", dtype="float32", name="pyramid_regression_float32")(outputs)
    return keras.Model(inputs=inputs, outputs=outputs, name=name)


def default_submodels(num_classes, num_anchors, feature_size=FEATURE_SIZE, depth=SUBMODEL_DEPTH, norm=None):
    """[('regression', model), ('classification', model)]: the default heads, in output order.

    Both take pyramid levels of ``feature_size`` channels and have ``depth`` hidden conv
    layers of ``feature_size`` channels, each followed by a GroupNorm when ``norm='group'``.
    """
    sizes = {"pyramid_feature_size": feature_size, "depth": depth, "norm": norm}
    return [
        ("regression", default_regression_model(4, num_anchors, regression_feature_size=feature_size, **sizes)),
        (
            "classification",
            default_classification_model(num_classes, num_anchors, classification_feature_size=feature_size, **sizes),
        ),
    ]


def _conv(filters, kernel_size, name, strides=1):
    return keras.layers.Conv2D(filters, kernel_size=kernel_size, strides=strides, padding="same", name=name)


def create_pyramid_features(backbone_layers, pyramid_levels, feature_size=FEATURE_SIZE, half_pixel_centers=True):
    """Feature pyramid (Lin et al. 2017) from the backbone's C2..C5.

    P5..P2: 1x1 lateral conv of C_l plus the nearest-upsampled level above, then a 3x3
    conv; P6: 3x3 stride-2 conv on C5; P7: ReLU then 3x3 stride-2 conv on P6.

    Args:
        backbone_layers: dict 'C2'..'C5' -> tensor (C2 only needed for level 2).
        pyramid_levels: sorted levels to return, a subset of 2..7.
        feature_size: channels of every level.
        half_pixel_centers: the upsampling's pixel mapping (``layers.UpsampleLike``; False
            for fizyr 1.0's models).

    Returns:
        list of (B, H_l, W_l, feature_size) tensors, one per level, named 'P<l>'.
    """
    levels = set(pyramid_levels)
    outputs = {}

    # Top-down path: P5 from C5, each lower level adds the upsampled level above.
    lowest = min([level for level in levels if level <= 5], default=5)
    merged = None
    for level in range(5, lowest - 1, -1):
        lateral = _conv(feature_size, 1, f"C{level}_reduced")(backbone_layers[f"C{level}"])
        if merged is not None:
            upsampled = layers.UpsampleLike(half_pixel_centers=half_pixel_centers, name=f"P{level + 1}_upsampled")(
                [merged, lateral]
            )
            lateral = keras.layers.Add(name=f"P{level}_merged")([upsampled, lateral])
        merged = lateral
        outputs[level] = _conv(feature_size, 3, f"P{level}")(merged)

    if levels & {6, 7}:
        outputs[6] = _conv(feature_size, 3, "P6", strides=2)(backbone_layers["C5"])
    if 7 in levels:
        relu = keras.layers.Activation("relu", name="C6_relu")(outputs[6])
        outputs[7] = _conv(feature_size, 3, "P7", strides=2)(relu)
    return [outputs[level] for level in sorted(levels)]


# fizyr's name for the default, kept for scripts that refer to it.
__create_pyramid_features = create_pyramid_features


def check_pyramid_levels(pyramid_levels):
    """Sorted list of levels (default 3..7); ValueError if empty or outside 2..7."""
    if pyramid_levels is None:
        return list(DEFAULT_PYRAMID_LEVELS)
    levels = sorted({int(level) for level in pyramid_levels})
    if not levels or any(level not in SUPPORTED_PYRAMID_LEVELS for level in levels):
        raise ValueError(
            f"pyramid levels {list(pyramid_levels)} are invalid: give one or more of {list(SUPPORTED_PYRAMID_LEVELS)}"
        )
    return levels


def _backbone_layer_dict(backbone_layers):
    """Accept fizyr's dict {'C3': t, ...} or a list [C3, C4, C5] / [C2, C3, C4, C5]."""
    if isinstance(backbone_layers, dict):
        return dict(backbone_layers)
    backbone_layers = list(backbone_layers)
    if len(backbone_layers) not in (3, 4):
        raise ValueError(
            f"backbone_layers: expected a dict 'C2'..'C5' or a list [C3, C4, C5] / [C2, C3, C4, C5], "
            f"got {len(backbone_layers)} tensors"
        )
    first = 6 - len(backbone_layers)
    return {f"C{first + i}": tensor for i, tensor in enumerate(backbone_layers)}


def _concatenate(tensors, name, dtype=None):
    if len(tensors) == 1:
        return keras.layers.Identity(name=name, dtype=dtype)(tensors[0])
    return keras.layers.Concatenate(axis=1, name=name, dtype=dtype)(tensors)


def retinanet(
    inputs,
    backbone_layers,
    num_classes,
    num_anchors=None,
    create_pyramid_features=create_pyramid_features,
    pyramid_levels=None,
    submodels=None,
    name="retinanet",
    feature_size=None,
    submodel_depth=SUBMODEL_DEPTH,
    spec=None,
    head_norm=None,
):
    """Training model: backbone features -> FPN -> shared submodels on every level.

    Args:
        inputs: the image input tensor, (B, H, W, 3).
        backbone_layers: dict 'C2'..'C5' -> feature tensor, or a list [C3, C4, C5].
        num_classes: number of object classes (no background class).
        num_anchors: anchors per location (default ``AnchorParameters.default.num_anchors()``).
        create_pyramid_features: f(backbone_layers, pyramid_levels) -> list of level tensors.
        pyramid_levels: levels to predict on (default 3..7).
        submodels: list of (output name, keras.Model) applied to every level
            (default ``default_submodels``).
        name: model name.
        feature_size: channels of the pyramid levels and of the default submodels' hidden
            layers (default 256, the paper's). Smaller is much faster: the heads take most
            of the compute.
        submodel_depth: hidden conv layers of each default submodel (default / None: 4).
        spec: ``DetectorSpec`` of what the caller knows (backbone, anchors, classes, ...);
            the model's own numbers (classes, levels, sizes of the default heads) are
            added to it.
        head_norm: normalisation in the default submodels' hidden layers: None / 'none'
            (the paper's) or 'group' (GroupNorm, 32 groups).

    Returns:
        ``RetinaNetModel`` with outputs ``regression`` (B, N, 4) and ``classification``
        (B, N, C) (or the given submodels' outputs, in their order) and ``.spec``.
    """
    if num_anchors is None:
        num_anchors = AnchorParameters.default.num_anchors()
    if feature_size is not None and feature_size < 1:
        raise ValueError(f"feature_size must be >= 1, got {feature_size}")
    if submodel_depth is None:
        submodel_depth = SUBMODEL_DEPTH
    if submodel_depth < 0:
        raise ValueError(f"submodel_depth must be >= 0, got {submodel_depth}")
    head_norm = _check_head_norm(head_norm)
    default_heads = submodels is None
    if submodels is None:
        head_size = FEATURE_SIZE if feature_size is None else feature_size
        submodels = default_submodels(num_classes, num_anchors, head_size, submodel_depth, head_norm)
    pyramid_levels = check_pyramid_levels(pyramid_levels)
    backbone_layers = _backbone_layer_dict(backbone_layers)
    needed = [f"C{level}" for level in range(min(min(pyramid_levels), 5), 6)]
    missing = [c for c in needed if c not in backbone_layers]
    if missing:
        raise ValueError(
            f"pyramid levels {pyramid_levels} need backbone layers {needed}; the backbone does not "
            f"provide {missing} (it gives {sorted(backbone_layers)})"
        )

    if feature_size is None:
        features = create_pyramid_features(backbone_layers, pyramid_levels)
    else:
        features = create_pyramid_features(backbone_layers, pyramid_levels, feature_size=feature_size)
    # float32 outputs: the losses and box decoding stay exact under a mixed-precision policy
    outputs = [
        _concatenate([submodel(f) for f in features], output_name, dtype="float32")
        for output_name, submodel in submodels
    ]
    if spec is not None:
        known = {"num_classes": num_classes, "pyramid_levels": tuple(pyramid_levels)}
        if default_heads:
            known.update(
                feature_size=FEATURE_SIZE if feature_size is None else feature_size,
                head_depth=submodel_depth,
                head_norm=head_norm or "none",
            )
        spec = spec.replace(**known)
        if spec.anchors is not None and spec.anchors.num_anchors() != num_anchors:
            raise ValueError(
                f"the anchors of the spec give {spec.anchors.num_anchors()} anchors per location, "
                f"num_anchors is {num_anchors}"
            )
    return RetinaNetModel(inputs=inputs, outputs=outputs, name=name, detector_spec=spec)


def _model_pyramid_levels(model):
    """Levels whose 'P<l>' layer exists in ``model`` (default 3..7 if none do)."""
    names = {layer.name for layer in model.layers}
    levels = [level for level in SUPPORTED_PYRAMID_LEVELS if f"P{level}" in names]
    return levels or list(DEFAULT_PYRAMID_LEVELS)


def architecture_spec(model):
    """What a RetinaNet's own layers tell of its recipe: classes count, pyramid levels, head sizes.

    For models without a detector spec (older snapshots); fields the layers do not show
    (custom submodels) stay None.

    Returns:
        ``DetectorSpec`` with num_classes, pyramid_levels, feature_size, head_depth, head_norm and
        backbone_norm.
    """
    names = {layer.name for layer in model.layers}
    levels = tuple(level for level in SUPPORTED_PYRAMID_LEVELS if f"P{level}" in names) or None
    num_classes = feature_size = head_depth = head_norm = None
    try:
        head = model.get_layer("regression_submodel")
    except ValueError:
        head = None
    if head is not None:
        hidden = sorted(
            (layer for layer in head.layers if layer.name.startswith("pyramid_regression_") and hasattr(layer, "filters")),
            key=lambda layer: layer.name,
        )
        head_depth = len(hidden)
        feature_size = int(head.inputs[0].shape[-1])
        head_norm = "group" if any(layer.name.endswith("_gn") for layer in head.layers) else "none"
    if "classification" in list(model.output_names):
        num_classes = int(model.outputs[list(model.output_names).index("classification")].shape[-1])
    # the backbone's layers sit in the model itself (the heads are nested submodels)
    kinds = tuple(type(layer) for layer in model.layers)
    backbone_norm = (
        "group" if any(issubclass(kind, keras.layers.GroupNormalization) for kind in kinds)
        else "batch" if any(issubclass(kind, keras.layers.BatchNormalization) for kind in kinds)
        else None
    )  # fmt: skip
    return DetectorSpec(
        num_classes=num_classes, pyramid_levels=levels, feature_size=feature_size, head_depth=head_depth,
        head_norm=head_norm, backbone_norm=backbone_norm,
    )  # fmt: skip


def _check_num_anchors(model, anchor_params):
    """ValueError if the default regression head predicts another number of anchors."""
    try:
        head = model.get_layer("regression_submodel").get_layer("pyramid_regression")
    except ValueError:
        return  # custom submodels: nothing to check against
    if head.filters != 4 * anchor_params.num_anchors():
        raise ValueError(
            f"the model predicts {head.filters // 4} anchors per location but the anchor parameters "
            f"give {anchor_params.num_anchors()} ({len(anchor_params.ratios)} ratios x "
            f"{len(anchor_params.scales)} scales); pass the anchor parameters used for training (the tools: --config)"
        )


def build_anchors(anchor_params, features):
    """Concatenated anchors of all levels: ``anchor_params`` entry i belongs to ``features[i]``.

    Returns:
        (B, N, 4) float32 tensor named 'anchors'.
    """
    if len(anchor_params.sizes) < len(features):
        raise ValueError(
            f"anchor parameters give {len(anchor_params.sizes)} sizes for {len(features)} pyramid levels"
        )
    anchors = [
        layers.Anchors(
            size=anchor_params.sizes[i],
            stride=anchor_params.strides[i],
            ratios=anchor_params.ratios,
            scales=anchor_params.scales,
            name=f"anchors_{i}",
        )(f)
        for i, f in enumerate(features)
    ]
    return _concatenate(anchors, "anchors")


def retinanet_bbox(
    model=None,
    nms=True,
    class_specific_filter=True,
    name="retinanet-bbox",
    anchor_params=None,
    pyramid_levels=None,
    nms_threshold=constants.DEFAULT_NMS_THRESHOLD,
    score_threshold=constants.DEFAULT_SCORE_THRESHOLD,
    max_detections=constants.DEFAULT_MAX_DETECTIONS,
    parallel_iterations=32,
    fold_batch_norm=False,
    clip_margin=None,
    **kwargs,
):
    """Inference model: training model + anchors, box decoding, clipping and filtering.

    Args:
        model: training model (built with ``retinanet(**kwargs)`` if None).
        nms, class_specific_filter, nms_threshold, score_threshold, max_detections,
        parallel_iterations: see ``layers.FilterDetections`` (``pre_nms_top_k`` may be given
            in kwargs too).
        name: model name.
        anchor_params: ``AnchorParameters`` of the model (default: those of its detector
            spec, else ``AnchorParameters.default``); others than the spec's are a
            ``SpecConflictError``.
        pyramid_levels: levels of the model (default: its spec's, else the 'P<l>' layers
            it has).
        fold_batch_norm: return an independent copy with the backbone's batch normalisation
            folded into its convolutions (``utils.model.fold_batch_normalization``): same
            detections, faster. Leave False for a model that shares weights with a training
            model still being trained (e.g. for evaluation callbacks).
        clip_margin: ``layers.ClipBoxes`` margin (default: the spec's, else 0; 1 reproduces
            fizyr 1.0's models).
        **kwargs: passed to ``retinanet`` when ``model`` is None.

    Returns:
        ``RetinaNetModel``: image (B, H, W, 3) -> [boxes (B, D, 4) float32, scores (B, D)
        float32, labels (B, D) int32, *other outputs of the training model (B, D, ...)],
        padded with -1; its spec is the training model's with the filter settings.
    """
    from . import assert_training_model

    filter_options = {"pre_nms_top_k": kwargs.pop("pre_nms_top_k")} if "pre_nms_top_k" in kwargs else {}
    if model is None:
        if anchor_params is None:
            anchor_params = AnchorParameters.default
        model = retinanet(num_anchors=anchor_params.num_anchors(), pyramid_levels=pyramid_levels, **kwargs)
    else:
        assert_training_model(model)
    spec = model_spec(model)
    anchor_params, pyramid_levels = _spec_anchor_settings(spec, anchor_params, pyramid_levels)
    _check_num_anchors(model, anchor_params)

    pyramid_levels = _model_pyramid_levels(model) if pyramid_levels is None else check_pyramid_levels(pyramid_levels)
    check_anchor_levels(anchor_params, pyramid_levels)
    try:
        features = [model.get_layer(f"P{level}").output for level in pyramid_levels]
    except ValueError as error:
        raise ValueError(f"pyramid levels {pyramid_levels} do not match the model: {error}") from None
    anchors = build_anchors(anchor_params, features)

    outputs = dict(zip(model.output_names, model.outputs))
    regression = outputs.pop("regression")
    classification = outputs.pop("classification")
    other = list(outputs.values())

    boxes = layers.RegressBoxes(name="boxes")([anchors, regression])
    if clip_margin is None:
        clip_margin = (spec.clip_margin if spec is not None else None) or 0.0
    boxes = layers.ClipBoxes(margin=clip_margin, name="clipped_boxes")([model.inputs[0], boxes])
    detections = layers.FilterDetections(
        nms=nms,
        class_specific_filter=class_specific_filter,
        nms_threshold=nms_threshold,
        score_threshold=score_threshold,
        max_detections=max_detections,
        parallel_iterations=parallel_iterations,
        name="filtered_detections",
        **filter_options,
    )([boxes, classification] + other)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    if spec is not None:
        spec = spec.replace(
            anchors=AnchorSpec.from_parameters(anchor_params),
            pyramid_levels=tuple(pyramid_levels),
            filter=FilterSpec(nms, class_specific_filter, nms_threshold, score_threshold, max_detections),
        )
    inference = RetinaNetModel(inputs=inputs, outputs=detections, name=name, detector_spec=spec)
    if not fold_batch_norm:
        return inference
    folded = fold_batch_normalization(inference)
    if isinstance(folded, RetinaNetModel):
        folded.spec = spec
    return folded


def _spec_anchor_settings(spec, anchor_params, pyramid_levels):
    """(anchor parameters, pyramid levels) for a model: the caller's, checked against its spec.

    Missing values come from the spec (anchors: else the package default; levels: None,
    the model's own 'P<l>' layers). Values that differ from the spec's are an error.
    """
    saved_anchors = None if spec is None else spec.anchors
    saved_levels = None if spec is None else spec.pyramid_levels
    if anchor_params is None:
        anchor_params = AnchorParameters.default if saved_anchors is None else saved_anchors.to_parameters()
    elif saved_anchors is not None and not saved_anchors.matches(AnchorSpec.from_parameters(anchor_params)):
        given = AnchorSpec.from_parameters(anchor_params)
        raise SpecConflictError(conflict_message("anchor_params", "anchors", given, saved_anchors, "the model"))
    if pyramid_levels is None:
        pyramid_levels = saved_levels
    elif saved_levels is not None and tuple(check_pyramid_levels(pyramid_levels)) != tuple(saved_levels):
        given = tuple(check_pyramid_levels(pyramid_levels))
        raise SpecConflictError(conflict_message("pyramid_levels", "pyramid_levels", given, saved_levels, "the model"))
    return anchor_params, pyramid_levels
