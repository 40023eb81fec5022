import csv
import io
import os

import cv2
import numpy as np
import pytest

from keras_retinanet.preprocessing.csv_generator import CSVGenerator, _read_annotations, _read_classes
from keras_retinanet.utils import synthetic


def _rows(text):
    return csv.reader(io.StringIO(text))


def _write_dataset(root, annotations, classes="cat,0\ndog,1\n"):
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    for name, (height, width) in {"a.png": (40, 60), "b.png": (50, 50), "c.png": (30, 90)}.items():
        cv2.imwrite(str(images / name), np.full((height, width, 3), 80, np.uint8))
    (root / "annotations.csv").write_text(annotations)
    (root / "classes.csv").write_text(classes)
    return str(root / "annotations.csv"), str(root / "classes.csv")


ANNOTATIONS = (
    "images/a.png,5,6,25,30,cat\n"
    "images/a.png,10.5,2,40,20.25,dog\n"
    "images/b.png,,,,,\n"
    "images/c.png,0,0,90,30,dog\n"
)


def test_parses_dataset_and_round_trips_labels(tmp_path):
    data, classes = _write_dataset(tmp_path, ANNOTATIONS)
    generator = CSVGenerator(data, classes, group_method="none", shuffle_groups=False)
    assert generator.size() == 3 and generator.num_classes() == 2
    assert generator.image_names == ["images/a.png", "images/b.png", "images/c.png"]
    for name, label in (("cat", 0), ("dog", 1)):
        assert generator.name_to_label(name) == label and generator.label_to_name(label) == name
        assert generator.has_name(name) and generator.has_label(label)
    assert not generator.has_label(2) and not generator.has_name("cow")
    a = generator.load_annotations(0)
    np.testing.assert_array_equal(a["bboxes"], [[5, 6, 25, 30], [10.5, 2, 40, 20.25]])
    np.testing.assert_array_equal(a["labels"], [0, 1])
    b = generator.load_annotations(1)
    assert b["bboxes"].shape == (0, 4) and b["labels"].shape == (0,)
    assert generator.image_path(2) == os.path.join(str(tmp_path), "images/c.png")
    assert generator.image_aspect_ratio(2) == 3.0
    assert generator.load_image(0).shape == (40, 60, 3)


def test_base_dir(tmp_path):
    data, classes = _write_dataset(tmp_path / "data", ANNOTATIONS.replace("images/", ""))
    generator = CSVGenerator(data, classes, base_dir=str(tmp_path / "data" / "images"), group_method="none")
    assert generator.load_image(1).shape == (50, 50, 3)


def test_synthetic_dataset_parses_to_the_written_boxes(tmp_path):
    csv_path, records = synthetic.write_split(
        str(tmp_path), "train", num_images=12, image_size=(64, 80), seed=4, empty_fraction=0.3
    )
    classes = synthetic.write_classes(str(tmp_path / "classes.csv"))
    generator = CSVGenerator(csv_path, classes, group_method="none", shuffle_groups=False)
    assert generator.size() == len(records) == 12
    assert any(len(r["boxes"]) == 0 for r in records)
    for index, record in enumerate(records):
        assert os.path.abspath(generator.image_path(index)) == record["path"]
        annotations = generator.load_annotations(index)
        np.testing.assert_array_equal(annotations["bboxes"], record["boxes"].reshape(-1, 4))
        np.testing.assert_array_equal(annotations["labels"], record["labels"])
        for label in record["labels"]:
            assert generator.label_to_name(label) == synthetic.SHAPE_CLASSES[label]


def test_shared_shapes_dataset_fixture(shapes_dataset):
    generator = CSVGenerator(shapes_dataset["train"], shapes_dataset["classes"], image_min_side=128, image_max_side=128)
    inputs, (regression, labels) = generator[0]
    assert inputs.shape == (1, 128, 128, 3) and labels.shape[-1] == 4
    assert (labels[..., -1] == 1).any() or generator.load_annotations(generator.groups[0][0])["bboxes"].size == 0


@pytest.mark.parametrize(
    "text, message",
    [
        ("cat,0\ndog\n", "line 2: format should be 'class_name,class_id'"),
        ("cat,zero\n", "line 1: malformed class ID: invalid literal for int"),
        ("cat,0\ncat,1\n", "line 2: duplicate class name: 'cat'"),
        ("cat,0\ndog,0\n", "line 2: duplicate class ID 0"),
        ("cat,-1\n", "line 1: class ID must be >= 0"),
    ],
)
def test_read_classes_errors(text, message):
    with pytest.raises(ValueError, match=message):
        _read_classes(_rows(text))


def test_read_classes_skips_blank_lines():
    assert dict(_read_classes(_rows("cat,0\n\ndog,1\n"))) == {"cat": 0, "dog": 1}


@pytest.mark.parametrize(
    "text, message",
    [
        ("a.png,1,2,3,4\n", "line 1: format should be 'img_file,x1,y1,x2,y2,class_name'"),
        ("a.png,1,2,3,4,cat\na.png,1,2,3,4,cat,7\n", "line 2: format should be"),
        ("a.png,one,2,3,4,cat\n", "line 1: malformed x1: could not convert string to float: 'one'"),
        ("a.png,1,2,3,,cat\n", "line 1: malformed y2"),
        ("a.png,1,2,nan,4,cat\n", r"line 1: malformed x2: nan is not a finite number"),
        ("a.png,1,2,3,4,cat\na.png,52,10,40,20,cat\n", r"line 2: x2 \(40\) must be higher than x1 \(52\)"),
        ("a.png,1,20,3,20,cat\n", r"line 1: y2 \(20\) must be higher than y1 \(20\)"),
        ("a.png,1,2,3,4,cow\n", "line 1: unknown class name: 'cow'"),
        (",1,2,3,4,cat\n", "line 1: empty image path"),
    ],
)
def test_read_annotations_errors(text, message):
    with pytest.raises(ValueError, match=message):
        _read_annotations(_rows(text), {"cat": 0})


def test_generator_errors_name_the_file_and_line(tmp_path):
    data, classes = _write_dataset(tmp_path, ANNOTATIONS + "images/a.png,52,10,40,20,cat\n")
    with pytest.raises(ValueError) as error:
        CSVGenerator(data, classes)
    assert str(error.value) == f"invalid CSV annotations file: {data}: line 5: x2 (40) must be higher than x1 (52)"

    data, classes = _write_dataset(tmp_path, ANNOTATIONS, classes="cat,0\ndog,x\n")
    with pytest.raises(ValueError, match=f"invalid CSV class file: {classes}: line 2: malformed class ID"):
        CSVGenerator(data, classes)

    data, classes = _write_dataset(tmp_path, ANNOTATIONS)
    with pytest.raises(FileNotFoundError, match=f"CSV annotations file not found: {tmp_path / 'nope.csv'}"):
        CSVGenerator(str(tmp_path / "nope.csv"), classes)


def test_missing_or_unreadable_image_names_its_path(tmp_path):
    data, classes = _write_dataset(tmp_path, ANNOTATIONS + "images/gone.png,1,2,3,4,cat\n")
    missing = os.path.join(str(tmp_path), "images/gone.png")
    with pytest.raises(FileNotFoundError, match=f"image file not found: {missing}"):
        CSVGenerator(data, classes)  # grouping by ratio reads every image's size
    generator = CSVGenerator(data, classes, group_method="none")
    with pytest.raises(FileNotFoundError, match=f"image file not found: {missing}"):
        generator.load_image(3)

    (tmp_path / "images" / "gone.png").write_text("not an image")
    with pytest.raises(OSError, match=f"could not read image {missing}"):
        generator.load_image(3)


def test_unclear_inputs_get_clear_errors(tmp_path):
    """A BOM is fine; Latin-1 is reported by line; empty files and folders are named for what they are."""
    classes = tmp_path / "classes.csv"
    classes.write_bytes("\ufeffcat,0\n".encode("utf-8"))
    annotations = tmp_path / "annotations.csv"
    annotations.write_bytes("\ufeffimages/a.png,1,2,30,40,cat\n".encode("utf-8"))
    generator = CSVGenerator(str(annotations), str(classes), group_method="none")
    assert generator.classes == {"cat": 0} and generator.image_names == ["images/a.png"]

    latin = tmp_path / "latin.csv"
    latin.write_bytes("images/a.png,1,2,30,40,cat\nimages/caf\u00e9.png,1,2,30,40,cat\n".encode("latin-1"))
    with pytest.raises(ValueError) as error:
        CSVGenerator(str(latin), str(classes), group_method="none")
    assert str(error.value) == (
        f"invalid CSV annotations file: {latin}: line 2: not UTF-8 text (byte 0xe9 at column 11); save the file as UTF-8"
    )
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match=f"invalid CSV annotations file: {empty}: no images"):
        CSVGenerator(str(empty), str(classes), group_method="none")
    with pytest.raises(ValueError, match=f"invalid CSV class file: {empty}: no classes"):
        CSVGenerator(str(annotations), str(empty), group_method="none")
    with pytest.raises(ValueError, match=f"invalid CSV class file: {tmp_path} is a folder, not a CSV file"):
        CSVGenerator(str(annotations), str(tmp_path), group_method="none")


def test_duplicate_lines_are_kept_once_with_a_warning(tmp_path):
    classes = tmp_path / "classes.csv"
    classes.write_text("cat,0\n")
    annotations = tmp_path / "annotations.csv"
    annotations.write_text("a.png,1,2,30,40,cat\nb.png,1,2,30,40,cat\na.png,1,2,30,40,cat\na.png,1,2,30,40,cat\n")
    with pytest.warns(UserWarning) as records:
        generator = CSVGenerator(str(annotations), str(classes), group_method="none")
    assert [str(r.message) for r in records] == [
        f"{annotations}: 2 duplicate annotation lines, each box kept once (line 3 repeats line 1, line 4 repeats line 1)"
    ]
    assert generator.duplicate_lines == [(3, 1), (4, 1)]
    assert len(generator.load_annotations(generator.image_names.index("a.png"))["bboxes"]) == 1
