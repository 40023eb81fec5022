import csv
import os

import cv2
import numpy as np
import pytest

from keras_retinanet.utils import synthetic


def _read_rows(csv_path):
    with open(csv_path, newline="") as f:
        return list(csv.reader(f))


def test_boxes_match_drawn_pixels(tmp_path):
    _, records = synthetic.write_split(
        str(tmp_path), "train", num_images=12, image_size=(96, 128), max_objects=4, seed=3
    )
    checked = 0
    for record in records:
        image = cv2.imread(record["path"]).astype(np.int64)
        outside = np.ones(image.shape[:2], dtype=bool)
        for x1, y1, x2, y2 in record["boxes"]:
            outside[y1:y2, x1:x2] = False
            # the shape's colour: any pixel of it on the box's bottom edge at the corner
            # of a rectangle / triangle base, or the circle's bottom-most pixel
            bottom_row = image[y2 - 1, x1:x2]
            background_ref = np.median(image[outside], axis=0) if outside.any() else None
            far = np.abs(bottom_row - background_ref).max(axis=1) >= 40
            colour = bottom_row[np.argmax(far)]
            mask = np.all(image == colour, axis=2)
            ys, xs = np.nonzero(mask)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2)
            checked += 1
        # outside every box only the background with its small noise remains
        background = image[outside]
        spread = background.max(axis=0) - background.min(axis=0)
        assert spread.max() <= 2 * synthetic.BACKGROUND_NOISE
    assert checked >= 12


def test_deterministic_for_a_seed(tmp_path):
    a = synthetic.make_dataset(str(tmp_path / "a"), {"train": 5, "val": 2}, seed=11)
    b = synthetic.make_dataset(str(tmp_path / "b"), {"train": 5, "val": 2}, seed=11)
    c = synthetic.make_dataset(str(tmp_path / "c"), {"train": 5, "val": 2}, seed=12)
    assert _read_rows(a["train"]) == _read_rows(b["train"])
    assert _read_rows(a["train"]) != _read_rows(c["train"])
    for row in _read_rows(a["train"]):
        img_a = cv2.imread(os.path.join(tmp_path / "a", row[0]))
        img_b = cv2.imread(os.path.join(tmp_path / "b", row[0]))
        np.testing.assert_array_equal(img_a, img_b)
    # splits never share images
    train_images = {r[0] for r in _read_rows(a["train"])}
    val_images = {r[0] for r in _read_rows(a["val"])}
    assert not train_images & val_images


def test_csv_format_and_empty_images(tmp_path):
    paths = synthetic.make_dataset(
        str(tmp_path), {"train": 20}, seed=0, empty_fraction=0.3, image_size=64, min_size=12
    )
    assert _read_rows(paths["classes"]) == [["rectangle", "0"], ["circle", "1"], ["triangle", "2"]]
    rows = _read_rows(paths["train"])
    assert all(len(r) == 6 for r in rows)
    empty = [r for r in rows if r[1:] == ["", "", "", "", ""]]
    boxed = [r for r in rows if r[1] != ""]
    assert empty and boxed
    assert len({r[0] for r in rows}) == 20
    for r in boxed:
        x1, y1, x2, y2 = map(int, r[1:5])
        assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
        assert x2 - x1 >= 12 and y2 - y1 >= 12
        assert r[5] in synthetic.SHAPE_CLASSES
        assert os.path.isfile(os.path.join(tmp_path, r[0]))


def test_command_line(tmp_path, capsys):
    out = tmp_path / "data"
    assert synthetic.main([str(out), "--train", "3", "--val", "2", "--size", "64", "80"]) == 0
    assert "train:" in capsys.readouterr().out
    image = cv2.imread(os.path.join(out, _read_rows(out / "val.csv")[0][0]))
    assert image.shape == (64, 80, 3)
    with pytest.raises(SystemExit):
        synthetic.main([str(out), "--size", "8"])


def test_unknown_shape_class_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown shape classes \\['hexagon'\\]"):
        synthetic.write_split(str(tmp_path), classes=("circle", "hexagon"))
