"""The detector spec end to end: a model made by retinanet-train needs no recipe flag afterwards.

retinanet-train makes a model with a non-default backbone, config.ini (anchor sizes and
scales), image sizes and class ids. Then retinanet-evaluate, -predict, -convert-model (to
every format) and -debug run on it with no --backbone, --config, --classes or size
flags, and give what they give with the right flags; a contradicting flag is a one-line
error naming both values, a different image size one line naming the saved and the used.
The same model with its spec stripped, run without flags, gives other results: the test
can tell a tool that reads the spec from one that does not.
"""
import csv
import json
import os
import shutil

import cv2
import keras
import numpy as np
import pytest

from keras_retinanet import models
from keras_retinanet.bin import convert_model, debug, evaluate, predict, train
from keras_retinanet.inference import load_detector
from keras_retinanet.spec import read_spec
from keras_retinanet.utils import synthetic
from keras_retinanet.training import compile_training_model
from tests.detector_model import he_initialise

pytestmark = pytest.mark.slow

BACKBONE = "mobilenet128_0.25"  # tf preprocessing; the default resnet50 uses caffe's
CLASSES = [("triangle", 0), ("rectangle", 1), ("circle", 2)]  # not the synthetic data's own ids
CONFIG = """[anchor_parameters]
sizes = 24 48 96 192 384
strides = 8 16 32 64 128
ratios = 0.5 1 2
scales = 1 1.5
"""
OTHER_CONFIG = CONFIG.replace("scales = 1 1.5", "scales = 1 1.25")
MIN_SIDE, MAX_SIDE = 96, 160  # the 128 px images are resized to 96
SCORE = "0.02"
TOP = 10
BOX_TOLERANCE, SCORE_TOLERANCE = 1.0, 1e-2  # exported graphs against the Keras model


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A snapshot written by retinanet-train, with He-initialised weights so that its detections spread."""
    root = tmp_path_factory.mktemp("recipe")
    data = synthetic.make_dataset(str(root / "data"), {"train": 8, "val": 6}, seed=5, image_size=128,
                                  min_size=28, max_size=64)  # fmt: skip
    with open(data["classes"], "w", newline="") as file:
        csv.writer(file).writerows(CLASSES)
    (root / "config.ini").write_text(CONFIG)
    (root / "other.ini").write_text(OTHER_CONFIG)
    snapshots = root / "snapshots"
    status = train.main([
        "--no-weights", "--backbone", BACKBONE, "--feature-size", "16", "--head-depth", "2", "--batch-size", "4",
        "--epochs", "1", "--steps", "2", "--lr", "1e-3", "--image-min-side", str(MIN_SIDE),
        "--image-max-side", str(MAX_SIDE), "--config", str(root / "config.ini"), "--snapshot-path", str(snapshots),
        "--tensorboard-dir", "", "--no-evaluation", "--seed", "0", "csv", data["train"], data["classes"],
    ])  # fmt: skip
    assert status == 0
    snapshot = snapshots / f"{BACKBONE}_csv_01.keras"
    spec = read_spec(snapshot)
    model = he_initialise(models.load_model(str(snapshot)), seed=1)
    model.save(str(snapshot))
    assert read_spec(snapshot) == spec  # saving again keeps the spec

    stripped = root / "no_spec.keras"  # the same weights, no spec: what an older snapshot is
    old = keras.Model(model.inputs, model.outputs, name=model.name)
    compile_training_model(old, lr=1e-3)
    old.save(str(stripped))
    assert read_spec(stripped) is None
    return {"root": root, "data": data, "images": str(root / "data" / "images"), "snapshot": str(snapshot),
            "stripped": str(stripped),
            "config": str(root / "config.ini"), "other_config": str(root / "other.ini")}  # fmt: skip


def right_flags(run):
    return ["--backbone", BACKBONE, "--config", run["config"], "--image-min-side", str(MIN_SIDE),
            "--image-max-side", str(MAX_SIDE)]  # fmt: skip


def _notes(err):
    return [line for line in err.splitlines() if ": note: " in line]


def test_the_snapshot_records_what_training_was_given(run):
    spec = read_spec(run["snapshot"])
    assert (spec.backbone, spec.preprocess_mode) == (BACKBONE, "tf")
    assert spec.class_names == ("triangle", "rectangle", "circle")
    assert spec.anchors.sizes == (24, 48, 96, 192, 384) and spec.anchors.scales == (1.0, 1.5)
    assert spec.pyramid_levels == (3, 4, 5, 6, 7)
    assert (spec.image_min_side, spec.image_max_side, spec.no_resize) == (MIN_SIDE, MAX_SIDE, False)
    assert (spec.feature_size, spec.head_depth, spec.filter, spec.epoch) == (16, 2, None, 1)
    model = models.load_model(run["snapshot"])
    assert model.spec == spec and model.class_names == spec.class_names


# ------------------------------------------------------------------------------ evaluate


def _evaluate(run, capsys, model, *flags):
    out = run["root"] / "figures.json"
    data = run["data"]
    status = evaluate.main(["csv", data["val"], data["classes"], model, "--score-threshold", SCORE,
                            "--metric", "all", "--json", str(out), "--overwrite", *flags])  # fmt: skip
    err = capsys.readouterr().err
    if status != 0:
        return status, err, None
    report = json.loads(out.read_text())
    return status, err, {"voc": report["voc"], "coco": report["coco"]}


def test_evaluate_needs_no_recipe_flags(run, capsys):
    status, err, figures = _evaluate(run, capsys, run["snapshot"])
    assert status == 0 and _notes(err) == [], err
    assert figures["voc"]["mAP"] > 0
    assert [c["name"] for c in figures["voc"]["classes"]] == ["triangle", "rectangle", "circle"]
    assert _evaluate(run, capsys, run["snapshot"], *right_flags(run))[2] == figures

    # without its spec, the model's 6 anchors per location do not fit the default anchors: an error, not a guess
    status, err, _ = _evaluate(run, capsys, run["stripped"])
    assert status == 1 and "the model predicts 6 anchors per location but the anchor parameters give 9" in err
    # with the anchors, the same weights are run the resnet50 way at 800 px: other figures, and one line says so
    status, err, stripped = _evaluate(run, capsys, run["stripped"], "--config", run["config"])
    assert status == 0 and stripped != figures, err
    assert _notes(err) == [
        f"retinanet-evaluate: note: {run['stripped']} has no detector spec: assumed backbone resnet50, "
        "image min side 800, image max side 1333 (give --backbone, --image-max-side, --image-min-side if it was "
        "made otherwise)"
    ]
    # ... and the flags still serve an older model
    assert _evaluate(run, capsys, run["stripped"], *right_flags(run))[2] == figures


def test_a_different_image_size_is_used_with_one_note(run, capsys):
    status, err, figures = _evaluate(run, capsys, run["snapshot"], "--image-min-side", "128")
    assert status == 0
    assert _notes(err) == [
        f"retinanet-evaluate: note: image min side {MIN_SIDE} saved in {run['snapshot']}; image min side 128 used "
        "(--image-min-side)"
    ]
    assert figures != _evaluate(run, capsys, run["snapshot"])[2]


# ------------------------------------------------------------------------------ predict


def _predict(run, capsys, model, out_name, *flags):
    out = run["root"] / out_name
    status = predict.main([model, run["images"], "--score-threshold", SCORE, "--no-images", "--output-dir", str(out),
                           *flags])  # fmt: skip
    err = capsys.readouterr().err
    rows = None
    if status == 0:
        with open(out / "detections.csv", newline="") as file:
            rows = list(csv.reader(file))
    return status, err, rows


def test_predict_needs_no_recipe_flags(run, capsys):
    status, err, rows = _predict(run, capsys, run["snapshot"], "plain")
    assert status == 0 and _notes(err) == [], err
    assert len(rows) > 14 and {row[5] for row in rows if row[5]} <= {"triangle", "rectangle", "circle"}
    assert _predict(run, capsys, run["snapshot"], "flags", *right_flags(run), "--classes", run["data"]["classes"])[2] == rows

    status, err, stripped = _predict(run, capsys, run["stripped"], "stripped", "--config", run["config"])
    assert status == 0 and stripped != rows and len(_notes(err)) == 1
    assert {row[5] for row in stripped if row[5]} <= {"0", "1", "2"}  # no names without the spec or --classes


# ------------------------------------------------------------------------------ convert, every format


FORMATS = {"keras": ("model.keras", []), "saved_model": ("saved_model", []), "tflite": ("model.tflite", ["--input-size", "128", "128"]),
           "onnx": ("model.onnx", [])}  # fmt: skip


@pytest.fixture(scope="module")
def image(run):
    return cv2.imread(os.path.join(run["images"], "val_00000.png"))


@pytest.fixture(scope="module")
def reference(run, image):
    detections = load_detector(run["snapshot"], score_threshold=float(SCORE)).predict(image)
    assert len(detections) >= TOP
    return detections


def _assert_same_detections(reference, detections):
    for box, score, label in zip(reference.boxes[:TOP], reference.scores[:TOP], reference.labels[:TOP]):
        same = (detections.labels == label) & (np.abs(detections.boxes - box).max(axis=1) <= BOX_TOLERANCE)
        same &= np.abs(detections.scores - score) <= SCORE_TOLERANCE
        assert same.any(), f"no detection matches {label} {box} {score}"


@pytest.mark.parametrize("format", FORMATS)
def test_convert_to_every_format_needs_no_recipe_flags(run, image, reference, format, capsys, tmp_path):
    name, extra = FORMATS[format]
    plain, flagged = tmp_path / "plain" / name, tmp_path / "flags" / name
    for out, flags in ((plain, []), (flagged, right_flags(run))):
        out.parent.mkdir()
        assert convert_model.main([run["snapshot"], str(out), "--score-threshold", SCORE, *extra, *flags]) == 0
        assert _notes(capsys.readouterr().err) == []
    spec = read_spec(plain)
    assert spec == read_spec(flagged)
    assert spec.class_names == ("triangle", "rectangle", "circle") and spec.backbone == BACKBONE
    assert (spec.image_min_side, spec.image_max_side, spec.anchors.scales) == (MIN_SIDE, MAX_SIDE, (1.0, 1.5))
    assert spec.filter.score_threshold == float(SCORE)
    assert (spec.export is None) == (format == "keras")

    detector = load_detector(str(plain), score_threshold=float(SCORE))  # no flags: all from the spec
    assert detector.class_names == ("triangle", "rectangle", "circle") and detector.notes == ()
    detections = detector.predict(image)
    again = load_detector(str(flagged), score_threshold=float(SCORE)).predict(image)
    np.testing.assert_array_equal(detections.boxes, again.boxes)
    _assert_same_detections(reference, detections)


def test_exported_graphs_refuse_what_they_cannot_change(run, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert convert_model.main([run["snapshot"], str(out)]) == 0
    capsys.readouterr()
    status = predict.main([str(out), run["images"], "--image-min-side", "128",
                           "--output-dir", str(tmp_path / "p")])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 1 and len(err.strip().splitlines()) == 1
    assert f"--image-min-side 128 contradicts {out} (an exported graph): it was made with image min side {MIN_SIDE}" in err
    status = predict.main([str(out), run["images"], "--config", run["other_config"], "--output-dir", str(tmp_path / "p")])
    assert "--config (anchor parameters" in _one_line_error(capsys, status)
    # tiles run through an exported graph at the graph's own sizes
    assert predict.main([str(out), run["images"], "--tile", "64", "--tile-overlap", "16", "--no-images",
                         "--output-dir", str(tmp_path / "tiles")]) == 0  # fmt: skip
    assert _notes(capsys.readouterr().err) == []


# ------------------------------------------------------------------------------ debug


def _debug(run, capsys, out_name, *flags):
    out = run["root"] / out_name
    data = run["data"]
    status = debug.main(["--no-gui", "--output-dir", str(out), *flags, "csv", data["train"], data["classes"]])
    captured = capsys.readouterr()
    pictures = {name: cv2.imread(str(out / name)) for name in sorted(os.listdir(out))} if status == 0 else None
    return status, captured, pictures


def test_debug_with_the_model_needs_no_recipe_flags(run, capsys):
    status, captured, pictures = _debug(run, capsys, "debug_model", "--model", run["snapshot"])
    assert status == 0 and _notes(captured.err) == [], captured.err
    status, flagged, flagged_pictures = _debug(
        run, capsys, "debug_flags", "--config", run["config"], "--image-min-side", str(MIN_SIDE),
        "--image-max-side", str(MAX_SIDE),
    )  # fmt: skip
    assert status == 0
    summary = [line for line in captured.out.splitlines() if not line.startswith("images written")]
    assert summary == [line for line in flagged.out.splitlines() if not line.startswith("images written")]
    assert "anchor sides (ratio 1): 24 .. 576 px" in summary
    assert pictures.keys() == flagged_pictures.keys() and len(pictures) == 8
    for name in pictures:
        np.testing.assert_array_equal(pictures[name], flagged_pictures[name])
        assert pictures[name].shape[:2] == (MIN_SIDE, MIN_SIDE)
    # the default anchors of the tool alone are another picture
    status, default, _ = _debug(run, capsys, "debug_default")
    assert status == 0 and "anchor sides (ratio 1): 32 .. 812.7 px" in default.out


# ------------------------------------------------------------------------------ contradictions


def _one_line_error(capsys, status):
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("Loading model")]
    assert status == 1 and len(lines) == 1, err
    return lines[0]


def test_contradicting_flags_are_one_line_errors_naming_both(run, capsys, tmp_path):
    data, snapshot = run["data"], run["snapshot"]
    backbone = f"--backbone resnet50 contradicts {snapshot}: it was made with backbone {BACKBONE}"
    anchors = ("--config (anchor parameters sizes 24 48 96 192 384, strides 8 16 32 64 128, ratios 0.5 1 2, scales 1 "
               f"1.25) contradicts {snapshot}: it was made with anchor parameters sizes 24 48 96 192 384, strides 8 16 "
               "32 64 128, ratios 0.5 1 2, scales 1 1.5")  # fmt: skip

    status = evaluate.main(["csv", data["val"], data["classes"], snapshot, "--backbone", "resnet50"])
    assert backbone in _one_line_error(capsys, status)
    status = evaluate.main(["csv", data["val"], data["classes"], snapshot, "--config", run["other_config"]])
    assert anchors in _one_line_error(capsys, status)
    status = predict.main([snapshot, run["images"], "--backbone", "resnet50",
                           "--output-dir", str(tmp_path / "p")])  # fmt: skip
    assert backbone in _one_line_error(capsys, status)
    status = convert_model.main([snapshot, str(tmp_path / "m.keras"), "--config", run["other_config"]])
    assert anchors in _one_line_error(capsys, status)
    status = debug.main(["--no-gui", "--output-dir", str(tmp_path / "d"), "--model", snapshot, "--config",
                         run["other_config"], "csv", data["train"], data["classes"]])  # fmt: skip
    assert anchors in _one_line_error(capsys, status)
    status = train.main(["--snapshot", snapshot, "--backbone", "resnet50", "--epochs", "2", "--steps", "1",
                         "--snapshot-path", str(tmp_path / "s"), "--tensorboard-dir", "", "csv", data["train"],
                         data["classes"]])  # fmt: skip
    assert backbone in _one_line_error(capsys, status)

    swapped = tmp_path / "swapped.csv"
    swapped.write_text("rectangle,0\ntriangle,1\ncircle,2\n")
    classes = f"[rectangle, triangle, circle] contradicts {snapshot}: it was made with classes [triangle, rectangle, circle]"
    status = predict.main([snapshot, run["images"], "--classes", str(swapped),
                           "--output-dir", str(tmp_path / "p")])  # fmt: skip
    assert classes in _one_line_error(capsys, status)
    status = evaluate.main(["csv", data["val"], str(swapped), snapshot])
    assert classes in _one_line_error(capsys, status)
    assert not os.path.exists(tmp_path / "m.keras") and not os.path.exists(tmp_path / "s")


# ------------------------------------------------------------------------------ resuming


def test_resuming_checks_the_classes_and_gives_an_older_snapshot_a_spec(run, capsys, tmp_path):
    data = run["data"]
    fewer = tmp_path / "two.csv"
    fewer.write_text("triangle,0\nrectangle,1\n")
    subset = run["root"] / "data" / "train_without_circles.csv"  # image paths are relative to the CSV
    subset.write_text("".join(line for line in open(data["train"]) if not line.rstrip().endswith("circle")))
    status = train.main(["--snapshot", run["snapshot"], "--epochs", "2", "--steps", "1", "--snapshot-path",
                         str(tmp_path / "a"), "--tensorboard-dir", "", "--no-evaluation", "csv", str(subset),
                         str(fewer)])  # fmt: skip
    message = _one_line_error(capsys, status)
    assert f"snapshot {run['snapshot']} predicts 3 classes, the training set has 2 (ids 0 .. 1)" in message

    folder = tmp_path / "b"
    status = train.main(["--snapshot", run["stripped"], *right_flags(run), "--epochs", "1", "--initial-epoch", "0",
                         "--steps", "1", "--snapshot-path", str(folder), "--tensorboard-dir", "", "--no-evaluation",
                         "csv", data["train"], data["classes"]])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    spec = read_spec(folder / f"{BACKBONE}_csv_01.keras")
    assert spec.replace(epoch=None) == read_spec(run["snapshot"]).replace(epoch=None)  # the flags' recipe, the classes
    assert spec.epoch == 1


def test_resuming_needs_no_recipe_flags(run, capsys, tmp_path):
    folder = tmp_path / "snapshots"
    folder.mkdir()
    snapshot = folder / os.path.basename(run["snapshot"])
    shutil.copy(run["snapshot"], snapshot)
    data = run["data"]
    status = train.main(["--snapshot", str(snapshot), "--epochs", "2", "--steps", "1", "--snapshot-path", str(folder),
                         "--tensorboard-dir", "", "--no-evaluation", "csv", data["train"], data["classes"]])  # fmt: skip
    assert status == 0 and _notes(capsys.readouterr().err) == []
    resumed = folder / f"{BACKBONE}_csv_02.keras"  # named after the snapshot's backbone, not resnet50
    assert sorted(os.listdir(folder)) == sorted([snapshot.name, resumed.name, f"{BACKBONE}_csv_log.csv"])
    assert read_spec(resumed) == read_spec(snapshot).replace(epoch=2)  # the same recipe, one epoch more
