"""The detector spec: serialisation, reading it from files, and resolving it against a caller's values."""
import json
import subprocess
import sys
import textwrap
import zipfile

import pytest

from keras_retinanet.errors import SpecConflictError, SpecError
from keras_retinanet.spec import (
    AnchorSpec,
    DetectorSpec,
    FilterSpec,
    RESIZE_FIELDS,
    check_class_names,
    class_names_from_mapping,
    read_keras_spec,
    resolve_recipe,
)

ANCHORS = AnchorSpec((16, 32, 64, 128, 256), (8, 16, 32, 64, 128), (0.5, 1, 2), (1.0, 1.5))
FULL = DetectorSpec(
    backbone="mobilenet128_0.25",
    preprocess_mode="tf",
    class_names=("circle", None, "triangle"),
    anchors=ANCHORS,
    pyramid_levels=(3, 4, 5, 6, 7),
    image_min_side=96,
    image_max_side=160,
    no_resize=False,
    feature_size=16,
    head_depth=2,
    filter=FilterSpec(score_threshold=0.3, max_detections=50),
)


def test_round_trip_through_json_keeps_every_field():
    data = json.loads(FULL.to_json())
    assert data["format"] == "keras_retinanet.detector_spec" and data["version"] == 1
    assert data["written_by"].startswith("keras-retinanet ")
    assert data["class_names"] == ["circle", None, "triangle"] and data["num_classes"] == 3
    assert data["anchors"]["scales"] == [1.0, 1.5] and data["filter"]["score_threshold"] == 0.3
    assert DetectorSpec.from_json(FULL.to_json()) == FULL
    assert DetectorSpec.from_dict(DetectorSpec().to_dict()) == DetectorSpec()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format": "something else"}, "not a keras-retinanet detector spec"),
        ({"version": 7, "written_by": "keras-retinanet 9.0"}, r"version 7 \(keras-retinanet 9.0\).*upgrade"),
        ({"num_classes": 2.5}, "'num_classes': expected an integer, got 2.5"),
        ({"anchors": {"sizes": [1, 2], "strides": [8], "ratios": [1], "scales": [1]}}, "2 sizes but 1 strides"),
        ({"anchors": {"sizes": "big", "strides": [8], "ratios": [1], "scales": [1]}}, "anchors.sizes"),
        ({"class_names": ["a", "b"], "num_classes": 3}, "2 class names for 3 classes"),
        ({"filter": {"nms": True, "bogus": 1}}, "'filter'"),
    ],
)
def test_malformed_specs_are_errors_naming_the_field(change, message):
    data = dict(FULL.to_dict(), **change)
    with pytest.raises(SpecError, match=message):
        DetectorSpec.from_dict(data)


def test_unknown_fields_of_a_newer_minor_writer_are_ignored():
    data = dict(FULL.to_dict(), future_field={"x": 1})
    assert DetectorSpec.from_dict(data) == FULL


def test_label_to_name_and_class_names_from_mapping():
    assert [FULL.label_to_name(label) for label in range(4)] == ["circle", "1", "triangle", "3"]
    assert class_names_from_mapping({2: "b", 0: "a"}) == ("a", None, "b")


def test_read_keras_spec_without_loading_the_model(tmp_path):
    """The spec is read from the .keras zip's config.json: no TensorFlow needed."""
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps({"class_name": "RetinaNetModel", "config": {"detector_spec": FULL.to_dict()}}))
    script = textwrap.dedent(
        f"""
        import sys
        from keras_retinanet.spec import read_spec
        spec = read_spec({str(path)!r})
        print(spec.backbone, spec.class_names, "tensorflow" in sys.modules)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["mobilenet128_0.25", "('circle',", "None,", "'triangle')", "False"]

    plain = tmp_path / "plain.keras"
    with zipfile.ZipFile(plain, "w") as archive:
        archive.writestr("config.json", json.dumps({"class_name": "Functional", "config": {}}))
    assert read_keras_spec(plain) is None


# ------------------------------------------------------------------------------ resolution


def test_nothing_given_takes_the_spec():
    recipe = resolve_recipe(FULL, {}, source="m.keras")
    assert recipe.spec == FULL and recipe.notes == ()


def test_agreeing_values_are_silent_and_fixed_contradictions_name_both():
    same = {"backbone": "mobilenet128_0.25", "anchors": ANCHORS.to_parameters(), "pyramid_levels": [3, 4, 5, 6, 7]}
    assert resolve_recipe(FULL, same).notes == ()
    flags = {"backbone": "--backbone", "anchors": "--config"}
    with pytest.raises(SpecConflictError) as error:
        resolve_recipe(FULL, {"backbone": "resnet50"}, source="m.keras", flag_names=flags)
    assert str(error.value) == (
        "--backbone resnet50 contradicts m.keras: it was made with backbone mobilenet128_0.25 (saved in its detector spec)"
    )
    other = AnchorSpec((32, 64, 128, 256, 512), (8, 16, 32, 64, 128), (0.5, 1, 2), (1.0, 1.5))
    with pytest.raises(SpecConflictError, match=r"--config \(anchor parameters sizes 32 64 128 256 512, .*\) contradicts "
                                                r"m.keras: it was made with anchor parameters sizes 16 32 64 128 256"):
        resolve_recipe(FULL, {"anchors": other}, source="m.keras", flag_names=flags)
    with pytest.raises(SpecConflictError, match=r"pyramid levels \(pyramid levels 4 5 6\) contradicts the model: it was "
                                                r"made with pyramid levels 3 4 5 6 7"):
        resolve_recipe(FULL, {"pyramid_levels": [4, 5, 6]})


def test_image_sizes_follow_the_caller_with_one_note():
    flags = {"image_min_side": "--image-min-side", "image_max_side": "--image-max-side", "no_resize": "--no-resize"}
    recipe = resolve_recipe(FULL, {"image_min_side": 128}, source="m.keras", flag_names=flags)
    assert recipe.spec.image_min_side == 128 and recipe.spec.image_max_side == 160
    assert recipe.notes == ("image min side 96 saved in m.keras; image min side 128 used (--image-min-side)",)
    recipe = resolve_recipe(FULL, {"image_min_side": 128, "image_max_side": 200}, source="m.keras", flag_names=flags)
    assert recipe.notes == (
        "image min side 96, image max side 160 saved in m.keras; image min side 128, image max side 200 used "
        "(--image-min-side, --image-max-side)",
    )
    with pytest.raises(ValueError, match=r"image min side 200 \(--image-min-side\) is larger than image max side 160 "
                                         r"\(saved\) for m.keras: give --image-max-side too"):
        resolve_recipe(FULL, {"image_min_side": 200}, source="m.keras", flag_names=flags)
    # fixed for an exported graph
    with pytest.raises(SpecConflictError, match="--no-resize on contradicts m.onnx: it was made with no resize off"):
        resolve_recipe(FULL, {"no_resize": True}, fixed=("no_resize",), source="m.onnx", flag_names=flags)


def test_nothing_is_said_about_sides_that_are_not_used():
    recipe = resolve_recipe(None, {"no_resize": True, "backbone": "resnet50"}, needed=("backbone",) + RESIZE_FIELDS)
    assert recipe.spec.no_resize is True and recipe.notes == ()


def test_a_model_without_a_spec_gets_the_defaults_in_one_line():
    recipe = resolve_recipe(None, {"image_min_side": 600}, source="old.keras", flag_names={
        "backbone": "--backbone", "anchors": "--config", "pyramid_levels": "--config", "image_max_side": "--image-max-side"})
    assert recipe.spec.backbone == "resnet50" and recipe.spec.image_min_side == 600
    assert recipe.spec.image_max_side == 1333 and recipe.spec.pyramid_levels == (3, 4, 5, 6, 7)
    assert recipe.spec.anchors.sizes == (32, 64, 128, 256, 512)
    assert len(recipe.notes) == 1
    assert recipe.notes[0] == (
        "old.keras has no detector spec: assumed backbone resnet50, the default anchors, pyramid levels 3 4 5 6 7, "
        "image max side 1333 (give --backbone, --config, --image-max-side if it was made otherwise)"
    )


def test_class_names_by_label():
    check_class_names(FULL, ["circle", "square", "triangle"])  # label 1 is unnamed in the model: fine
    check_class_names(FULL, ["circle"])  # a dataset with some of the classes
    with pytest.raises(SpecConflictError, match=r"the dataset's class list \[triangle, -, circle\] contradicts m.keras: "
                                                r"it was made with classes \[circle, -, triangle\]"):
        check_class_names(FULL, ["triangle", None, "circle"], source="m.keras")
    with pytest.raises(SpecConflictError, match="contradict"):
        check_class_names(FULL, ["circle", None, "triangle", "star"])  # a label the model does not predict
    check_class_names(None, ["anything"])
    recipe = resolve_recipe(FULL, {"class_names": ["circle", "square"]})
    assert recipe.spec.class_names == ("circle", "square", "triangle")  # the model's, gaps filled
