"""keras_retinanet.inspection: training's anchor assignment, seen per image and per dataset."""
import numpy as np
import pytest

from keras_retinanet.inspection import DatasetSummary, draw_inspection, inspect_image
from keras_retinanet.preprocessing.csv_generator import CSVGenerator
from keras_retinanet.utils.anchors import anchor_targets_bbox
from keras_retinanet.utils.compute_overlap import compute_overlap
from keras_retinanet.utils.synthetic import write_classes, write_split


def _generator(tmp_path, extra_line=None, **kwargs):
    classes = write_classes(str(tmp_path / "classes.csv"))
    annotations, _ = write_split(str(tmp_path), "s", 2, image_size=(96, 160), min_size=30, max_size=60,
                                 empty_fraction=0.0, seed=11)  # fmt: skip
    if extra_line:
        with open(annotations, "a") as file:
            file.write(extra_line + "\n")
    return CSVGenerator(annotations, classes, shuffle_groups=False, group_method="none", **kwargs)


def test_positive_anchors_are_those_of_the_training_targets(tmp_path):
    generator = _generator(tmp_path, image_min_side=128, image_max_side=200)
    inspection = inspect_image(generator, 0)
    assert inspection.image.shape == (120, 200, 3) and inspection.scale == 1.25
    assert inspection.has_anchor.all() and len(inspection.positive_anchors) > 0
    best = compute_overlap(inspection.positive_anchors.astype(np.float64), inspection.boxes).max(axis=1)
    assert best.min() >= 0.5

    # the same anchors as training's targets on the padded batch
    anchors = generator.generate_anchors(generator.padded_shape([inspection.image.shape]))
    annotations = {"bboxes": inspection.boxes, "labels": inspection.labels}
    _, labels = anchor_targets_bbox(anchors, [inspection.image], [annotations], generator.num_classes())
    np.testing.assert_array_equal(anchors[labels[0, :, -1] == 1], inspection.positive_anchors)


def test_small_and_invalid_boxes_are_counted(tmp_path):
    generator = _generator(
        tmp_path, "images/s_00001.png,150,5,158,13,triangle\nimages/s_00001.png,150,90,170,99,circle",
        image_min_side=96, image_max_side=160,
    )  # fmt: skip
    summary = DatasetSummary(generator.label_to_name)
    summary.add(inspect_image(generator, 0))
    with pytest.warns(UserWarning, match=r"s_00001\.png .* has invalid boxes \[\[150\.0, 90\.0, 170\.0, 99\.0\]\]"):
        inspection = inspect_image(generator, 1)
    summary.add(inspection)
    assert inspection.dropped == 1  # the circle leaves the 160 px wide image
    assert inspection.has_anchor.tolist()[-1] is False and inspection.labels[-1] == 2
    lines = summary.lines()
    assert "invalid boxes dropped (empty, or outside the image): 1" in lines
    expected = f"boxes with no matching anchor: 1 of {summary.num_boxes} (triangle 1)"
    assert any(line.startswith(expected) for line in lines)
    assert lines[-1].endswith("s_00001.png: triangle [150, 5, 158, 13] (8 x 8 px)")

    canvas = draw_inspection(inspection, anchors=False, annotations=False)
    np.testing.assert_array_equal(canvas, inspection.image)
    assert not np.array_equal(draw_inspection(inspection), inspection.image)


def test_fit_anchors_keeps_fitting_sizes_and_shrinks_too_large_ones(tmp_path):
    from keras_retinanet.inspection import fit_anchors

    fitting = _generator(tmp_path, image_min_side=96, image_max_side=160)  # 30-60 px boxes
    fit = fit_anchors(fitting)
    assert fit.factor == 1.0 and fit.anchor_params.sizes == [32, 64, 128, 256, 512]
    assert fit.before == fit.after and fit.after.unmatched == 0

    small = tmp_path / "small"
    classes = write_classes(str(tmp_path / "classes.csv"))
    annotations, _ = write_split(str(small), "s", 6, image_size=160, min_objects=3, max_objects=4,
                                 min_size=12, max_size=18, empty_fraction=0.0, seed=3)  # fmt: skip
    generator = CSVGenerator(annotations, classes, image_min_side=160, image_max_side=160)
    fit = fit_anchors(generator)
    assert fit.factor < 1 and fit.anchor_params.strides == [8, 16, 32, 64, 128]
    np.testing.assert_allclose(fit.anchor_params.sizes, np.array([32, 64, 128, 256, 512]) * fit.factor)
    assert fit.before.unmatched == fit.before.boxes  # no 32 px anchor reaches IoU 0.5 with an 18 px box
    assert fit.after.unmatched < fit.after.boxes / 3
