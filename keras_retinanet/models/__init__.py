"""Backbones and model builders: backbone(name), load_model, convert_model.

A backbone name (``resnet50``, ``mobilenet224_1.0``, ``EfficientNetB0``, ...) selects a
``Backbone``: it builds the training model (``.retinanet(num_classes, **kwargs)``), knows
how images are preprocessed for it (``.preprocess_image``) and where its ImageNet weights
live (``.download_imagenet()``). ``convert_model`` turns a training model into an
inference model that outputs filtered detections.
"""
import os

import keras

# Importing the model code registers every custom layer, loss and initializer with Keras, so
# keras.models.load_model opens this package's .keras files with no custom_objects.
from .. import initializers, layers, losses  # noqa: F401
from ..errors import SpecConflictError
from ..spec import DetectorSpec, conflict_message
from ..utils.image import preprocess_image as _preprocess_image
from .retinanet_model import RetinaNetModel, model_spec, with_spec  # noqa: F401

# Family modules, in the order their names are listed in error messages.
_FAMILY_MODULES = ("resnet", "mobilenet", "vgg", "densenet", "effnet", "senet")


class NotATrainingModelError(ValueError, AssertionError):
    """A model lacks the ``regression`` and ``classification`` outputs of a training model.

    Subclasses AssertionError as fizyr's assert-based check raised that.
    """


class Backbone:
    """What the tools need to know about one backbone.

    Subclasses set ``allowed_backbones`` (the names they serve) and ``preprocess_mode``
    (a mode of ``utils.image.preprocess_image``), and implement ``retinanet`` and
    ``download_imagenet``.

    Args:
        backbone: the backbone name, e.g. ``resnet50``; checked by ``validate``.
    """

    allowed_backbones = ()
    preprocess_mode = "caffe"
    # Its ops are too short to split between two cores at small image sizes (depthwise,
    # narrow convolutions): ``utils.threads.parallel_ops_threads`` runs them whole, two at once.
    light_ops = False

    def __init__(self, backbone):
        # Kept for scripts that pass them to keras.models.load_model; every object is
        # also registered, so plain keras.models.load_model needs none of them.
        self.custom_objects = {
            "UpsampleLike": layers.UpsampleLike,
            "PriorProbability": initializers.PriorProbability,
            "RegressBoxes": layers.RegressBoxes,
            "FilterDetections": layers.FilterDetections,
            "Anchors": layers.Anchors,
            "ClipBoxes": layers.ClipBoxes,
            "FocalLoss": losses.FocalLoss,
            "SmoothL1Loss": losses.SmoothL1Loss,
            "_smooth_l1": losses.smooth_l1(),
            "_focal": losses.focal(),
        }
        self.backbone = backbone
        self.validate()

    def retinanet(self, *args, **kwargs):
        """Training model on this backbone (see the family's ``*_retinanet`` builder)."""
        raise NotImplementedError("retinanet method not implemented.")

    def download_imagenet(self):
        """Download (or find in the Keras cache) the ImageNet weights; returns the file path."""
        raise NotImplementedError("download_imagenet method not implemented.")

    def validate(self):
        """Raise ValueError if ``self.backbone`` is not a name this class serves."""
        if self.backbone not in self.allowed_backbones:
            raise ValueError(
                f"Backbone ('{self.backbone}') not in allowed backbones ({list(self.allowed_backbones)})."
            )

    def preprocess_image(self, inputs):
        """Prepare a BGR image (or batch) for the network: float32, ``utils.image`` mode of this backbone."""
        return _preprocess_image(inputs, mode=self.preprocess_mode)

    def spec(self):
        """The part of a detector spec this backbone determines: its name and preprocessing."""
        return DetectorSpec(backbone=self.backbone, preprocess_mode=self.preprocess_mode)


def _backbone_classes():
    import importlib

    return [
        cls
        for module in _FAMILY_MODULES
        for cls in importlib.import_module(f"{__name__}.{module}").BACKBONE_CLASSES
    ]


def available_backbones():
    """Every backbone name ``backbone()`` accepts, family by family."""
    return [name for cls in _backbone_classes() for name in cls.allowed_backbones]


def backbone(backbone_name):
    """The ``Backbone`` for a name such as ``resnet50``; ValueError listing the names if unknown."""
    for cls in _backbone_classes():
        if backbone_name in cls.allowed_backbones:
            return cls(backbone_name)
    raise ValueError(
        f"unknown backbone {backbone_name!r}; expected one of: {', '.join(available_backbones())}"
    )


def load_model(filepath, backbone_name=None, compile=True):
    """Load a ``.keras`` model saved by this package, or a fizyr 1.0 ``.h5`` model.

    fizyr's ``.h5`` files (Keras 2) are rebuilt in Keras 3 with their weights
    (``models.fizyr.load_fizyr_model``): they give fizyr's detections.

    Args:
        filepath: path of the saved model.
        backbone_name: backbone the caller expects (optional). The model's detector spec
            records its backbone; a different name is a ``SpecConflictError``. Every custom
            object is registered, so it is not needed to load the file.
        compile: compile the model as it was saved (its optimizer, losses); False for
            inference, which needs neither and loads faster (the optimizer's variables are
            not built).

    Returns:
        The keras.Model (compiled if it was saved compiled and ``compile``); a ``RetinaNetModel`` with
        ``.spec`` for files written by this package since the detector spec exists.
    """
    if backbone_name is not None:
        backbone(backbone_name)
    from .fizyr import is_fizyr_file, load_fizyr_model

    if os.path.isfile(filepath) and is_fizyr_file(filepath):  # fizyr 1.0's Keras 2 .h5 models
        return load_fizyr_model(filepath, backbone_name=backbone_name)
    check_keras_file(filepath)
    model = keras.models.load_model(filepath, compile=compile)
    spec = model_spec(model)
    if backbone_name is not None and spec is not None and spec.backbone not in (None, backbone_name):
        raise SpecConflictError(conflict_message("backbone_name", "backbone", backbone_name, spec.backbone, filepath))
    return model


def check_keras_file(filepath):
    """Raise ``ModelLoadError`` naming what is wrong if ``filepath`` is not a readable ``.keras`` file.

    Keras itself reports a folder, a truncated file or another format as "File not found".
    """
    import zipfile

    from ..errors import ModelLoadError

    filepath = os.fspath(filepath)
    if os.path.isdir(filepath):
        raise ModelLoadError(f"{filepath} is a folder, not a .keras model file (a SavedModel folder has no suffix)")
    if not os.path.exists(filepath):
        raise ModelLoadError(f"model file not found: {filepath}")
    if os.path.splitext(filepath)[1].lower() == ".h5":
        import h5py

        if not h5py.is_hdf5(filepath):
            raise ModelLoadError(f"{filepath} is not an HDF5 file (an .h5 model is fizyr's or Keras 2's): truncated?")
        return  # fizyr's and Keras' legacy format: read by models.fizyr or keras.models.load_model
    try:
        with zipfile.ZipFile(filepath) as archive:
            names = set(archive.namelist())
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError) as error:
        raise ModelLoadError(
            f"{filepath} is not a .keras model file: not a zip archive ({error}); truncated, or another format?"
        ) from None
    if broken is not None:
        raise ModelLoadError(f"{filepath} is a damaged .keras file: {broken} does not match its checksum")
    if "config.json" not in names:
        raise ModelLoadError(f"{filepath} is a zip archive but not a Keras model (no config.json)")


def is_training_model(model):
    """Whether ``model`` has the ``regression`` and ``classification`` outputs of a training model."""
    names = list(getattr(model, "output_names", None) or [])
    return "regression" in names and "classification" in names


def assert_training_model(model):
    """Raise NotATrainingModelError unless ``model`` has ``regression`` and ``classification`` outputs."""
    names = list(model.output_names)
    if not is_training_model(model):
        raise NotATrainingModelError(
            "Input is not a training model (no 'regression' and 'classification' outputs were "
            f"found, outputs are: {names})."
        )


def check_training_model(model):
    """fizyr's name for ``assert_training_model``: raises ``NotATrainingModelError`` (fizyr's printed and exited;
    the library leaves messages and exit codes to the tools)."""
    assert_training_model(model)


def convert_model(model, nms=True, class_specific_filter=True, anchor_params=None, **kwargs):
    """Inference model from a training model: decoded, clipped and filtered detections.

    Args:
        model: training model (outputs ``regression`` and ``classification``).
        nms: apply non-maximum suppression.
        class_specific_filter: per-class filtering and NMS (else best class per anchor).
        anchor_params: ``utils.anchors.AnchorParameters`` the model was trained with
            (default: those of the model's detector spec, else the package default).
        **kwargs: passed to ``retinanet.retinanet_bbox`` (pyramid_levels, nms_threshold,
            score_threshold, max_detections, pre_nms_top_k, fold_batch_norm, ...).
            ``fold_batch_norm=True`` gives the fastest model for prediction and export (an
            independent copy; do not use it for a model that is still training).

    Returns:
        keras.Model: image (B, H, W, 3) -> [boxes (B, D, 4), scores (B, D), labels (B, D)],
        with the training model's detector spec plus its filter settings.
    """
    from .retinanet import retinanet_bbox

    return retinanet_bbox(
        model=model,
        nms=nms,
        class_specific_filter=class_specific_filter,
        anchor_params=anchor_params,
        **kwargs,
    )
