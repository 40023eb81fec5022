import csv
import json
import re

import cv2
import numpy as np
import pytest

from keras_retinanet.bin import evaluate as tool
from keras_retinanet.inference import Detector, KerasRunner
from keras_retinanet.utils import threads
from keras_retinanet.utils.coco_eval import COCO_METRIC_NAMES

# ---------------------------------------------------------------- parsing


def test_defaults_and_fizyr_argument_order():
    args = tool.parse_args(["csv", "val.csv", "classes.csv", "model.keras"])
    assert (args.dataset_type, args.annotations, args.classes, args.model) == ("csv", "val.csv", "classes.csv", "model.keras")
    assert (args.score_threshold, args.iou_threshold, args.max_detections) == (0.05, 0.5, 100)
    # recipe flags default to None: the model's detector spec decides
    assert (args.image_min_side, args.image_max_side, args.no_resize, args.batch_size) == (None, None, None, 1)
    assert (args.metric, args.convert_model, args.backbone, args.json, args.save_path) == ("voc", False, None, None, None)
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

    runner = KerasRunner(model, generator.preprocess_image, resize_image=generator.resize_image)
    monkeypatch.setattr(tool, "create_generator", lambda args: generator)
    monkeypatch.setattr(tool, "load_model", lambda args: Detector(runner, batch_size=args.batch_size, clip_boxes=False))
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


# ---------------------------------------------------------------- end to end on a trained synthetic snapshot

E2E_BACKBONE = "mobilenet128_0.25"
E2E_TRAIN_EPOCHS = 1  # of 4 steps (16 images, batch 4): the snapshot is trained, not good


@pytest.fixture(scope="module")
def snapshots(shapes_dataset, tmp_path_factory):
    """A training snapshot trained a few steps on the shapes dataset, and its inference snapshot."""
    pytest.importorskip("keras_retinanet.preprocessing.csv_generator")
    import keras

    from keras_retinanet import losses, models
    from keras_retinanet.callbacks import Evaluate
    from keras_retinanet.preprocessing.csv_generator import CSVGenerator
    from keras_retinanet.preprocessing.pipeline import build_dataset

    keras.utils.set_random_seed(0)
    backbone = models.backbone(E2E_BACKBONE)
    model = backbone.retinanet(num_classes=3, weights=None)
    model.compile(
        loss={"regression": losses.smooth_l1(), "classification": losses.focal()},
        optimizer=keras.optimizers.Adam(learning_rate=1e-3, clipnorm=0.001),
    )
    generator = CSVGenerator(
        shapes_dataset["train"], shapes_dataset["classes"], batch_size=4, image_min_side=128, image_max_side=128,
        preprocess_image=backbone.preprocess_image, seed=0,
    )
    # the Evaluate callback on a real inference model that shares the training model's weights
    validation = CSVGenerator(
        shapes_dataset["val"], shapes_dataset["classes"], image_min_side=128, image_max_side=128,
        preprocess_image=backbone.preprocess_image, shuffle_groups=False,
    )
    evaluation = Evaluate(validation, prediction_model=models.convert_model(model), verbose=0)
    history = model.fit(build_dataset(generator, seed=0), epochs=E2E_TRAIN_EPOCHS, verbose=0, callbacks=[evaluation])
    assert np.all(np.isfinite(history.history["loss"]))
    assert len(history.history["mAP"]) == E2E_TRAIN_EPOCHS and 0.0 <= history.history["mAP"][-1] <= 1.0
    assert sorted(evaluation.average_precisions) == [0, 1, 2]
    folder = tmp_path_factory.mktemp("snapshots")
    paths = {"training": str(folder / "training.keras"), "inference": str(folder / "inference.keras")}
    model.save(paths["training"])
    models.convert_model(model).save(paths["inference"])
    return paths


def _csv_command(shapes_dataset, model_path, *options, split="val"):
    return ["csv", shapes_dataset[split], shapes_dataset["classes"], model_path, "--backbone", E2E_BACKBONE,
            "--image-min-side", "128", "--image-max-side", "128", *options]


@pytest.mark.slow
def test_tool_on_a_trained_snapshot(shapes_dataset, snapshots, tmp_path, capsys):
    save_path, out_json = tmp_path / "drawn", tmp_path / "figures.json"
    status = tool.main(_csv_command(
        shapes_dataset, snapshots["training"], "--convert-model", "--metric", "all", "--batch-size", "2",
        "--save-path", str(save_path), "--json", str(out_json), split="train",
    ))
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "Running network" not in captured.err  # no progress bar when the output is a log, not a terminal
    lines = captured.out.splitlines()
    header = lines.index("class      instances      AP")
    rows = [line.split() for line in lines[header + 1: header + 4]]
    report = json.loads(out_json.read_text())
    assert [row[0] for row in rows] == ["rectangle", "circle", "triangle"]
    assert [int(row[1]) for row in rows] == [entry["instances"] for entry in report["voc"]["classes"]]
    assert sum(int(row[1]) for row in rows) > 0
    assert [float(row[2]) for row in rows] == pytest.approx([entry["ap"] for entry in report["voc"]["classes"]], abs=5e-5)
    assert any(line.startswith("mAP (IoU 0.5") for line in lines)
    assert list(report["coco"]) == list(COCO_METRIC_NAMES)
    assert report["images"] == 16

    with open(shapes_dataset["train"]) as f:
        rows = list(csv.reader(f))
    images = list(dict.fromkeys(row[0] for row in rows))  # in file order, as the generator lists them
    with_boxes = {row[0] for row in rows if row[1]}
    assert len(images) == 16 and with_boxes
    for index, image in enumerate(images):
        picture = cv2.imread(str(save_path / f"{index}.png"))
        assert picture.shape == (128, 128, 3)
        assert picture.std() > 5
        green = np.any(np.all(picture == (0, 255, 0), axis=2))  # ground truth is drawn in green
        assert green == (image in with_boxes)
    plots = sorted((save_path / "precision_recall").iterdir())
    assert [plot.name for plot in plots] == ["0_rectangle.png", "1_circle.png", "2_triangle.png"]
    plot = cv2.imread(str(plots[0]))
    assert plot.shape == (400, 500, 3) and plot.std() > 10


@pytest.mark.slow
def test_batch_size_does_not_change_the_figures(shapes_dataset, snapshots, tmp_path, capsys):
    figures = []
    for batch_size in ("1", "4"):
        out_json = tmp_path / f"b{batch_size}.json"
        assert tool.main(_csv_command(shapes_dataset, snapshots["inference"], "--batch-size", batch_size,
                                      "--json", str(out_json))) == 0
        figures.append(json.loads(out_json.read_text())["voc"])
    assert figures[0] == figures[1]


@pytest.mark.slow
@pytest.mark.skipif(threads.usable_cores() > threads.MAX_CORES, reason="the rule keeps TensorFlow's defaults here")
def test_the_tool_runs_two_model_calls_at_once_in_a_fresh_process_with_the_same_figures(shapes_dataset, snapshots, tmp_path, capsys):
    """A MobileNet at 128 px gets whole ops and several calls at once (``utils.threads``), which
    only a fresh process can set; this pytest process has run TensorFlow ops, so it keeps one."""
    import os
    import subprocess
    import sys

    fresh, here = tmp_path / "fresh.json", tmp_path / "here.json"
    assert tool.main(_csv_command(shapes_dataset, snapshots["inference"], "--json", str(here))) == 0
    env = {k: v for k, v in os.environ.items() if k not in threads.TENSORFLOW_VARIABLES + (threads.ENVIRONMENT_VARIABLE,)}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    command = [sys.executable, "-m", "keras_retinanet.bin.evaluate",
               *_csv_command(shapes_dataset, snapshots["inference"], "--json", str(fresh))]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    cores = threads.usable_cores()
    assert f"{cores} model call(s) at once" in completed.stdout
    assert re.search(r"Whole detection pass \(reading, tracing and any drawing included\): [0-9.]+ images/s",
                     completed.stdout)  # fmt: skip
    reports = json.loads(fresh.read_text()), json.loads(here.read_text())
    # here: whatever this process's first TensorFlow use settled (usually TensorFlow's threads, 1 call)
    assert [report["model_calls_at_once"] for report in reports] == [cores, threads.model_calls_at_once()]
    assert reports[0]["images_per_second"] > 0
    # the same detections, in whatever order the calls end (different thread counts: rounding at most)
    for fresh_class, here_class in zip(reports[0]["voc"]["classes"], reports[1]["voc"]["classes"], strict=True):
        assert fresh_class["instances"] == here_class["instances"]
        assert (fresh_class["ap"] is None) == (here_class["ap"] is None)
        assert fresh_class["ap"] is None or fresh_class["ap"] == pytest.approx(here_class["ap"], abs=1e-4)
    # (this few-step model scores 0; that calls at once give the same detections, box by box,
    # is tests/utils/test_eval.py's test_get_detections_with_several_model_calls_at_once)
    assert reports[0]["voc"]["mAP"] == pytest.approx(reports[1]["voc"]["mAP"], abs=1e-4)


@pytest.mark.slow
def test_training_and_inference_snapshots_are_told_apart_by_themselves(shapes_dataset, snapshots, tmp_path, capsys):
    """--convert-model is accepted for compatibility and changes nothing: the tool sees what the file holds."""
    figures = {}
    for kind in ("training", "inference"):
        for options in ([], ["--convert-model"]):
            out_json = tmp_path / f"{kind}{len(options)}.json"
            assert tool.main(_csv_command(shapes_dataset, snapshots[kind], "--json", str(out_json), *options)) == 0
            err = capsys.readouterr().err
            assert "Traceback" not in err and "error" not in err
            figures[kind, len(options)] = json.loads(out_json.read_text())["voc"]
    reference = figures["training", 0]
    assert reference["mAP"] is not None
    for voc in figures.values():
        assert voc["mAP"] == pytest.approx(reference["mAP"], abs=1e-4)  # BN folded or not: rounding only


def test_invalid_csv_is_reported_with_its_line(shapes_dataset, tmp_path, capsys):
    pytest.importorskip("keras_retinanet.preprocessing.csv_generator")
    bad = tmp_path / "bad.csv"
    bad.write_text("images/a.png,10,10,20,20,circle\nimages/b.png,40,10,30,20,circle\n")
    model = tmp_path / "model.keras"
    model.write_text("not read: the CSV is checked first")
    assert tool.main(["csv", str(bad), shapes_dataset["classes"], str(model)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"retinanet-evaluate: error: invalid CSV annotations file: {bad}: line 2: ")
    assert "x2 (30) must be higher than x1 (40)" in err
    assert len(err.splitlines()) == 1
