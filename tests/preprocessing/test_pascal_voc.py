import os

import cv2
import numpy as np
import pytest

from keras_retinanet.preprocessing.pascal_voc import PascalVocGenerator, voc_classes

CLASSES = {"apple": 0, "pear": 1}


def _object(name, box, truncated=0, difficult=0):
    xmin, ymin, xmax, ymax = box
    return (
        f"<object><name>{name}</name><truncated>{truncated}</truncated><difficult>{difficult}</difficult>"
        f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
    )


def _write(root, annotations, set_name="trainval"):
    for folder in ("ImageSets/Main", "JPEGImages", "Annotations"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    names = sorted(annotations)
    (root / "ImageSets" / "Main" / f"{set_name}.txt").write_text("\n".join(f"{n} 1" for n in names) + "\n\n")
    for name in names:
        cv2.imwrite(str(root / "JPEGImages" / f"{name}.jpg"), np.full((40, 60, 3), 120, np.uint8))
        xml = annotations[name]
        if not xml.startswith("<annotation"):
            xml = f"<annotation><filename>{name}.jpg</filename>{xml}</annotation>"
        (root / "Annotations" / f"{name}.xml").write_text(xml)
    return str(root)


def test_parses_objects_and_flags(tmp_path):
    data_dir = _write(
        tmp_path,
        {
            "000001": _object("pear", (1, 2, 30, 20)) + _object("apple", (10, 10, 20, 20), truncated=1),
            "000002": _object("apple", (5, 5, 15, 15), difficult=1)
            + "<object><name>pear</name><bndbox>"
            + "<xmin>3</xmin><ymin>3</ymin><xmax>9.5</xmax><ymax>9</ymax></bndbox></object>",
        },
    )
    generator = PascalVocGenerator(data_dir, "trainval", classes=CLASSES, group_method="none", shuffle_groups=False)
    assert generator.size() == 2 and generator.num_classes() == 2
    assert generator.label_to_name(generator.name_to_label("pear")) == "pear"
    assert generator.has_name("apple") and not generator.has_label(2)
    first = generator.load_annotations(0)
    # 1-based inclusive pixels -> continuous corners
    np.testing.assert_array_equal(first["bboxes"], [[0, 1, 30, 20], [9, 9, 20, 20]])
    np.testing.assert_array_equal(first["labels"], [1, 0])
    second = generator.load_annotations(1)  # <truncated> and <difficult> may be absent
    np.testing.assert_array_equal(second["bboxes"], [[4, 4, 15, 15], [2, 2, 9.5, 9]])
    assert generator.image_path(0) == os.path.join(data_dir, "JPEGImages", "000001.jpg")
    assert generator.image_aspect_ratio(0) == 1.5
    assert generator.load_image(0).shape == (40, 60, 3)

    skipping = PascalVocGenerator(
        data_dir,
        "trainval",
        classes=CLASSES,
        skip_truncated=True,
        skip_difficult=True,
        group_method="none",
        shuffle_groups=False,
    )
    np.testing.assert_array_equal(skipping.load_annotations(0)["labels"], [1])
    np.testing.assert_array_equal(skipping.load_annotations(1)["labels"], [1])
    assert PascalVocGenerator(data_dir, "trainval", group_method="none").num_classes() == len(voc_classes) == 20


@pytest.mark.parametrize(
    "xml, message",
    [
        (_object("plum", (1, 1, 5, 5)), r"object #0: class name 'plum' not found in classes: \['apple', 'pear'\]"),
        (_object("apple", (1, 1, 5, 5)) + "<object><name>pear</name></object>", "object #1: missing element 'bndbox'"),
        (_object("apple", ("a", 1, 5, 5)), "object #0: illegal value for 'bndbox.xmin'"),
        (
            "<object><name>pear</name><bndbox><xmin>1</xmin><ymin>1</ymin><ymax>2</ymax></bndbox></object>",
            "missing element 'bndbox.xmax'",
        ),
        (_object("apple", (8, 1, 5, 5)), r"object #0: xmax \(5\) must not be lower than xmin \(8\)"),
        ("<annotation><object>", "mismatched tag|no element found|unclosed token"),
    ],
)
def test_bad_xml_names_the_file(tmp_path, xml, message):
    data_dir = _write(tmp_path, {"000007": xml})
    generator = PascalVocGenerator(data_dir, "trainval", classes=CLASSES, group_method="none")
    path = os.path.join(data_dir, "Annotations", "000007.xml")
    with pytest.raises(ValueError, match=f"invalid annotations file: {path}: .*({message})"):
        generator.load_annotations(0)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="Pascal VOC image set file not found: .*ImageSets/Main/test.txt"):
        PascalVocGenerator(str(tmp_path), "test", classes=CLASSES)
    data_dir = _write(tmp_path, {"000003": _object("apple", (1, 1, 5, 5))})
    os.remove(os.path.join(data_dir, "Annotations", "000003.xml"))
    os.remove(os.path.join(data_dir, "JPEGImages", "000003.jpg"))
    generator = PascalVocGenerator(data_dir, "trainval", classes=CLASSES, group_method="none")
    with pytest.raises(FileNotFoundError, match="Pascal VOC annotations file not found: .*Annotations/000003.xml"):
        generator.load_annotations(0)
    with pytest.raises(FileNotFoundError, match="image file not found: .*JPEGImages/000003.jpg"):
        generator.load_image(0)
    with pytest.raises(ValueError, match="class labels must be 0..1"):
        PascalVocGenerator(data_dir, "trainval", classes={"a": 0, "b": 2})
