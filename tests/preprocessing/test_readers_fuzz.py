"""Random and mutated bytes fed to every reader of user files: a dataset, or one line naming the file.

The readers of annotations.csv, classes.csv, config.ini, Pascal VOC (image set and XML
annotations), COCO json, KITTI label files and Open Images (annotations, class
descriptions, annotation cache) get random bytes, and valid files with bytes flipped,
inserted, deleted or cut. The only acceptable outcomes are a parsed result or a
``ValueError`` whose message is one line and names the file; anything else (another
exception, a traceback from deep inside, a message without the file) fails the test.
"""
import json
import os
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_retinanet.preprocessing.coco import CocoGenerator
from keras_retinanet.preprocessing.csv_generator import CSVGenerator
from keras_retinanet.preprocessing.pascal_voc import PascalVocGenerator
from keras_retinanet.utils.config import parse_anchor_parameters, parse_pyramid_levels, read_config_file

EXAMPLES = 300  # per reader (random bytes and mutated valid files, mixed)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

VALID_CSV = b"images/a.png,10,20,50,60,cat\nimages/a.png,5,5,40,45,dog\nimages/b.png,,,,,\nimages/c.jpg,0,0,1.5,2.5,cat\n"
VALID_CLASSES = b"cat,0\ndog,1\n"
VALID_CONFIG = b"""[anchor_parameters]
sizes   = 32 64 128 256 512
strides = 8 16 32 64 128
ratios  = 0.5 1 2
scales  = 1 1.2 1.6

[pyramid_levels]
levels = 3 4 5 6 7
"""
VALID_VOC_XML = b"""<annotation><filename>a.jpg</filename><size><width>100</width><height>80</height></size>
<object><name>cat</name><truncated>0</truncated><difficult>0</difficult>
<bndbox><xmin>10</xmin><ymin>20</ymin><xmax>50</xmax><ymax>60</ymax></bndbox></object></annotation>
"""
VALID_COCO = json.dumps({
    "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}],
    "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 20, 40, 40]}],
}).encode()


@st.composite
def mutated(draw, valid):
    """``valid`` with a few bytes flipped, inserted or deleted, or cut short."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[position] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=6))
        elif kind == "delete" and data:
            del data[position : position + draw(st.integers(1, 6))]
        elif kind == "cut":
            del data[position:]
    return bytes(data)


def inputs(valid):
    return st.one_of(st.binary(max_size=300), mutated(valid))


def assert_clean(error, path):
    message = str(error)
    assert isinstance(error, ValueError), f"{type(error).__name__}: {message}"
    assert "\n" not in message.strip(), message
    assert str(path) in message, message


@pytest.fixture()
def folder(tmp_path):
    return tmp_path


def _write(path, data):
    with open(path, "wb") as file:
        file.write(data)
    return str(path)


@FUZZ
@given(data=inputs(VALID_CSV))
def test_annotations_csv(folder, data):
    classes = _write(folder / "classes.csv", VALID_CLASSES)
    path = _write(folder / "annotations.csv", data)
    try:
        generator = CSVGenerator(path, classes, group_method="none", shuffle_groups=False)
    except Exception as error:  # noqa: BLE001 - the assertion says which kinds are fine
        assert_clean(error, path)
        return
    for index in range(generator.size()):
        annotations = generator.load_annotations(index)
        assert annotations["bboxes"].shape == (len(annotations["labels"]), 4)


@FUZZ
@given(data=inputs(VALID_CLASSES))
def test_classes_csv(folder, data):
    annotations = _write(folder / "annotations.csv", b"images/b.png,,,,,\n")
    path = _write(folder / "classes.csv", data)
    try:
        generator = CSVGenerator(annotations, path, group_method="none", shuffle_groups=False)
    except Exception as error:  # noqa: BLE001
        assert_clean(error, path)
        return
    assert generator.num_classes() >= 1


@FUZZ
@given(data=inputs(VALID_CONFIG))
def test_config_ini(folder, data):
    path = _write(folder / "config.ini", data)
    try:
        config = read_config_file(path)
        if "anchor_parameters" in config:
            parse_anchor_parameters(config)
        if "pyramid_levels" in config:
            parse_pyramid_levels(config)
    except Exception as error:  # noqa: BLE001
        assert_clean(error, path)


def _voc(folder, set_file, xml):
    root = folder / "VOC"
    shutil.rmtree(root, ignore_errors=True)
    for sub in ("ImageSets/Main", "Annotations", "JPEGImages"):
        os.makedirs(root / sub)
    _write(root / "ImageSets" / "Main" / "trainval.txt", set_file)
    return root, _write(root / "Annotations" / "a.xml", xml)


@FUZZ
@given(data=inputs(VALID_VOC_XML))
def test_pascal_voc_annotations(folder, data):
    root, path = _voc(folder, b"a\n", data)
    generator = PascalVocGenerator(str(root), "trainval", classes={"cat": 0, "dog": 1}, group_method="none",
                                   shuffle_groups=False)  # fmt: skip
    try:
        annotations = generator.load_annotations(0)
    except Exception as error:  # noqa: BLE001
        assert_clean(error, path)
        return
    assert annotations["bboxes"].shape == (len(annotations["labels"]), 4)


@FUZZ
@given(data=inputs(b"a\nb\n"))
def test_pascal_voc_image_set(folder, data):
    root, _ = _voc(folder, data, VALID_VOC_XML)
    path = root / "ImageSets" / "Main" / "trainval.txt"
    try:
        PascalVocGenerator(str(root), "trainval", classes={"cat": 0}, group_method="none", shuffle_groups=False)
    except Exception as error:  # noqa: BLE001
        assert_clean(error, path)


@FUZZ
@given(data=inputs(VALID_COCO))
def test_coco_json(folder, data):
    root = folder / "coco"
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root / "annotations")
    path = _write(root / "annotations" / "instances_val.json", data)
    try:
        generator = CocoGenerator(str(root), "val", group_method="none", shuffle_groups=False)
    except Exception as error:  # noqa: BLE001
        assert_clean(error, path)
        return
    for index in range(generator.size()):
        annotations = generator.load_annotations(index)
        assert annotations["bboxes"].shape == (len(annotations["labels"]), 4)


VALID_KITTI = (b"Car 0.00 0 1.85 387.63 181.54 423.81 203.12 1.67 1.87 3.69 -16.53 2.39 58.49 1.57\n"
               b"DontCare -1 -1 -10 503.89 169.71 590.61 190.13 -1 -1 -1 -1000 -1000 -1000 -10\n")  # fmt: skip


@FUZZ
@given(data=inputs(VALID_KITTI))
def test_kitti_labels(folder, data):
    from keras_retinanet.preprocessing.kitti import KittiGenerator

    root = folder / "kitti"
    os.makedirs(root / "train" / "labels", exist_ok=True)
    path = _write(root / "train" / "labels" / "000000.txt", data)
    try:
        generator = KittiGenerator(str(root), group_method="none", shuffle_groups=False)
    except Exception as error:  # noqa: BLE001
        assert_clean(error, path)
        return
    annotations = generator.load_annotations(0)
    assert annotations["bboxes"].shape == (len(annotations["labels"]), 4)


def _oid(folder):
    import warnings

    from tests.preprocessing.test_open_images import write_oid

    root = folder / "oid"
    if not root.exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            write_oid(root)
    return root


def _open_images(root, folder, files):
    import warnings

    from keras_retinanet.preprocessing.open_images import OpenImagesGenerator

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # images left out (fizyr's behaviour, with a warning)
            generator = OpenImagesGenerator(str(root), "train", annotation_cache_dir=str(folder / "cache"),
                                            group_method="none", shuffle_groups=False)  # fmt: skip
    except Exception as error:  # noqa: BLE001
        message = str(error)
        assert isinstance(error, ValueError), f"{type(error).__name__}: {message}"
        assert "\n" not in message.strip() and any(str(path) in message for path in files), message
        return
    for index in range(generator.size()):
        annotations = generator.load_annotations(index)
        assert annotations["bboxes"].shape == (len(annotations["labels"]), 4)


VALID_OID = (b"ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,"
             b"IsInside\n000026e7ee790996,xclick,/m/0cmf2,1,0.1,0.5,0.2,0.6,0,0,0,0,0\n"
             b"000062a39995e348,xclick,/m/0bt9lr,1,0.25,0.75,0.1,0.9,0,0,0,0,0\n")  # fmt: skip


@FUZZ
@given(data=inputs(VALID_OID))
def test_open_images_annotations(folder, data):
    root = _oid(folder)
    shutil.rmtree(folder / "cache", ignore_errors=True)
    path = _write(root / "2018_04" / "train" / "train-annotations-bbox.csv", data)
    _open_images(root, folder, [path])


@FUZZ
@given(data=inputs(b"/m/0cmf2,Airplane\n/m/0jbk,Animal\n/m/01yrx,Cat\n/m/0bt9lr,Dog\n"))
def test_open_images_class_descriptions(folder, data):
    root = _oid(folder)
    shutil.rmtree(folder / "cache", ignore_errors=True)
    path = _write(root / "2018_04" / "class-descriptions-boxable.csv", data)
    _open_images(root, folder, [path, root / "2018_04" / "train" / "train-annotations-bbox.csv"])


@FUZZ
@given(data=inputs(json.dumps({"000026e7ee790996": {"w": 200, "h": 100, "boxes": [
    {"cls_id": 0, "x1": 0.1, "x2": 0.5, "y1": 0.2, "y2": 0.6}]}}).encode()))  # fmt: skip
def test_open_images_annotation_cache(folder, data):
    root = _oid(folder)
    os.makedirs(folder / "cache", exist_ok=True)
    path = _write(folder / "cache" / "train.json", data)
    _open_images(root, folder, [path])
