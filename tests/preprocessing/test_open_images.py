"""OpenImagesGenerator on tiny datasets in Open Images' real layouts (v4, challenge2018, v3)."""
import json
import os

import cv2
import numpy as np
import pytest

from keras_retinanet.preprocessing import open_images
from keras_retinanet.preprocessing.open_images import OpenImagesGenerator

HEADER = "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside"
# real label ids (MIDs) and descriptions of class-descriptions-boxable.csv; one with quotes
CLASSES = [("/m/0cmf2", "Airplane"), ("/m/0jbk", "Animal"), ("/m/01yrx", "Cat"), ("/m/0bt9lr", "Dog"),
           ("/m/0199g", "Bicycle"), ("/m/014j1m", '"Apple"')]  # fmt: skip
HIERARCHY = {
    "LabelName": "/m/0bl9f",
    "Subcategory": [
        {"LabelName": "/m/0cmf2"},
        {"LabelName": "/m/0jbk", "Subcategory": [{"LabelName": "/m/01yrx"}, {"LabelName": "/m/0bt9lr"}]},
        {"LabelName": "/m/0199g"},
        {"LabelName": "/m/014j1m"},
    ],
}
SIZES = {"000026e7ee790996": (100, 200), "000062a39995e348": (50, 80), "0000c64e1253d68f": (60, 60)}  # (h, w)
BOXES = [  # image, class, XMin, XMax, YMin, YMax
    ("000026e7ee790996", "/m/0cmf2", 0.1, 0.5, 0.2, 0.6),
    ("000026e7ee790996", "/m/01yrx", 0.0, 1.0, 0.0, 1.0),
    ("000062a39995e348", "/m/0bt9lr", 0.25, 0.75, 0.1, 0.9),
    ("0000c64e1253d68f", "/m/0199g", 0.5, 0.6, 0.5, 0.6),
    ("0000c64e1253d68f", "/m/0199g", 0.5, 0.505, 0.1, 0.2),  # rounds to one pixel column: left out
    ("ffff00000000aaaa", "/m/0cmf2", 0.1, 0.2, 0.1, 0.2),  # image not downloaded: left out
    ("000062a39995e348", "/m/0unknown", 0.1, 0.2, 0.1, 0.2),  # not a class of the list: skipped
]


def _box_line(image, label, x1, x2, y1, y2):
    return f"{image},xclick,{label},1,{x1},{x2},{y1},{y2},0,0,0,0,0"


def write_oid(root, boxes=BOXES, subset="train", version="v4", sizes=SIZES):
    """A dataset folder in the layout of ``version``; returns its path."""
    metadata = open_images.metadata_dir(str(root), version)
    os.makedirs(metadata, exist_ok=True)
    files = open_images.OID_VERSIONS[version]
    lines = "\n".join(f"{mid},{name}" for mid, name in CLASSES) + "\n"
    if version == "v3":
        with open(os.path.join(metadata, files["trainable"]), "w") as file:
            file.write("\n".join(mid for mid, _ in CLASSES) + "\n")
        lines = "/m/0extra,Extra class\n" + lines  # class-descriptions.csv lists more than the trainable ones
    with open(os.path.join(metadata, files["classes"]), "w") as file:
        file.write(lines)
    with open(os.path.join(metadata, files["hierarchy"]), "w") as file:
        json.dump(HIERARCHY, file)
    path = open_images.annotations_path(metadata, subset, version)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as file:
        file.write(HEADER + "\n" + "\n".join(_box_line(*box) for box in boxes) + "\n")
    image_dir = open_images.images_dir(str(root), subset, version)
    os.makedirs(image_dir, exist_ok=True)
    for image_id, (height, width) in sizes.items():
        cv2.imwrite(os.path.join(image_dir, image_id + ".jpg"), np.full((height, width, 3), 128, np.uint8))
    return str(root)


def _generator(root, cache, **kwargs):
    return OpenImagesGenerator(root, "train", annotation_cache_dir=str(cache), group_method="none",
                               shuffle_groups=False, **kwargs)  # fmt: skip


def test_reads_boxes_in_pixels_labels_and_names(tmp_path):
    root = write_oid(tmp_path / "oid")
    with pytest.warns(UserWarning) as warned:
        generator = _generator(root, tmp_path)
    messages = [str(w.message) for w in warned]
    assert any("1 images are not in" in m and "ffff00000000aaaa.jpg" in m for m in messages)
    assert any("1 boxes left out, their corners round to the same pixel (lines 6)" in m for m in messages)
    assert generator.size() == 3 and generator.num_classes() == 6
    assert [generator.label_to_name(label) for label in range(6)] == [
        "Airplane", "Animal", "Cat", "Dog", "Bicycle", "Apple"]  # quotes removed, as fizyr
    assert generator.name_to_label("Dog") == 3 and generator.has_name("Cat") and not generator.has_label(6)
    assert generator.image_path(0) == os.path.join(root, "images", "train", "000026e7ee790996.jpg")
    assert generator.image_aspect_ratio(0) == 2.0 and generator.image_size(1) == (50, 80)

    first = generator.load_annotations(0)
    np.testing.assert_allclose(first["bboxes"], [[20, 20, 100, 60], [0, 0, 200, 100]])
    assert first["labels"].tolist() == [0, 2] and first["labels"].dtype == np.int64
    np.testing.assert_allclose(generator.load_annotations(1)["bboxes"], [[20, 5, 60, 45]])
    np.testing.assert_allclose(generator.load_annotations(2)["bboxes"], [[30, 30, 36, 36]])
    assert generator.load_image(0).shape == (100, 200, 3)

    # fizyr's attributes
    assert generator.id_to_image_id == {0: "000026e7ee790996", 1: "000062a39995e348", 2: "0000c64e1253d68f"}
    assert generator.annotations["000062a39995e348"] == {
        "w": 80, "h": 50, "boxes": [{"cls_id": 3, "x1": 0.25, "x2": 0.75, "y1": 0.1, "y2": 0.9}]}  # fmt: skip
    assert generator.hierarchy == HIERARCHY


def test_annotation_cache_is_fizyrs_file_and_is_read_back(tmp_path):
    root = write_oid(tmp_path / "oid")
    with pytest.warns(UserWarning):
        first = _generator(root, tmp_path / "cache")
    cache = tmp_path / "cache" / "train.json"
    assert json.loads(cache.read_text()) == first.annotations
    os.remove(open_images.annotations_path(open_images.metadata_dir(root), "train"))  # the cache is enough now
    second = _generator(root, tmp_path / "cache")
    assert second.annotations == first.annotations and second.size() == 3

    cache.write_text('{"000026e7ee790996": {"w": 10, "h": 10, "boxes": [{"cls_id": 9, "x1": 0, "x2": 1, "y1": 0, "y2": 1}]}}')
    with pytest.raises(ValueError) as error:
        _generator(root, tmp_path / "cache")
    assert str(error.value) == (
        f"invalid Open Images annotation cache: {cache}: image '000026e7ee790996': boxes[0]: cls_id 9 is not a "
        "label 0..5 (delete it to read the annotations again)"
    )
    cache.write_text("{not json")
    with pytest.raises(ValueError, match=r"invalid Open Images annotation cache: .*train.json: Expecting"):
        _generator(root, tmp_path / "cache")


def test_labels_filter_and_parent_label(tmp_path):
    root = write_oid(tmp_path / "oid")
    with pytest.warns(UserWarning):
        filtered = _generator(root, tmp_path, labels_filter=["Dog", "Airplane"])
    assert [filtered.label_to_name(label) for label in range(filtered.num_classes())] == ["Dog", "Airplane"]
    assert filtered.size() == 2  # the bicycle image has no box left
    assert filtered.load_annotations(0)["labels"].tolist() == [1]  # the airplane; the cat is gone
    assert filtered.load_annotations(1)["labels"].tolist() == [0]

    animals = _generator(root, tmp_path, parent_label="Animal")  # read from the cache written above
    assert [animals.label_to_name(label) for label in range(animals.num_classes())] == ["Animal", "Cat", "Dog"]
    assert animals.size() == 2
    assert animals.load_annotations(0)["labels"].tolist() == [1] and animals.load_annotations(1)["labels"].tolist() == [2]

    with pytest.raises(ValueError, match=r"labels filter: 'Helmet' not among the classes \(e.g. Airplane, Animal"):
        _generator(root, tmp_path, labels_filter=["Dog", "Helmet"])
    with pytest.raises(ValueError, match="parent label 'Mammal' is not among the classes"):
        _generator(root, tmp_path, parent_label="Mammal")
    with pytest.warns(UserWarning, match="parent_label is given, labels_filter is ignored"):
        both = _generator(root, tmp_path, parent_label="Animal", labels_filter=["Dog"])
    assert both.num_classes() == 3


def test_challenge2018_subsets_and_v3(tmp_path):
    root = write_oid(tmp_path / "challenge", version="challenge2018")
    ids = os.path.join(open_images.metadata_dir(root, "challenge2018"), open_images.CHALLENGE_VALIDATION_IDS)
    with open(ids, "w") as file:
        file.write("ImageID\n000062a39995e348\n")
    with pytest.warns(UserWarning):
        train = OpenImagesGenerator(root, "train", version="challenge2018", annotation_cache_dir=str(tmp_path / "c"),
                                    group_method="none", shuffle_groups=False)  # fmt: skip
        validation = OpenImagesGenerator(root, "validation", version="challenge2018",
                                         annotation_cache_dir=str(tmp_path / "c"), group_method="none")  # fmt: skip
    assert list(train.annotations) == ["000026e7ee790996", "0000c64e1253d68f"]
    assert list(validation.annotations) == ["000062a39995e348"]
    assert validation.image_path(0) == os.path.join(root, "images", "train", "000062a39995e348.jpg")
    with pytest.raises(ValueError, match=r"challenge2018 has the subsets \['train', 'validation'\], not 'test'"):
        OpenImagesGenerator(root, "test", version="challenge2018", annotation_cache_dir=str(tmp_path / "c"))

    v3 = write_oid(tmp_path / "v3", version="v3")
    with pytest.warns(UserWarning):
        generator = OpenImagesGenerator(v3, "train", version="v3", annotation_cache_dir=str(tmp_path / "c3"))
    assert generator.num_classes() == 6 and generator.label_to_name(0) == "Airplane"  # trainable classes only
    with pytest.raises(ValueError, match=r"unknown Open Images version 'v2'; expected one of \['v4', 'challenge2018', 'v3'\]"):
        OpenImagesGenerator(v3, "train", version="v2")


@pytest.mark.parametrize(
    "line, message",
    [
        ("000026e7ee790996,xclick,/m/0cmf2,1,0.5,0.4,0.2,0.6,0,0,0,0,0", "line 3: XMax (0.4) must be higher than XMin (0.5)"),
        ("000026e7ee790996,xclick,/m/0cmf2,1,0.1,0.4,0.6,0.6,0,0,0,0,0", "line 3: YMax (0.6) must be higher than YMin (0.6)"),
        ("000026e7ee790996,xclick,/m/0cmf2,1,0.1,x,0.2,0.6,0,0,0,0,0", "line 3: malformed XMax: 'x' is not a finite number"),
        ("000026e7ee790996,xclick,/m/0cmf2,1,0.1", "line 3: expected 13 columns as the header, got 5"),
    ],
)
def test_bad_annotation_lines_name_file_and_line(tmp_path, line, message):
    root = write_oid(tmp_path / "oid", boxes=BOXES[:1])
    path = open_images.annotations_path(open_images.metadata_dir(root), "train")
    with open(path, "a") as file:
        file.write(line + "\n")
    with pytest.raises(ValueError) as error:
        _generator(root, tmp_path)
    assert str(error.value) == f"invalid Open Images annotations file: {path}: {message}"
    assert not os.path.exists(tmp_path / "train.json")  # no cache of a file that failed


def test_bad_metadata_files_are_named(tmp_path):
    root = write_oid(tmp_path / "oid")
    metadata = open_images.metadata_dir(root)
    classes = os.path.join(metadata, "class-descriptions-boxable.csv")
    with open(classes, "a") as file:
        file.write("/m/0cmf2,Airplane again\n")
    with pytest.raises(ValueError) as error:
        _generator(root, tmp_path)
    assert str(error.value) == (f"invalid Open Images class descriptions file: {classes}: line 7: duplicate label id "
                                "'/m/0cmf2' (also on line 1)")  # fmt: skip
    os.remove(classes)
    with pytest.raises(FileNotFoundError, match=r"Open Images class descriptions file not found: .*boxable.csv"):
        _generator(root, tmp_path)

    root = write_oid(tmp_path / "oid2")
    path = open_images.annotations_path(open_images.metadata_dir(root), "train")
    with open(path, "w") as file:
        file.write("ImageID,LabelName,XMin,XMax\n")
    with pytest.raises(ValueError, match=r"train-annotations-bbox.csv: line 1: the header has no YMin, YMax column"):
        _generator(root, tmp_path)
    with open(os.path.join(open_images.metadata_dir(root), "bbox_labels_600_hierarchy.json"), "w") as file:
        file.write('{"LabelName": "/m/0bl9f", "Subcategory": {"LabelName": "x"}}')
    with pytest.raises(ValueError, match=r"hierarchy.json: 'Subcategory' of /m/0bl9f must be a list"):
        _generator(root, tmp_path)


def test_a_training_batch(tmp_path):
    root = write_oid(tmp_path / "oid")
    with pytest.warns(UserWarning):
        generator = OpenImagesGenerator(root, "train", annotation_cache_dir=str(tmp_path), batch_size=3,
                                        image_min_side=64, image_max_side=128, group_method="none")  # fmt: skip
    inputs, (regression, labels) = generator[0]
    assert inputs.shape == (3, 64, 128, 3) and labels.shape[-1] == 6 + 1  # padded to multiples of 32
    assert (labels[..., -1] == 1).any()  # some anchors are positive
