"""The kitti and oid sub-commands of retinanet-train, -evaluate and -debug on tiny real-format datasets."""
import os

import cv2
import numpy as np
import pytest

from keras_retinanet.bin import debug, evaluate, train
from tests.preprocessing import test_open_images
from tests.preprocessing.test_kitti import write_kitti

BACKBONE = "mobilenet128_0.25"
SIDES = ["--image-min-side", "128", "--image-max-side", "256"]


def _kitti_line(kind, box):
    left, top, right, bottom = box
    return f"{kind} 0.00 0 -1.58 {left:.2f} {top:.2f} {right:.2f} {bottom:.2f} 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59"


def _kitti_dataset(root):
    """Two subsets of 128 x 256 images with 40..90 px boxes, so that default anchors match them."""
    rng = np.random.default_rng(3)
    for subset, count in (("train", 3), ("val", 2)):
        labels = {}
        for index in range(count):
            lines = []
            for kind in ("Car", "Pedestrian"):
                x, y = rng.uniform(0, 150), rng.uniform(0, 60)
                lines.append(_kitti_line(kind, (x, y, x + rng.uniform(40, 90), y + rng.uniform(40, 60))))
            labels[f"{index:06d}"] = "\n".join(lines) + "\n"
        write_kitti(root, labels, subset=subset, image_shape=(128, 256, 3))
    return str(root)


def _train_args(snapshots, *extra):
    return ["--no-weights", "--backbone", BACKBONE, "--batch-size", "1", "--epochs", "1", "--steps", "1",
            "--lr", "1e-3", *SIDES, "--snapshot-path", str(snapshots), "--tensorboard-dir", "", "--seed", "1",
            "--feature-size", "32", "--head-depth", "1", *extra]  # fmt: skip


@pytest.mark.slow
def test_kitti_trains_a_step_then_evaluates_and_debugs(tmp_path, capsys):
    root = _kitti_dataset(tmp_path / "kitti")
    snapshots = tmp_path / "snapshots"
    assert train.main(_train_args(snapshots, "--multiprocessing", "--workers", "1", "kitti", root)) == 0
    captured = capsys.readouterr()
    assert "retinanet-train: note: --multiprocessing is not needed" in captured.err
    assert "| mAP " in captured.out  # validated on the 'val' subset
    snapshot = snapshots / f"{BACKBONE}_kitti_01.keras"
    assert snapshot.is_file()

    assert evaluate.main(["kitti", root, str(snapshot), "--metric", "voc"]) == 0
    report = capsys.readouterr().out
    assert "Car " in report and "Pedestrian " in report and "Inference time for 2 images" in report

    out = tmp_path / "debug"
    assert debug.main(["--no-gui", "--output-dir", str(out), "--display-name", "--show-annotations", *SIDES,
                       "kitti", root, "val"]) == 0  # fmt: skip
    assert sorted(os.listdir(out)) == ["00000_000000.png", "00001_000001.png"]
    assert "boxes: 4 (Car 2, Pedestrian 2)" in capsys.readouterr().out


@pytest.mark.slow
def test_oid_trains_a_step_and_debugs(tmp_path, capsys):
    sizes = {image_id: (128, 128) for image_id in test_open_images.SIZES}
    root = test_open_images.write_oid(tmp_path / "oid", sizes=sizes)
    test_open_images.write_oid(tmp_path / "oid", subset="validation", sizes=sizes)  # built by train, as in fizyr
    cache = tmp_path / "cache"
    args = _train_args(tmp_path / "snapshots", "--no-evaluation", "oid", root, "--annotation-cache-dir", str(cache),
                       "--labels-filter", "Airplane,Cat,Dog")  # fmt: skip
    assert train.main(args) == 0
    captured = capsys.readouterr()
    assert "epoch 1 | " in captured.out
    assert "images are not in" in captured.err  # the one image of the list that is not there
    assert (cache / "train.json").is_file() and (cache / "validation.json").is_file()

    out = tmp_path / "debug"
    assert debug.main(["--no-gui", "--output-dir", str(out), *SIDES, "oid", root, "train", "--version", "v4",
                       "--annotation-cache-dir", str(cache), "--parent-label", "Animal"]) == 0  # fmt: skip
    assert "boxes: 2 (Cat 1, Dog 1)" in capsys.readouterr().out
    assert len(os.listdir(out)) == 2


def test_missing_dataset_folders_are_one_line_errors(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert train.main(["--no-weights", "kitti", str(missing)]) == 1
    assert capsys.readouterr().err.strip() == f"retinanet-train: error: KITTI folder not found: {missing}"
    assert evaluate.main(["oid", str(missing), str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == f"retinanet-evaluate: error: Open Images folder not found: {missing}"
    assert debug.main(["--no-gui", "kitti", str(missing)]) == 1
    assert capsys.readouterr().err.strip() == f"retinanet-debug: error: KITTI folder not found: {missing}"


def test_a_bad_kitti_line_stops_debug_with_one_line(tmp_path, capsys):
    root = write_kitti(tmp_path / "kitti", {"000001": "Car 0 0 0 1 2 3\n"})
    assert debug.main(["--no-gui", "--output-dir", str(tmp_path / "o"), "kitti", root]) == 1
    path = os.path.join(root, "train", "labels", "000001.txt")
    assert capsys.readouterr().err.strip() == (
        f"retinanet-debug: error: invalid KITTI label file: {path}: line 1: expected 15 space-separated values "
        "(type truncated occluded alpha left top right bottom height width length x y z rotation_y), got 7"
    )


def test_display_name_writes_the_file_name(tmp_path, capsys):
    root = write_kitti(tmp_path / "kitti", {"000002": _kitti_line("Car", (10, 10, 60, 50)) + "\n"},
                       image_shape=(128, 256, 3))  # fmt: skip
    plain, named = tmp_path / "plain", tmp_path / "named"
    for out, extra in ((plain, []), (named, ["--display-name"])):
        assert debug.main(["--no-gui", "--output-dir", str(out), "--no-anchors", "--no-annotations", *SIDES, *extra,
                           "kitti", root]) == 0  # fmt: skip
    capsys.readouterr()
    without, with_name = (cv2.imread(str(folder / "00000_000002.png")) for folder in (plain, named))
    changed = np.argwhere((without != with_name).any(axis=2))
    assert len(changed) > 50
    assert changed[:, 0].min() > 100 and changed[:, 1].min() < 10  # the bottom left corner only
