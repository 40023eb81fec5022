"""The detector spec: how a model was made, saved inside the model.

A RetinaNet's weights only work with the recipe they were trained with: the backbone's
image preprocessing, the anchors, the pyramid levels, the class names by label, the image
sizes. ``DetectorSpec`` records that recipe. ``retinanet-train`` writes it into every
snapshot, ``models.convert_model`` adds the filter settings of the inference model, and
the exporters carry it into every format, so every tool and ``inference.load_detector``
read it instead of asking for it again:

- ``.keras`` files (training and inference models): in the model's Keras config
  (``models.RetinaNetModel``), under ``detector_spec``;
- SavedModel directories: ``assets.extra/detector_spec.json``;
- TFLite files: the flatbuffer's metadata entry ``keras_retinanet.detector_spec``;
- ONNX files: the ``metadata_props`` entry ``keras_retinanet.detector_spec``.

Every field may be unknown (None): a model built in Python without a recipe, or an older
snapshot, has no spec at all. ``resolve_recipe`` combines a spec with what a caller gives
(flags): what cannot change after training must agree with the spec, what may change at
inference (image sizes) follows the caller with a note, what nobody knows takes the
package default with a note.

Pure Python: reading the spec of a ``.keras`` file needs neither TensorFlow nor Keras.
"""
import dataclasses
import json
import math
import os
import zipfile

from . import constants
from .errors import SpecConflictError, SpecError

SPEC_FORMAT = "keras_retinanet.detector_spec"
SPEC_VERSION = 1
QUANTIZE_MODES = (None, "int8", "fp16")  # ExportSpec.quantize
CONFIG_KEY = "detector_spec"  # key in a RetinaNetModel's Keras config
METADATA_KEY = SPEC_FORMAT  # TFLite metadata name / ONNX metadata_props key
SAVED_MODEL_SPEC_PATH = os.path.join("assets.extra", "detector_spec.json")

# Package defaults of the recipe (what a model without a spec is assumed to use).
DEFAULT_BACKBONE = "resnet50"

# What cannot change once a model is trained, and what may change at inference.
FIXED_FIELDS = ("backbone", "anchors", "pyramid_levels", "class_names")
RESIZE_FIELDS = ("image_min_side", "image_max_side", "no_resize")
_FLOAT_TOLERANCE = 1e-6


def _tuple(values, kind, field):
    try:
        result = tuple(kind(value) for value in values)
    except (TypeError, ValueError):
        raise SpecError(f"detector spec field {field!r}: expected a list of {kind.__name__}, got {values!r}") from None
    if not result:
        raise SpecError(f"detector spec field {field!r}: empty list")
    return result


@dataclasses.dataclass(frozen=True)
class AnchorSpec:
    """Anchor parameters as plain tuples (see ``utils.anchors.AnchorParameters``).

    sizes, strides: one per pyramid level (pixels); ratios, scales: shared by every level.
    """

    sizes: tuple
    strides: tuple
    ratios: tuple
    scales: tuple

    def __post_init__(self):
        for field, kind in (("sizes", float), ("strides", int), ("ratios", float), ("scales", float)):
            object.__setattr__(self, field, _tuple(getattr(self, field), kind, f"anchors.{field}"))
        if len(self.sizes) != len(self.strides):
            raise SpecError(f"detector spec anchors: {len(self.sizes)} sizes but {len(self.strides)} strides")

    @classmethod
    def from_parameters(cls, anchor_params):
        """From an ``AnchorParameters`` (or anything with sizes, strides, ratios, scales)."""
        return cls(
            tuple(float(v) for v in anchor_params.sizes),
            tuple(int(v) for v in anchor_params.strides),
            tuple(float(v) for v in anchor_params.ratios),
            tuple(float(v) for v in anchor_params.scales),
        )

    def to_parameters(self):
        """``utils.anchors.AnchorParameters`` with these values."""
        from .utils.anchors import AnchorParameters

        return AnchorParameters(self.sizes, self.strides, self.ratios, self.scales)

    def num_anchors(self):
        return len(self.ratios) * len(self.scales)

    def matches(self, other):
        """Same values (floats compared with a relative tolerance)."""
        return all(
            len(a) == len(b) and all(math.isclose(x, y, rel_tol=_FLOAT_TOLERANCE) for x, y in zip(a, b))
            for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))
        )

    def describe(self):
        def numbers(values):
            return " ".join(f"{v:g}" for v in values)

        return (
            f"sizes {numbers(self.sizes)}, strides {numbers(self.strides)}, "
            f"ratios {numbers(self.ratios)}, scales {numbers(self.scales)}"
        )


def default_anchors():
    """The package's default anchors as an ``AnchorSpec``."""
    from .utils.anchors import AnchorParameters

    return AnchorSpec.from_parameters(AnchorParameters.default)


@dataclasses.dataclass(frozen=True)
class FilterSpec:
    """Filter settings of an inference model (``layers.FilterDetections``)."""

    nms: bool = True
    class_specific_filter: bool = True
    nms_threshold: float = constants.DEFAULT_NMS_THRESHOLD
    score_threshold: float = constants.DEFAULT_SCORE_THRESHOLD
    max_detections: int = constants.DEFAULT_MAX_DETECTIONS

    def __post_init__(self):
        object.__setattr__(self, "nms", bool(self.nms))
        object.__setattr__(self, "class_specific_filter", bool(self.class_specific_filter))
        object.__setattr__(self, "nms_threshold", float(self.nms_threshold))
        object.__setattr__(self, "score_threshold", float(self.score_threshold))
        object.__setattr__(self, "max_detections", int(self.max_detections))


@dataclasses.dataclass(frozen=True)
class ExportSpec:
    """The input of an exported end-to-end graph (see ``keras_retinanet.export``).

    format: 'saved_model', 'tflite' or 'onnx'; input_dtype: 'uint8', 'float32' or None
    (a SavedModel has both); channel_order: 'bgr' or 'rgb'; input_size: (H, W) of a TFLite
    model, None for any size; quantize: None (float32), 'int8' (post-training static
    quantisation) or 'fp16' (float16 weights, TFLite); calibration_images: how many images
    calibrated an int8 graph.
    """

    format: str
    channel_order: str = "bgr"
    input_dtype: str = None
    input_size: tuple = None
    quantize: str = None
    calibration_images: int = None

    def __post_init__(self):
        if self.quantize not in QUANTIZE_MODES:
            raise SpecError(f"detector spec field 'export.quantize': expected one of {QUANTIZE_MODES}, got {self.quantize!r}")
        if self.input_size is not None:
            object.__setattr__(self, "input_size", _tuple(self.input_size, int, "export.input_size"))


@dataclasses.dataclass(frozen=True)
class DetectorSpec:
    """How a RetinaNet was made; every field None when unknown.

    Fields:
        backbone: backbone name (``models.backbone``), e.g. 'resnet50'.
        preprocess_mode: its image preprocessing ('caffe', 'tf', 'torch', 'none'; ``utils.image``).
        num_classes: classes the heads predict.
        class_names: name of each label 0 .. num_classes - 1 (None for a label no class uses).
        anchors: ``AnchorSpec``.
        pyramid_levels: levels the heads run on, e.g. (3, 4, 5, 6, 7).
        image_min_side, image_max_side, no_resize: how images are resized for the model.
        feature_size, head_depth: FPN / head channels and hidden head convolutions.
        head_norm: normalisation of the hidden head layers, 'none' or 'group'.
        backbone_norm: normalisation in the backbone, 'batch' (BatchNormalization) or
            'group' (GroupNormalization, ``models._applications.with_group_norm``).
        clip_margin: boxes are clipped to [0, side - clip_margin] (1: models made by
            fizyr 1.0, which clip to the last pixel's index; None: 0).
        epoch: the epochs a training snapshot has completed (``--snapshot`` resumes after it).
        filter: ``FilterSpec`` of an inference model (None for a training model).
        export: ``ExportSpec`` of an exported graph (None for a Keras model).
    """

    backbone: str = None
    preprocess_mode: str = None
    num_classes: int = None
    class_names: tuple = None
    anchors: AnchorSpec = None
    pyramid_levels: tuple = None
    image_min_side: int = None
    image_max_side: int = None
    no_resize: bool = None
    feature_size: int = None
    head_depth: int = None
    head_norm: str = None
    backbone_norm: str = None
    clip_margin: float = None
    epoch: int = None
    filter: FilterSpec = None
    export: ExportSpec = None

    def __post_init__(self):
        for field in ("num_classes", "image_min_side", "image_max_side", "feature_size", "head_depth", "epoch"):
            value = getattr(self, field)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
                    raise SpecError(f"detector spec field {field!r}: expected an integer, got {value!r}")
                object.__setattr__(self, field, int(value))
        if self.class_names is not None:
            names = tuple(None if name is None else str(name) for name in self.class_names)
            object.__setattr__(self, "class_names", names)
            if self.num_classes is None:
                object.__setattr__(self, "num_classes", len(names))
            elif len(names) != self.num_classes:
                raise SpecError(f"detector spec: {len(names)} class names for {self.num_classes} classes")
        if self.pyramid_levels is not None:
            object.__setattr__(self, "pyramid_levels", _tuple(self.pyramid_levels, int, "pyramid_levels"))
        if self.no_resize is not None:
            object.__setattr__(self, "no_resize", bool(self.no_resize))
        for field, kind in (("anchors", AnchorSpec), ("filter", FilterSpec), ("export", ExportSpec)):
            value = getattr(self, field)
            if isinstance(value, dict):
                try:
                    object.__setattr__(self, field, kind(**value))
                except TypeError as error:
                    raise SpecError(f"detector spec field {field!r}: {error}") from None

    # -- (de)serialisation ----------------------------------------------------------------

    def to_dict(self):
        """JSON-serialisable dict, with the format name, version and the package version."""
        from . import __version__

        data = {"format": SPEC_FORMAT, "version": SPEC_VERSION, "written_by": f"keras-retinanet {__version__}"}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if dataclasses.is_dataclass(value):
                value = {key: list(v) if isinstance(v, tuple) else v for key, v in dataclasses.asdict(value).items()}
            elif isinstance(value, tuple):
                value = list(value)
            data[field.name] = value
        return data

    def to_json(self):
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data):
        """Read a dict written by ``to_dict`` (unknown fields are ignored).

        Raises:
            SpecError: not a detector spec, a newer spec version, or malformed fields.
        """
        if not isinstance(data, dict) or data.get("format") != SPEC_FORMAT:
            raise SpecError("not a keras-retinanet detector spec")
        version = data.get("version")
        if not isinstance(version, int) or version < 1:
            raise SpecError(f"detector spec: invalid version {version!r}")
        if version > SPEC_VERSION:
            raise SpecError(
                f"the detector spec has version {version} ({data.get('written_by', 'a newer keras-retinanet')}); "
                f"this keras-retinanet reads version {SPEC_VERSION}: upgrade keras-retinanet"
            )
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})

    @classmethod
    def from_json(cls, text):
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as error:
            raise SpecError(f"detector spec is not valid JSON: {error}") from None
        return cls.from_dict(data)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    # -- convenience ----------------------------------------------------------------------

    @property
    def anchor_params(self):
        """``utils.anchors.AnchorParameters`` of the spec's anchors, or None if unknown."""
        return None if self.anchors is None else self.anchors.to_parameters()

    def label_to_name(self, label):
        """The class name of ``label`` (the label as a string if unknown)."""
        label = int(label)
        if self.class_names is not None and 0 <= label < len(self.class_names):
            name = self.class_names[label]
            if name is not None:
                return name
        return str(label)

    def merged(self, other):
        """This spec with the fields ``other`` knows (not None) taken from ``other``."""
        changes = {f.name: getattr(other, f.name) for f in dataclasses.fields(other) if getattr(other, f.name) is not None}
        return self.replace(**changes)


def class_names_from_mapping(labels):
    """Class names by label from {label: name} (gaps as None)."""
    if not labels:
        return ()
    names = [None] * (max(int(label) for label in labels) + 1)
    for label, name in labels.items():
        names[int(label)] = str(name)
    return tuple(names)


# ----------------------------------------------------------------------------------- files


def read_keras_spec(path):
    """The spec in a ``.keras`` file's config, without loading the model (None if it has none).

    Raises:
        SpecError: the spec is present but malformed or too new.
        ModelLoadError: the file is not a Keras zip archive.
    """
    from .errors import ModelLoadError

    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, zipfile.BadZipFile, KeyError, ValueError) as error:
        raise ModelLoadError(f"cannot read {path}: not a .keras model file ({error})") from None
    data = (config.get("config") or {}).get(CONFIG_KEY) if isinstance(config, dict) else None
    return None if data is None else DetectorSpec.from_dict(data)


def read_spec(path):
    """The detector spec of a model file of any format (None if it carries none).

    ``.keras`` from its config; SavedModel, ``.tflite`` and ``.onnx`` from the metadata
    written by ``keras_retinanet.export`` (see the module docstring).

    Raises:
        ModelLoadError: missing or unreadable file.
        SpecError: malformed spec.
    """
    from .export import model_file_format, read_export_spec

    format = model_file_format(path)
    if format == "keras" and os.path.splitext(path)[1].lower() == ".h5":
        from .models.fizyr import read_fizyr_spec

        return read_fizyr_spec(path)
    if format == "keras":
        return read_keras_spec(path)
    return read_export_spec(path, format)


# ----------------------------------------------------------------------------------- resolution


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A spec with every field the caller needs filled, and what to tell the user about it.

    spec: the resolved ``DetectorSpec``; notes: lines for the user (values overridden by
    the caller, defaults assumed for what the model does not record).
    """

    spec: DetectorSpec
    notes: tuple = ()


def _describe(field, value):
    if value is None:
        return "unknown"
    if field == "anchors":
        return value.describe()
    if field == "pyramid_levels":
        return " ".join(str(v) for v in value)
    if field == "class_names":
        return "[" + ", ".join("-" if name is None else name for name in value) + "]"
    if field == "no_resize":
        return "on" if value else "off"
    return str(value)


def conflict_message(name, field, given, saved, source):
    """'<name> <given> contradicts <source>: it was made with <field> <saved> (saved in its detector spec)'.

    The one wording of a contradiction, for every caller (``resolve_recipe``,
    ``check_class_names``, ``models.load_model``, ``models.convert_model``).
    """
    label = FIELD_LABELS[field]
    what = f"{name} ({label} {_describe(field, given)})" if field in ("anchors", "pyramid_levels") else (
        f"{name} {_describe(field, given)}"
    )
    return (
        f"{what} contradicts {source}: it was made with {label} {_describe(field, saved)} (saved in its detector spec)"
    )


def _agrees(field, saved, given):
    if field == "anchors":
        return saved.matches(given)
    if field == "class_names":
        return _class_names_agree(saved, given)
    return saved == given


def _class_names_agree(saved, given):
    """Every label named by both has the same name, and ``given`` has no label the model lacks."""
    if any(name is not None for name in given[len(saved):]):
        return False
    return all(a == b for a, b in zip(saved, given) if a is not None and b is not None)


def check_class_names(spec, class_names, source="the model", what="the dataset's class list"):
    """Raise ``SpecConflictError`` if ``class_names`` (by label) disagree with the spec's.

    Labels named by both must have the same name, and ``class_names`` may not use a label
    the model does not predict; labels named by only one side are fine (a dataset may use
    some of the classes). Nothing to check without a spec or class names.
    """
    if spec is None or spec.class_names is None or class_names is None:
        return
    given = tuple(None if name is None else str(name) for name in class_names)
    if not _class_names_agree(spec.class_names, given):
        raise SpecConflictError(conflict_message(what, "class_names", given, spec.class_names, source))


def class_names_of(generator):
    """Class names by label of a Generator-like object (``num_classes``, ``has_label``, ``label_to_name``)."""
    names = []
    for label in range(generator.num_classes()):
        has = getattr(generator, "has_label", None)
        names.append(str(generator.label_to_name(label)) if has is None or has(label) else None)
    return tuple(names)


# How messages name each recipe field (the caller's values default to these names too).
FIELD_LABELS = {
    "backbone": "backbone",
    "anchors": "anchor parameters",
    "pyramid_levels": "pyramid levels",
    "class_names": "classes",
    "image_min_side": "image min side",
    "image_max_side": "image max side",
    "no_resize": "no resize",
}
DEFAULT_FLAG_NAMES = FIELD_LABELS


def _defaults():
    from .utils.anchors import DEFAULT_PYRAMID_LEVELS

    return {
        "backbone": DEFAULT_BACKBONE,
        "anchors": default_anchors(),
        "pyramid_levels": tuple(DEFAULT_PYRAMID_LEVELS),
        "class_names": None,
        "image_min_side": constants.DEFAULT_IMAGE_MIN_SIDE,
        "image_max_side": constants.DEFAULT_IMAGE_MAX_SIDE,
        "no_resize": False,
    }


def resolve_recipe(spec, given=None, needed=FIXED_FIELDS + RESIZE_FIELDS, fixed=FIXED_FIELDS, source="the model", flag_names=None):
    """Combine a model's spec with the values a caller gives.

    For each field in ``needed``:

    - the caller gives nothing: the spec's value, else the package default (noted as assumed);
    - the caller gives a value the spec does not record: the caller's;
    - both know it and agree: that value;
    - they differ: for a field in ``fixed`` a ``SpecConflictError`` naming both values;
      otherwise the caller's value, with a note naming the saved and the used one.

    The backbone's preprocessing mode follows the backbone (the spec's when it records one).

    Args:
        spec: ``DetectorSpec`` or None (a model without a spec).
        given: {field: value} the caller gives (None values count as not given);
            anchors as ``AnchorSpec`` or ``AnchorParameters``; class_names as a sequence.
        needed: fields to fill.
        fixed: fields that must agree with the spec.
        source: how notes and errors name the model (e.g. its path).
        flag_names: {field: how to name the caller's value}, e.g. {'backbone': '--backbone'}.

    Returns:
        ``Recipe``.

    Raises:
        SpecConflictError: a fixed field given that contradicts the spec.
    """
    spec = spec or DetectorSpec()
    given = {key: value for key, value in (given or {}).items() if value is not None}
    if "anchors" in given and not isinstance(given["anchors"], AnchorSpec):
        given["anchors"] = AnchorSpec.from_parameters(given["anchors"])
    if "class_names" in given:
        given["class_names"] = tuple(None if n is None else str(n) for n in given["class_names"])
    if "pyramid_levels" in given:
        given["pyramid_levels"] = tuple(int(v) for v in given["pyramid_levels"])
    names = dict(DEFAULT_FLAG_NAMES, **(flag_names or {}))
    defaults = _defaults()

    changes, notes, assumed, overridden = {}, [], [], []
    for field in needed:
        saved = getattr(spec, field)
        value = given.get(field)
        if value is None:
            if saved is None and defaults.get(field) is not None:
                changes[field] = defaults[field]
                assumed.append(field)
            continue
        if saved is None or _agrees(field, saved, value):
            if field == "class_names" and saved is not None:  # the model's names, gaps filled by the caller's
                value = tuple(a if a is not None else b for a, b in zip(saved, value + (None,) * len(saved)))
            changes[field] = value
            continue
        if field in fixed:
            raise SpecConflictError(conflict_message(names[field], field, value, saved, source))
        changes[field] = value
        overridden.append((field, saved, value))
    resolved = spec.replace(**changes)
    if "backbone" in changes and (spec.preprocess_mode is None or changes["backbone"] != spec.backbone):
        resolved = resolved.replace(preprocess_mode=None)
    if overridden:  # one line for every value the caller changed
        saved_text = ", ".join(f"{FIELD_LABELS[f]} {_describe(f, old)}" for f, old, _ in overridden)
        used_text = ", ".join(f"{FIELD_LABELS[f]} {_describe(f, new)}" for f, _, new in overridden)
        flags = ", ".join(dict.fromkeys(names[f] for f, _, _ in overridden))
        notes.append(f"{saved_text} saved in {source}; {used_text} used ({flags})")
    if resolved.no_resize:  # the sides are not used: nothing about them was assumed
        assumed = [field for field in assumed if field not in RESIZE_FIELDS]
    assumed = [field for field in assumed if field != "no_resize"]  # resizing is what the sides say
    if assumed:
        notes.append(_assumed_note(spec, assumed, resolved, source, names))
    if not resolved.no_resize and None not in (resolved.image_min_side, resolved.image_max_side):
        if resolved.image_min_side > resolved.image_max_side:
            origin = {f: ("saved" if f not in given else names[f]) for f in ("image_min_side", "image_max_side")}
            raise SpecConflictError(
                f"image min side {resolved.image_min_side} ({origin['image_min_side']}) is larger than image max "
                f"side {resolved.image_max_side} ({origin['image_max_side']}) for {source}: give "
                f"{names['image_max_side']} too"
            )
    return Recipe(resolved, tuple(notes))


def _assumed_note(spec, assumed, resolved, source, names):
    descriptions = []
    for field in assumed:
        if field == "anchors":
            descriptions.append("the default anchors")
        else:
            descriptions.append(f"{FIELD_LABELS[field]} {_describe(field, getattr(resolved, field))}")
    flags = ", ".join(sorted({names[field] for field in assumed}))
    empty = all(getattr(spec, field) is None for field in ("backbone", "class_names", "anchors", "image_min_side"))
    what = "has no detector spec" if empty else "does not record everything"
    return f"{source} {what}: assumed {', '.join(descriptions)} (give {flags} if it was made otherwise)"
