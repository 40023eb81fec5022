"""calibration: images for int8 quantisation from a CSV, COCO, Pascal VOC dataset or a folder."""
import json
import os

import cv2
import numpy as np
import pytest

from keras_retinanet.calibration import calibration_image_paths, calibration_images, calibration_source_kind, spread
from keras_retinanet.errors import CalibrationError


def _write_images(folder, count, size=(12, 16)):
    os.makedirs(folder, exist_ok=True)
    paths = []
    for index in range(count):
        path = os.path.join(folder, f"image_{index}.png")
        cv2.imwrite(path, np.full(size + (3,), index * 10, np.uint8))
        paths.append(path)
    return paths


def test_folder_of_images(tmp_path):
    paths = _write_images(str(tmp_path / "photos"), 5)
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    assert calibration_source_kind(tmp_path / "photos") == "folder"
    images = calibration_images(tmp_path / "photos", count=3)
    assert images.paths == [paths[0], paths[2], paths[4]]  # spread over the folder, in order
    loaded = list(images)
    assert len(loaded) == len(images) == 3
    assert all(image.shape == (12, 16, 3) and image.dtype == np.uint8 for image in loaded)
    assert [int(image[0, 0, 0]) for image in loaded] == [0, 20, 40]
    assert len(calibration_images(tmp_path / "photos", count=100)) == 5  # all when there are fewer


def test_csv_uses_each_image_once_whatever_its_classes(shapes_dataset):
    images = calibration_images(shapes_dataset["train"], count=100)
    with open(shapes_dataset["train"]) as file:
        listed = {line.split(",")[0] for line in file if line.strip()}
    assert len(images) == len(listed)
    folder = os.path.dirname(os.path.abspath(shapes_dataset["train"]))
    assert set(images.paths) == {os.path.join(folder, name) for name in listed}
    assert next(iter(images)).ndim == 3


def test_coco_and_pascal_folders(tmp_path):
    coco = tmp_path / "coco"
    _write_images(str(coco / "images" / "train2017"), 2)
    (coco / "annotations").mkdir()
    records = [{"id": i, "file_name": f"image_{i}.png", "width": 16, "height": 12} for i in range(2)]
    (coco / "annotations" / "instances_train2017.json").write_text(
        json.dumps({"images": records, "annotations": [], "categories": [{"id": 1, "name": "thing"}]})
    )
    assert calibration_source_kind(coco) == "coco"
    assert [os.path.basename(p) for p in calibration_image_paths(coco)] == ["image_0.png", "image_1.png"]

    voc = tmp_path / "voc"
    for index in range(3):
        cv2.imwrite(str(_mkdir(voc / "JPEGImages") / f"{index:06d}.jpg"), np.zeros((8, 8, 3), np.uint8))
    (_mkdir(voc / "ImageSets" / "Main") / "trainval.txt").write_text("000000\n000002\n")
    assert calibration_source_kind(voc) == "pascal"
    assert [os.path.basename(p) for p in calibration_image_paths(voc)] == ["000000.jpg", "000002.jpg"]
    with pytest.raises(CalibrationError, match="set 'test'"):
        calibration_image_paths(voc, set_name="test")


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_bad_sources_are_calibration_errors(tmp_path):
    with pytest.raises(CalibrationError, match="calibration data not found: .*missing"):
        calibration_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationError, match="no images in folder .*empty"):
        calibration_images(tmp_path / "empty")
    (tmp_path / "model.keras").write_text("x")
    with pytest.raises(CalibrationError, match="expected a CSV annotations file"):
        calibration_images(tmp_path / "model.keras")
    bad = tmp_path / "bad.csv"
    bad.write_text("a.png,1,2,3\n")
    with pytest.raises(CalibrationError, match="invalid CSV annotations file: .*bad.csv: line 1"):
        calibration_images(bad)
    listed = tmp_path / "listed.csv"
    listed.write_text("gone.png,,,,,\n")
    with pytest.raises(CalibrationError, match="calibration image not found: .*gone.png"):
        calibration_images(listed)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"not a png")
    with pytest.raises(CalibrationError, match="a.png"):
        list(calibration_images(broken))
    with pytest.raises(CalibrationError, match=">= 1"):
        calibration_images(broken, count=0)
    with pytest.raises(CalibrationError, match="COCO and Pascal VOC"):
        calibration_images(broken, set_name="train2017")


def test_spread_keeps_the_ends_and_the_order():
    assert spread(list(range(10)), 4) == [0, 3, 6, 9]
    assert spread([1, 2], 5) == [1, 2]
