import copy
import json
import os

import cv2
import numpy as np
import pytest

from keras_retinanet.preprocessing.coco import CocoGenerator

DATASET = {
    "images": [
        {"id": 11, "file_name": "one.jpg", "width": 60, "height": 40},
        {"id": 12, "file_name": "two.jpg", "width": 50, "height": 50},
    ],
    "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
    "annotations": [
        {"id": 1, "image_id": 11, "category_id": 7, "bbox": [5, 6, 20, 10], "iscrowd": 0, "area": 200},
        {"id": 2, "image_id": 11, "category_id": 3, "bbox": [30, 2, 10.5, 8], "iscrowd": 0, "area": 84},
        {"id": 3, "image_id": 11, "category_id": 3, "bbox": [0, 0, 60, 40], "iscrowd": 1, "area": 2400},
        {"id": 4, "image_id": 11, "category_id": 7, "bbox": [8, 8, 0.5, 10], "iscrowd": 0, "area": 5},
        {"id": 5, "image_id": 12, "category_id": 7, "bbox": [1, 1, 48, 48], "iscrowd": 0, "area": 2304},
    ],
}


def _write(root, dataset=DATASET, set_name="val"):
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    images = root / "images" / set_name
    images.mkdir(parents=True, exist_ok=True)
    for image in dataset["images"]:
        if "file_name" not in image:
            continue
        cv2.imwrite(str(images / image["file_name"]), np.full((image["height"], image["width"], 3), 90, np.uint8))
    path = root / "annotations" / f"instances_{set_name}.json"
    path.write_text(json.dumps(dataset))
    return str(path)


def test_parses_and_maps_category_ids(tmp_path):
    _write(tmp_path)
    generator = CocoGenerator(str(tmp_path), "val", group_method="none", shuffle_groups=False)
    assert generator.size() == 2 and generator.num_classes() == 2
    assert generator.image_ids == [11, 12]
    # contiguous labels in increasing category id order: cat (3) -> 0, dog (7) -> 1
    assert generator.name_to_label("cat") == 0 and generator.label_to_name(1) == "dog"
    assert generator.coco_label_to_label(7) == 1 and generator.label_to_coco_label(0) == 3
    assert generator.coco_label_to_name(3) == "cat"
    assert generator.has_label(1) and not generator.has_label(2) and generator.has_name("dog")
    annotations = generator.load_annotations(0)  # crowd and 0.5 px wide boxes skipped
    np.testing.assert_allclose(annotations["bboxes"], [[5, 6, 25, 16], [30, 2, 40.5, 10]])
    np.testing.assert_array_equal(annotations["labels"], [1, 0])
    assert generator.image_path(1) == os.path.join(str(tmp_path), "images", "val", "two.jpg")
    assert generator.image_aspect_ratio(0) == 1.5
    assert generator.load_image(1).shape == (50, 50, 3)
    inputs, (regression, labels) = generator[0]
    assert labels.shape[-1] == 3 and (labels[0, :, -1] == 1).any()


def _broken(change):
    dataset = copy.deepcopy(DATASET)
    change(dataset)
    return dataset


@pytest.mark.parametrize(
    "dataset, message",
    [
        (_broken(lambda d: d.pop("categories")), "missing list 'categories'"),
        (_broken(lambda d: d["images"][1].pop("file_name")), r"images\[1\] misses file_name"),
        (
            _broken(lambda d: d["annotations"][2].update(bbox=[1, 2, 3])),
            r"annotations\[2\] \(id 3\): bbox must be 4 numbers",
        ),
        (
            _broken(lambda d: d["annotations"][0].update(category_id=5)),
            r"annotations\[0\] \(id 1\): unknown category_id 5",
        ),
        (_broken(lambda d: d["annotations"][4].update(image_id=99)), r"annotations\[4\] \(id 5\): unknown image_id 99"),
        (
            _broken(lambda d: d["categories"].append({"id": 3, "name": "bird"})),
            r"categories\[2\]: duplicate category id 3",
        ),
    ],
)
def test_bad_annotation_files_are_named(tmp_path, dataset, message):
    path = _write(tmp_path, dataset)
    with pytest.raises(ValueError, match=f"invalid COCO annotations file: {path}: {message}"):
        CocoGenerator(str(tmp_path), "val")


def test_missing_and_malformed_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="COCO annotations file not found: .*instances_train.json"):
        CocoGenerator(str(tmp_path), "train")
    path = _write(tmp_path)
    with open(path, "w") as f:
        f.write('{"images": [}')
    with pytest.raises(ValueError, match=f"invalid COCO annotations file: {path}: Expecting value: line 1 column 13"):
        CocoGenerator(str(tmp_path), "val")


def test_missing_image_names_its_path(tmp_path):
    _write(tmp_path)
    os.remove(tmp_path / "images" / "val" / "two.jpg")
    generator = CocoGenerator(str(tmp_path), "val", group_method="none")
    with pytest.raises(FileNotFoundError, match="image file not found: .*images/val/two.jpg"):
        generator.load_image(1)
