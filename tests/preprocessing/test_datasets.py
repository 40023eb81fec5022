"""generator_from_args: the tools' csv / coco / pascal sub-commands -> one generator."""
from argparse import Namespace

import pytest

from keras_retinanet.preprocessing.coco import CocoGenerator
from keras_retinanet.preprocessing.csv_generator import CSVGenerator
from keras_retinanet.preprocessing.datasets import generator_from_args
from keras_retinanet.preprocessing.pascal_voc import PascalVocGenerator, voc_classes

from . import test_coco, test_pascal_voc


def test_csv_reads_the_given_or_the_default_annotations(shapes_dataset):
    args = Namespace(dataset_type="csv", annotations=shapes_dataset["train"], classes=shapes_dataset["classes"])
    train = generator_from_args(args, group_method="none", shuffle_groups=False)
    val = generator_from_args(args, annotations=shapes_dataset["val"], batch_size=2, shuffle_groups=False)
    assert isinstance(train, CSVGenerator) and isinstance(val, CSVGenerator)
    assert train.num_classes() == val.num_classes() == 3
    assert all(name.startswith("images/train_") for name in train.image_names)
    assert all(name.startswith("images/val_") for name in val.image_names)
    assert val.batch_size == 2


def test_coco_reads_the_named_set(tmp_path):
    test_coco._write(tmp_path, set_name="val2017")
    args = Namespace(dataset_type="coco", coco_path=str(tmp_path), set_name="val2017")
    generator = generator_from_args(args, group_method="none", shuffle_groups=False)
    assert isinstance(generator, CocoGenerator)
    assert generator.size() == 2 and sorted(generator.classes) == ["cat", "dog"]
    with pytest.raises(FileNotFoundError, match="instances_train2017.json"):
        generator_from_args(args, set_name="train2017")


def test_pascal_reads_the_named_set_with_the_extension(tmp_path):
    xml = test_pascal_voc._object("dog", (1, 2, 30, 20))
    test_pascal_voc._write(tmp_path, {"000001": xml}, set_name="test")
    args = Namespace(dataset_type="pascal", pascal_path=str(tmp_path), set_name="test", image_extension=".jpg")
    generator = generator_from_args(args, group_method="none", shuffle_groups=False)
    assert isinstance(generator, PascalVocGenerator)
    assert generator.size() == 1 and generator.num_classes() == len(voc_classes)
    assert generator.load_annotations(0)["labels"].tolist() == [voc_classes["dog"]]


def test_unknown_dataset_type():
    with pytest.raises(
        ValueError, match=r"unknown dataset type 'voc'; expected one of \['csv', 'coco', 'pascal', 'kitti', 'oid'\]"
    ):
        generator_from_args(Namespace(dataset_type="voc"))


def test_kitti_and_oid_sub_commands_build_their_generators(tmp_path):
    import argparse

    from keras_retinanet.preprocessing.datasets import add_dataset_subparsers, dataset_inputs
    from keras_retinanet.preprocessing.kitti import KittiGenerator
    from keras_retinanet.preprocessing.open_images import OpenImagesGenerator

    from .test_kitti import write_kitti
    from .test_open_images import write_oid

    parser = argparse.ArgumentParser()
    add_dataset_subparsers(parser)
    kitti = parser.parse_args(["kitti", write_kitti(tmp_path / "kitti", subset="val")])
    assert dataset_inputs(kitti) == [("KITTI folder", str(tmp_path / "kitti"), True)]
    generator = generator_from_args(kitti, set_name="val", group_method="none")
    assert isinstance(generator, KittiGenerator) and generator.size() == 2 and generator.subset == "val"

    oid = parser.parse_args(["oid", write_oid(tmp_path / "oid"), "--labels-filter", "Cat,Dog",
                             "--annotation-cache-dir", str(tmp_path / "cache"), "--version", "v4"])  # fmt: skip
    assert (oid.labels_filter, oid.parent_label, oid.version) == (["Cat", "Dog"], None, "v4")
    assert dataset_inputs(oid) == [("Open Images folder", str(tmp_path / "oid"), True)]
    with pytest.warns(UserWarning):
        generator = generator_from_args(oid, set_name="train", group_method="none")
    assert isinstance(generator, OpenImagesGenerator) and generator.num_classes() == 2
    assert [generator.label_to_name(label) for label in (0, 1)] == ["Cat", "Dog"]
    with pytest.raises(ValueError, match="no set name given for the kitti dataset"):
        generator_from_args(kitti)


def test_coco_and_pascal_need_a_set_name(tmp_path):
    for args in (
        Namespace(dataset_type="coco", coco_path=str(tmp_path)),
        Namespace(dataset_type="pascal", pascal_path=str(tmp_path), image_extension=".jpg"),
    ):
        with pytest.raises(ValueError, match=f"no set name given for the {args.dataset_type} dataset"):
            generator_from_args(args)
