"""KittiGenerator on a tiny dataset in KITTI's real layout and label format."""
import os

import cv2
import numpy as np
import pytest

from keras_retinanet.preprocessing.kitti import KittiGenerator, kitti_classes, read_kitti_labels

# Real KITTI label lines (training/label_2/000000.txt and 000001.txt), 15 columns each.
LABELS = {
    "000000": "Pedestrian 0.00 0 -0.20 712.40 143.00 810.73 307.92 1.89 0.48 1.20 1.84 1.47 8.41 0.01\n",
    "000001": (
        "Truck 0.00 0 -1.57 599.41 156.40 629.75 189.25 2.85 2.63 12.34 0.47 1.49 69.44 -1.56\n"
        "Car 0.00 0 1.85 387.63 181.54 423.81 203.12 1.67 1.87 3.69 -16.53 2.39 58.49 1.57\n"
        "Cyclist 0.00 3 -1.65 676.60 163.95 688.98 193.93 1.86 0.60 2.02 4.59 1.32 45.84 -1.55\n"
        "DontCare -1 -1 -10 503.89 169.71 590.61 190.13 -1 -1 -1 -1000 -1000 -1000 -10\n"
        "\n"
    ),
}
IMAGE_SHAPE = (375, 1242, 3)  # KITTI's image size


def write_kitti(root, labels=LABELS, subset="train", image_shape=IMAGE_SHAPE):
    """``root/<subset>/labels/<name>.txt`` and ``root/<subset>/images/<name>.png``."""
    for folder in ("labels", "images"):
        os.makedirs(os.path.join(root, subset, folder), exist_ok=True)
    for name, text in labels.items():
        with open(os.path.join(root, subset, "labels", name + ".txt"), "w") as file:
            file.write(text)
        cv2.imwrite(os.path.join(root, subset, "images", name + ".png"), np.full(image_shape, 90, np.uint8))
    return str(root)


def test_reads_boxes_labels_and_class_names(tmp_path):
    base = write_kitti(tmp_path)
    generator = KittiGenerator(base, subset="train", group_method="none", shuffle_groups=False)
    assert generator.size() == 2
    assert generator.num_classes() == 8  # Misc and DontCare share label 7, as in fizyr
    assert [generator.label_to_name(label) for label in range(8)] == [
        "Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "DontCare",
    ]  # fmt: skip
    assert generator.name_to_label("Misc") == generator.name_to_label("DontCare") == 7
    assert generator.image_path(1) == os.path.join(base, "train", "images", "000001.png")
    assert generator.image_aspect_ratio(0) == pytest.approx(1242 / 375)

    first = generator.load_annotations(0)
    np.testing.assert_allclose(first["bboxes"], [[712.40, 143.00, 810.73, 307.92]])
    assert first["labels"].tolist() == [3]
    second = generator.load_annotations(1)
    np.testing.assert_allclose(
        second["bboxes"],
        [[599.41, 156.40, 629.75, 189.25], [387.63, 181.54, 423.81, 203.12],
         [676.60, 163.95, 688.98, 193.93], [503.89, 169.71, 590.61, 190.13]],
    )  # fmt: skip
    assert second["labels"].tolist() == [2, 0, 5, 7]
    assert second["bboxes"].dtype == np.float64 and second["labels"].dtype == np.int64
    assert generator.load_image(1).shape == IMAGE_SHAPE


def test_training_batch_through_the_shared_per_image_step(tmp_path):
    generator = KittiGenerator(write_kitti(tmp_path), image_min_side=100, image_max_side=400, batch_size=2,
                               group_method="none", shuffle_groups=False)  # fmt: skip
    entry = generator.load_training_image(1)
    scale = 100 / 375  # the short side to min_side (the long side, 331, stays below max_side)
    assert entry.image.shape == (100, 331, 3) and entry.image.dtype == np.float32
    np.testing.assert_allclose(entry.annotations["bboxes"][0], np.array([599.41, 156.40, 629.75, 189.25]) * scale,
                               rtol=1e-3)  # fmt: skip
    inputs, (regression, labels) = generator[0]
    assert inputs.shape == (2, 128, 352, 3)  # padded to multiples of 32
    assert regression.shape[:2] == labels.shape[:2] and labels.shape[2] == 8 + 1


def test_subsets_and_missing_folders(tmp_path):
    base = write_kitti(tmp_path, {"000007": LABELS["000000"]}, subset="val")
    assert KittiGenerator(base, subset="val").size() == 1
    with pytest.raises(FileNotFoundError, match=r"KITTI labels folder not found: .*train.labels"):
        KittiGenerator(base)
    os.makedirs(tmp_path / "test" / "labels")
    with pytest.raises(ValueError, match=r"invalid KITTI dataset: .*test.labels has no .txt label files"):
        KittiGenerator(base, subset="test")


@pytest.mark.parametrize(
    "line, message",
    [
        ("Car 0.00 0 1.85 387.63 181.54 423.81", "line 2: expected 15 space-separated values (type truncated"),
        ("Bus 0.00 0 1.85 387.63 181.54 423.81 203.12 1.67 1.87 3.69 -16.53 2.39 58.49 1.57",
         "line 2: unknown object type 'Bus' (types: Car, Van,"),
        ("Car 0.00 0 1.85 387.63 abc 423.81 203.12 1.67 1.87 3.69 -16.53 2.39 58.49 1.57",
         "line 2: malformed top: 'abc' is not a number"),
        ("Car 0.00 0 1.85 387.63 181.54 nan 203.12 1.67 1.87 3.69 -16.53 2.39 58.49 1.57",
         "line 2: malformed right: 'nan' is not a finite number"),
        ("Car 0.00 0 1.85 387.63 181.54 300.00 203.12 1.67 1.87 3.69 -16.53 2.39 58.49 1.57",
         "line 2: right (300) must not be lower than left (387.63)"),
        ("Car 0.00 0 1.85 387.63 181.54 423.81 103.12 1.67 1.87 3.69 -16.53 2.39 58.49 1.57",
         "line 2: bottom (103.12) must not be lower than top (181.54)"),
    ],
)
def test_bad_lines_are_one_line_errors_naming_file_and_line(tmp_path, line, message):
    base = write_kitti(tmp_path, {"000003": LABELS["000000"] + line + "\n"})
    with pytest.raises(ValueError) as error:
        KittiGenerator(base)
    text = str(error.value)
    assert text.startswith(f"invalid KITTI label file: {os.path.join(base, 'train', 'labels', '000003.txt')}: ")
    assert message in text and "\n" not in text


def test_results_files_score_column_and_empty_files():
    boxes, labels = read_kitti_labels(
        "Car -1 -1 -10 1.0 2.0 30.5 40.0 -1 -1 -1 -1000 -1000 -1000 -10 0.93\n", kitti_classes
    )
    np.testing.assert_array_equal(boxes, [[1.0, 2.0, 30.5, 40.0]])
    assert labels.tolist() == [0]
    boxes, labels = read_kitti_labels("\n\n")
    assert boxes.shape == (0, 4) and labels.shape == (0,)


def test_not_utf8_is_named(tmp_path):
    base = write_kitti(tmp_path, {"000004": LABELS["000000"]})
    with open(os.path.join(base, "train", "labels", "000004.txt"), "ab") as file:
        file.write(b"Car \xff\n")
    with pytest.raises(ValueError, match=r"000004.txt: line 2: not UTF-8 text"):
        KittiGenerator(base)
