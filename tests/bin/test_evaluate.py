import json
import types

import cv2
import numpy as np
import pytest

from keras_retinanet.bin import evaluate as tool
from keras_retinanet.utils.coco_eval import COCO_METRIC_NAMES

# ---------------------------------------------------------------- parsing


def test_defaults_and_fizyr_argument_order():
    args = tool.parse_args(["csv", "val.csv", "classes.csv", "model.keras"])
    assert (args.dataset_type, args.annotations, args.classes, args.model) == ("csv", "val.csv", "classes.csv", "model.keras")
    assert (args.score_threshold, args.iou_threshold, args.max_detections) == (0.05, 0.5, 100)
    assert (args.image_min_side, args.image_max_side, args.batch_size) == (800, 1333, 1)
    assert (args.metric, args.convert_model, args.backbone, args.json, args.save_path) == ("voc", False, "resnet50", None, None)
    assert tool.parse_args(["coco", "/data/coco", "m.keras"]).metric == "coco"
    assert tool.parse_args(["pascal", "/voc", "m.keras"]).set_name == "test"


@pytest.mark.parametrize(
    "argv",
    [
        ["--score-threshold", "0.3", "--convert-model", "--metric", "all", "csv", "a.csv", "c.csv", "m.keras"],
        ["csv", "a.csv", "c.csv", "m.keras", "--score-threshold", "0.3", "--convert-model", "--metric", "all"],
        ["--metric", "all", "csv", "a.csv", "c.csv", "m.keras", "--convert-model", "--score-threshold", "0.3"],
    ],
)
def test_options_before_or_after_the_dataset(argv):
    args = tool.parse_args(argv)
    assert (args.score_threshold, args.convert_model, args.metric, args.model) == (0.3, True, "all", "m.keras")
    assert args.iou_threshold == 0.5  # a default from the sub-command does not override


@pytest.mark.parametrize(
    "argv, message",
    [
        (["csv", "a.csv", "c.csv", "m.keras", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["csv", "a.csv", "c.csv", "m.keras", "--metric", "map"], "invalid choice: 'map'"),
        (["csv", "a.csv", "c.csv", "m.keras", "--iou-threshold", "1.5"], "--iou-threshold must be in (0, 1]"),
        (["csv", "a.csv"], "required"),
    ],
)
def test_bad_arguments_exit_with_usage(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        tool.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------- errors before any work


@pytest.mark.parametrize("missing", ["annotations", "classes", "model"])
def test_missing_files_are_one_line_errors(tmp_path, capsys, missing):
    paths = {name: tmp_path / f"{name}.csv" for name in ("annotations", "classes")}
    paths["model"] = tmp_path / "model.keras"
    for name, path in paths.items():
        if name != missing:
            path.write_text("x")
    status = tool.main(["csv", str(paths["annotations"]), str(paths["classes"]), str(paths["model"])])
    err = capsys.readouterr().err
    assert status == 1
    what = {"annotations": "annotations file", "classes": "classes file", "model": "model file"}[missing]
    assert err == f"retinanet-evaluate: error: {what} not found: {paths[missing]}\n"


def test_missing_dataset_folder_and_config(tmp_path, capsys):
    model = tmp_path / "m.keras"
    model.write_text("x")
    assert tool.main(["pascal", str(tmp_path / "VOC"), str(model)]) == 1
    assert capsys.readouterr().err == f"retinanet-evaluate: error: Pascal VOC folder not found: {tmp_path / 'VOC'}\n"
    assert tool.main(["coco", str(tmp_path), str(model), "--config", str(tmp_path / "c.ini")]) == 1
    assert capsys.readouterr().err == f"retinanet-evaluate: error: config file not found: {tmp_path / 'c.ini'}\n"


# ---------------------------------------------------------------- the report, with fakes for data and model


@pytest.fixture
def fake_run(tmp_path, monkeypatch, fake_detection_generator, fake_inference_model):
    """Run main() on a fake generator and model (the parser and input checks stay real)."""
    rng = np.random.default_rng(0)
    boxes = np.array([[10, 10, 40, 30], [50, 20, 90, 60]], dtype=np.float64)
    images = [rng.integers(0, 255, size=(80, 100, 3), dtype=np.uint8) for _ in range(5)]
    annotations = [{"bboxes": boxes, "labels": np.array([0, 1])} for _ in images]
    found = np.array([[11, 10, 40, 31], [0, 50, 20, 70]], dtype=np.float64)  # class 1 missed everywhere
    detections = [(found, np.array([0.9, 0.8]), np.array([0, 1]))] * 5
    generator = fake_detection_generator(images, annotations, ["rectangle", "circle", "unused"])
    generator.has_label = lambda label: label < 2
    model = fake_inference_model(detections)

    monkeypatch.setattr(tool, "get_backbone", lambda args: types.SimpleNamespace(preprocess_image=None))
    monkeypatch.setattr(tool, "create_generator", lambda args, preprocess: generator)
    monkeypatch.setattr(tool, "load_inference_model", lambda args: model)
    for name in ("val.csv", "classes.csv", "model.keras"):
        (tmp_path / name).write_text("x")

    def run(*options):
        return tool.main(["csv", str(tmp_path / "val.csv"), str(tmp_path / "classes.csv"),
                          str(tmp_path / "model.keras"), *options])

    return run, model


def test_report_table_json_and_pictures(fake_run, tmp_path, capsys):
    run, model = fake_run
    out_json, save_path = tmp_path / "figures.json", tmp_path / "drawn"
    status = run("--metric", "all", "--batch-size", "2", "--json", str(out_json), "--save-path", str(save_path))
    out = capsys.readouterr().out
    assert status == 0
    assert [shape[0] for shape in model.batch_shapes] == [2, 2, 1]
    assert "class      instances      AP" in out
    assert "rectangle          5  1.0000" in out
    assert "circle             5  0.0000" in out
    assert "mAP (IoU 0.5, mean over 2 classes with instances): 0.5000" in out
    assert "weighted mAP (by 10 instances): 0.5000" in out
    assert "AP50   AP @[ IoU=0.50      | area=   all | maxDets=100 ] = 0.5000" in out

    report = json.loads(out_json.read_text())
    assert report["voc"]["classes"] == [
        {"label": 0, "name": "rectangle", "instances": 5, "ap": 1.0},
        {"label": 1, "name": "circle", "instances": 5, "ap": 0.0},
    ]
    assert (report["voc"]["mAP"], report["images"], report["batch_size"]) == (0.5, 5, 2)
    assert list(report["coco"]) == list(COCO_METRIC_NAMES)
    assert report["coco"]["AP50"] == pytest.approx(0.5)

    drawn = cv2.imread(str(save_path / "0.png"))
    assert drawn.shape == (80, 100, 3)
    plot = cv2.imread(str(save_path / "precision_recall" / "0_rectangle.png"))
    assert plot.shape == (400, 500, 3) and plot.std() > 10


def test_voc_only_by_default(fake_run, capsys):
    run, _ = fake_run
    assert run() == 0
    out = capsys.readouterr().out
    assert "mAP (IoU 0.5" in out and "COCO metrics" not in out
    assert run("--metric", "coco") == 0
    out = capsys.readouterr().out
    assert "COCO metrics" in out and "mAP (IoU" not in out
