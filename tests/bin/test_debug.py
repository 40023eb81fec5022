"""retinanet-debug --no-gui on a synthetic CSV dataset: drawings, summary, boxes without anchors."""
import os
import re

import cv2
import numpy as np
import pytest

from keras_retinanet.bin import debug
from keras_retinanet.inspection import ANCHOR_COLOR, MATCHED_COLOR, UNMATCHED_COLOR
from keras_retinanet.utils.image import resize_image
from keras_retinanet.utils.synthetic import write_classes, write_split

SIDE = "160"
TINY_BOX = (10, 10, 16, 16)  # 6 x 6 px: under the smallest default anchor (32 px), even scaled by 1.25


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("debug")
    classes = write_classes(str(root / "classes.csv"))
    annotations, records = write_split(str(root), "d", 3, image_size=128, min_size=30, max_size=50,
                                       empty_fraction=0.0, seed=5)  # fmt: skip
    with open(annotations, "a") as file:
        file.write("images/d_00001.png,{},{},{},{},circle\n".format(*TINY_BOX))
    return {"annotations": annotations, "classes": classes, "records": records, "root": root}


def _run(dataset, out, *options):
    args = ["--no-gui", "--output-dir", str(out), "--image-min-side", SIDE, "--image-max-side", SIDE, *options,
            "csv", dataset["annotations"], dataset["classes"]]  # fmt: skip
    return debug.main(args)


def _color_pixels(image, color):
    return np.all(image == np.asarray(color, np.uint8), axis=2)


def test_writes_drawings_and_reports_the_box_without_anchor(dataset, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(dataset, out) == 0
    report = capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["00000_d_00000.png", "00001_d_00001.png", "00002_d_00002.png"]

    labels = np.concatenate([r["labels"] for r in dataset["records"]] + [[1]])
    names = ("rectangle", "circle", "triangle")
    counts = ", ".join(f"{names[k]} {int(np.sum(labels == k))}" for k in range(3) if np.any(labels == k))
    assert "images: 3" in report
    assert f"boxes: {len(labels)} ({counts})" in report
    assert re.search(r"box width 7\.5 \.\. \d+(\.\d)? px, height 7\.5 \.\. \d+(\.\d)? px", report)  # 6 px x 1.25
    assert f"boxes with no matching anchor: 1 of {len(labels)} (circle 1)" in report
    scaled = ", ".join(f"{v * 1.25:g}" for v in TINY_BOX)
    path = os.path.join(dataset["root"], "images", "d_00001.png")
    assert f"  {path}: circle [{scaled}] (7.5 x 7.5 px)" in report

    drawn = cv2.imread(str(out / "00001_d_00001.png"))
    assert drawn.shape == (160, 160, 3)
    red = _color_pixels(drawn, UNMATCHED_COLOR)
    x1, y1, x2, y2 = (round(v * 1.25) for v in TINY_BOX)
    assert red[y1:y2, x1:x2].any() and not red[60:, 60:].any()  # only around the tiny box (and its caption)
    assert _color_pixels(drawn, MATCHED_COLOR).any() and _color_pixels(drawn, ANCHOR_COLOR).any()


def test_toggles_and_random_transform(dataset, tmp_path, capsys):
    plain = tmp_path / "plain"
    assert _run(dataset, plain, "--no-anchors", "--no-annotations") == 0
    original = cv2.imread(os.path.join(dataset["root"], "images", "d_00000.png"))
    expected, _ = resize_image(original, min_side=160, max_side=160)
    np.testing.assert_array_equal(cv2.imread(str(plain / "00000_d_00000.png")), expected)

    augmented = [tmp_path / "aug1", tmp_path / "aug2"]
    for out in augmented:
        assert _run(dataset, out, "--no-anchors", "--no-annotations", "--random-transform", "--seed", "3") == 0
    first = cv2.imread(str(augmented[0] / "00000_d_00000.png"))
    assert first.shape == expected.shape and not np.array_equal(first, expected)
    np.testing.assert_array_equal(first, cv2.imread(str(augmented[1] / "00000_d_00000.png")))  # seeded
    assert "images: 3" in capsys.readouterr().out


def test_no_display_means_no_gui(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    assert debug.parse_args(["csv", "a.csv", "c.csv"]).no_gui is True
    monkeypatch.setenv("DISPLAY", ":0")
    assert debug.parse_args(["csv", "a.csv", "c.csv"]).no_gui is False
    assert debug.parse_args(["csv", "a.csv", "c.csv", "--no-gui"]).no_gui is True  # options after the dataset too


def _error(capsys, args):
    assert debug.main(args) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0].removeprefix("retinanet-debug: error: ")


def test_bad_input_gives_one_line_and_exit_1(dataset, tmp_path, capsys):
    base = ["--no-gui", "--output-dir", str(tmp_path / "o"), "csv"]
    missing = tmp_path / "missing.csv"
    assert _error(capsys, base + [str(missing), dataset["classes"]]) == f"annotations file not found: {missing}"
    bad = tmp_path / "bad.csv"
    bad.write_text("images/d_00000.png,10,10,40,40,circle\nimages/d_00000.png,50,10,20,40,circle\n")
    message = _error(capsys, base + [str(bad), dataset["classes"]])
    assert message == f"invalid CSV annotations file: {bad}: line 2: x2 (20) must be higher than x1 (50)"
    classes = tmp_path / "classes.csv"
    classes.write_text("circle\n")
    message = _error(capsys, base + [dataset["annotations"], str(classes)])
    assert message.startswith(f"invalid CSV class file: {classes}: line 1: format should be 'class_name,class_id'")
    lost = tmp_path / "lost.csv"
    lost.write_text("images/nowhere.png,10,10,40,40,circle\n")
    message = _error(capsys, base + [str(lost), dataset["classes"]])
    assert message == f"1 images of the dataset are missing: {tmp_path / 'images' / 'nowhere.png'}"
    config = tmp_path / "nope.ini"
    message = _error(capsys, ["--config", str(config)] + base + [dataset["annotations"], dataset["classes"]])
    assert message == f"config file not found: {config}"


def test_make_output_path_is_fizyrs():
    assert debug.make_output_path("out", "/data/a/1.png") == os.path.join("out", "data", "a", "1_debug.png")
    assert debug.make_output_path("out", "/data/a/1.png", flatten=True) == os.path.join("out", "1_debug.png")
    assert debug.make_output_path("out", "images/x.jpg") == os.path.join("out", "images", "x_debug.jpg")


def test_run_takes_fizyrs_arguments(dataset, tmp_path, capsys):
    """fizyr's run(generator, args, anchor_params, pyramid_levels): fizyr-style args, the tool's drawing."""
    import argparse

    from keras_retinanet.preprocessing.csv_generator import CSVGenerator
    from keras_retinanet.utils.anchors import AnchorParameters

    generator = CSVGenerator(dataset["annotations"], dataset["classes"], image_min_side=160, image_max_side=160,
                             group_method="none", shuffle_groups=False)  # fmt: skip
    args = argparse.Namespace(random_transform=False, resize=False, anchors=False, show_annotations=False,
                              display_name=False, no_gui=True, output_dir=str(tmp_path / "out"), flatten_output=False)  # fmt: skip
    small = AnchorParameters(sizes=[6, 16, 32, 64, 128], strides=[8, 16, 32, 64, 128], ratios=[0.5, 1.0, 2.0],
                             scales=[1.0, 1.26, 1.59])  # fmt: skip
    assert debug.run(generator, args, anchor_params=small) is True
    report = capsys.readouterr().out
    assert "anchor sides (ratio 1): 6 .. 203.5 px" in report
    assert "box width 6 .. " in report  # not resized (fizyr's resize=False)
    assert f"circle [{', '.join(map(str, TINY_BOX))}]" not in report  # 6 px anchors match the 6 px box
    original = cv2.imread(os.path.join(dataset["root"], "images", "d_00000.png"))
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "out" / "00000_d_00000.png")), original)  # nothing drawn
    assert generator.anchor_params is None and generator.no_resize is False  # the generator is left as it was


def test_fit_anchors_writes_a_config_that_training_reads_back(tmp_path, capsys):
    from keras_retinanet.utils.config import anchor_settings

    root = tmp_path / "small"
    classes = write_classes(str(tmp_path / "classes.csv"))
    annotations, _ = write_split(str(root), "s", 6, image_size=160, min_objects=3, max_objects=4,
                                 min_size=12, max_size=18, empty_fraction=0.0, seed=3)  # fmt: skip
    config = tmp_path / "fitted.ini"
    args = ["--fit-anchors", str(config), "--image-min-side", SIDE, "--image-max-side", SIDE,
            "csv", annotations, classes]  # fmt: skip
    assert debug.main(args) == 0
    out = capsys.readouterr().out
    before = int(re.search(r"before: (\d+) of (\d+) boxes", out).group(1))
    after, total = (int(v) for v in re.search(r"after: +(\d+) of (\d+) boxes", out).groups())
    assert before == total and after < total / 3
    params, levels = anchor_settings(str(config))
    assert params.sizes[0] < 32 and params.strides == [8, 16, 32, 64, 128] and levels == [3, 4, 5, 6, 7]
    assert params.ratios.tolist() == [0.5, 1.0, 2.0]
    assert f"train with --config {config}" in out
    # an existing file is not replaced without --overwrite, and an input never
    assert debug.main(args) == 1
    assert "exists" in capsys.readouterr().err
    assert debug.main(["--fit-anchors", annotations, "csv", annotations, classes]) == 1
    assert "is one of the inputs" in capsys.readouterr().err
