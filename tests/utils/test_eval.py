import os

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_retinanet.utils import eval as voc_eval
from keras_retinanet.utils.eval import (
    _get_annotations,
    _get_detections,
    average_precision,
    compute_average_precisions,
    evaluate,
    mean_average_precision,
    precision_recall_curves,
    weighted_mean_average_precision,
)


def det(*rows):
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


def gt(*rows):
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


NONE_DET = det()
NONE_GT = gt()


# ---------------------------------------------------------------- hand-built known answers


def test_perfect_detections_score_one():
    dets = [[det([0, 0, 10, 10, 0.9], [20, 20, 30, 30, 0.8])], [det([5, 5, 50, 40, 0.7])]]
    anns = [[gt([0, 0, 10, 10], [20, 20, 30, 30])], [gt([5, 5, 50, 40])]]
    assert compute_average_precisions(dets, anns) == {0: (1.0, 3)}


def test_false_positive_ranked_first():
    # ranks: FP (0.9), TP (0.8), TP (0.7); precision 0, 1/2, 2/3 at recall 0, 1/2, 1
    # envelope 2/3 over the whole recall range -> AP = 2/3
    dets = [[det([100, 100, 120, 120, 0.9], [0, 0, 10, 10, 0.8], [20, 20, 30, 30, 0.7])]]
    anns = [[gt([0, 0, 10, 10], [20, 20, 30, 30])]]
    ap, count = compute_average_precisions(dets, anns)[0]
    assert count == 2
    assert ap == pytest.approx(2 / 3, abs=1e-12)


def test_duplicate_detection_is_a_false_positive():
    # TP (0.9), duplicate of the same box (0.8) = FP, TP (0.7): AP = 1/2 * 1 + 1/2 * 2/3
    dets = [[det([0, 0, 10, 10, 0.9], [0, 0, 10, 10, 0.8], [20, 20, 30, 30, 0.7])]]
    anns = [[gt([0, 0, 10, 10], [20, 20, 30, 30])]]
    curve = precision_recall_curves(dets, anns)[0]
    np.testing.assert_allclose(curve.precision, [1, 1 / 2, 2 / 3])
    np.testing.assert_allclose(curve.recall, [1 / 2, 1 / 2, 1])
    assert compute_average_precisions(dets, anns)[0][0] == pytest.approx(5 / 6, abs=1e-12)


def test_detection_whose_best_box_is_taken_is_a_false_positive():
    # The second detection overlaps box A (IoU 0.667, taken) and box B (IoU 0.538, free):
    # the VOC/fizyr rule looks only at its best box, so it is a false positive.
    dets = [[det([0, 0, 10, 10, 0.9], [2, 0, 12, 10, 0.8])]]
    anns = [[gt([0, 0, 10, 10], [5, 0, 15, 10])]]
    curve = precision_recall_curves(dets, anns)[0]
    np.testing.assert_allclose(curve.precision, [1, 1 / 2])
    assert compute_average_precisions(dets, anns)[0] == (0.5, 2)


def test_iou_threshold_decides_a_match():
    # IoU of the detection with its box: 8 * 10 / (10 * 10 + 10 * 10 - 80) = 2/3
    dets = [[det([2, 0, 12, 10, 0.9])]]
    anns = [[gt([0, 0, 10, 10])]]
    assert compute_average_precisions(dets, anns, iou_threshold=0.66)[0][0] == 1.0
    assert compute_average_precisions(dets, anns, iou_threshold=0.67)[0][0] == 0.0


def test_class_without_detections_scores_zero_and_class_without_ground_truth_is_skipped():
    dets = [[det([0, 0, 10, 10, 0.9]), NONE_DET, det([50, 50, 60, 60, 0.9])]]
    anns = [[gt([0, 0, 10, 10]), gt([30, 30, 40, 40], [60, 0, 70, 10]), NONE_GT]]
    average_precisions = compute_average_precisions(dets, anns)
    assert average_precisions == {0: (1.0, 1), 1: (0.0, 2), 2: (0.0, 0)}
    assert mean_average_precision(average_precisions) == pytest.approx(0.5)
    assert weighted_mean_average_precision(average_precisions) == pytest.approx(1 / 3)


def test_detection_on_image_without_ground_truth_is_a_false_positive():
    # image 1 has no boxes; its detection outranks the true positive: precision 0 then 1/2
    dets = [[det([0, 0, 10, 10, 0.5])], [det([0, 0, 10, 10, 0.9])]]
    anns = [[gt([0, 0, 10, 10])], [NONE_GT]]
    assert compute_average_precisions(dets, anns)[0] == (0.5, 1)


def test_detection_of_another_class_does_not_match():
    dets = [[NONE_DET, det([0, 0, 10, 10, 0.9])]]
    anns = [[gt([0, 0, 10, 10]), NONE_GT]]
    assert compute_average_precisions(dets, anns) == {0: (0.0, 1), 1: (0.0, 0)}


def test_missing_entries_and_explicit_labels():
    # fizyr's structure may hold None for a label; labels= restricts the classes
    dets = [[det([0, 0, 10, 10, 0.9]), None]]
    anns = [[gt([0, 0, 10, 10]), gt([0, 0, 5, 5])]]
    assert compute_average_precisions(dets, anns) == {0: (1.0, 1), 1: (0.0, 1)}
    assert compute_average_precisions(dets, anns, labels=[1]) == {1: (0.0, 1)}


def test_means_are_nan_without_any_ground_truth():
    assert np.isnan(mean_average_precision({0: (0.0, 0)}))
    assert np.isnan(weighted_mean_average_precision({}))


def test_average_precision_of_a_curve():
    assert average_precision([], []) == 0.0
    # envelope: 1 up to recall 0.25, 0.6 up to recall 0.75, nothing after
    assert average_precision([0.25, 0.25, 0.5, 0.75], [1.0, 0.5, 0.5, 0.6]) == pytest.approx(0.25 + 0.5 * 0.6)


def test_bad_input_is_reported():
    with pytest.raises(ValueError, match="detections are given for 2 images but annotations for 1"):
        compute_average_precisions([[NONE_DET], [NONE_DET]], [[NONE_GT]])
    with pytest.raises(ValueError, match=r"all_detections\[0\]\[0\] must be \(K, 5\).*got shape \(1, 4\)"):
        compute_average_precisions([[np.zeros((1, 4))]], [[NONE_GT]])


# ---------------------------------------------------------------- against a plain reference


def _iou(a, b):
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    intersection = width * height
    return intersection / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection)


def reference_voc_ap(all_detections, all_annotations, label, iou_threshold):
    """Pascal VOC all-point AP, written plainly with loops (independent of the library)."""
    ranked = []
    num_annotations = 0
    for image, per_image in enumerate(all_annotations):
        num_annotations += len(per_image[label])
        for row in all_detections[image][label]:
            ranked.append((row[4], image, row[:4]))
    ranked.sort(key=lambda item: -item[0])
    taken = {image: [False] * len(per_image[label]) for image, per_image in enumerate(all_annotations)}
    hits = []
    for _, image, box in ranked:
        boxes = all_annotations[image][label]
        best, best_iou = -1, -1.0
        for index, other in enumerate(boxes):
            overlap = _iou(box, other)
            if overlap > best_iou:
                best, best_iou = index, overlap
        if best >= 0 and best_iou >= iou_threshold and not taken[image][best]:
            taken[image][best] = True
            hits.append(1)
        else:
            hits.append(0)
    if num_annotations == 0:
        return 0.0
    recall, precision, found = [], [], 0
    for rank, hit in enumerate(hits, start=1):
        found += hit
        recall.append(found / num_annotations)
        precision.append(found / rank)
    recall = [0.0] + recall + [1.0]
    precision = [0.0] + precision + [0.0]
    for index in range(len(precision) - 2, -1, -1):
        precision[index] = max(precision[index], precision[index + 1])
    area = 0.0
    for index in range(1, len(recall)):
        if recall[index] != recall[index - 1]:
            area += (recall[index] - recall[index - 1]) * precision[index]
    return area


def random_dataset(seed, num_images=300, num_classes=4, image_size=200):
    """Ground truth and noisy detections: jittered copies (some duplicated), random boxes."""
    rng = np.random.default_rng(seed)

    def random_boxes(count):
        corners = rng.uniform(0, image_size - 10, size=(count, 2))
        sizes = rng.uniform(8, 60, size=(count, 2))
        return np.concatenate([corners, corners + sizes], axis=1)

    all_detections, all_annotations = [], []
    for _ in range(num_images):
        per_image_dets, per_image_anns = [], []
        for _ in range(num_classes):
            boxes = random_boxes(rng.integers(0, 4))
            copies = boxes[rng.random(len(boxes)) < 0.8]
            copies = np.concatenate([copies, copies[rng.random(len(copies)) < 0.3]])
            copies = copies + rng.normal(0, 2.5, size=copies.shape)
            detected = np.concatenate([copies, random_boxes(rng.integers(0, 3))])
            scores = rng.random(len(detected))
            per_image_dets.append(np.concatenate([detected, scores[:, None]], axis=1))
            per_image_anns.append(boxes)
        all_detections.append(per_image_dets)
        all_annotations.append(per_image_anns)
    return all_detections, all_annotations


@pytest.mark.parametrize("seed, iou_threshold", [(0, 0.5), (1, 0.5), (2, 0.75), (3, 0.3)])
def test_matches_plain_reference_on_random_data(seed, iou_threshold):
    all_detections, all_annotations = random_dataset(seed)
    average_precisions = compute_average_precisions(all_detections, all_annotations, iou_threshold)
    assert sorted(average_precisions) == [0, 1, 2, 3]
    for label, (ap, count) in average_precisions.items():
        assert count == sum(len(per_image[label]) for per_image in all_annotations)
        expected = reference_voc_ap(all_detections, all_annotations, label, iou_threshold)
        assert ap == pytest.approx(expected, abs=1e-12)
        assert 0.05 < ap < 0.99  # the random case is neither trivial nor empty


def test_image_order_does_not_matter():
    all_detections, all_annotations = random_dataset(5, num_images=60)
    order = np.random.default_rng(0).permutation(60)
    shuffled = compute_average_precisions([all_detections[i] for i in order], [all_annotations[i] for i in order])
    original = compute_average_precisions(all_detections, all_annotations)
    for label in original:
        assert shuffled[label][0] == pytest.approx(original[label][0], abs=1e-12)


# ---------------------------------------------------------------- running a model


def _scene(rng, sizes):
    images, annotations, detections = [], [], []
    for height, width in sizes:
        images.append(rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8))
        boxes = np.array([[10, 10, 40, 30], [50, 20, 90, 60]], dtype=np.float64)
        labels = np.array([0, 1])
        annotations.append({"bboxes": boxes, "labels": labels})
        # a hit for each box, a miss, two below the 0.05 threshold
        det_boxes = np.concatenate([boxes + 1.0, [[0, 60, 20, 80], [10, 10, 40, 30], [0, 0, 5, 5]]])
        scores = np.array([0.9, 0.6, 0.7, 0.04, 0.01])
        detections.append((det_boxes, scores, np.array([0, 1, 1, 0, 1])))
    return images, annotations, detections


@pytest.mark.parametrize("batch_size", [1, 3])
def test_get_detections_scales_back_batches_same_sizes_and_filters(
    batch_size, fake_detection_generator, fake_inference_model
):
    rng = np.random.default_rng(0)
    sizes = [(100, 120), (100, 120), (110, 100), (100, 100)]
    images, annotations, detections = _scene(rng, sizes)
    generator = fake_detection_generator(images, annotations, ["a", "b"], scale=0.5)
    model = fake_inference_model(detections, scale=0.5)

    all_detections, times = _get_detections(
        generator, model, score_threshold=0.05, max_detections=2, batch_size=batch_size, progress=False
    )

    if batch_size == 3:  # a batch holds images of one size: never padded
        assert model.batch_shapes == [(2, 50, 60, 3), (1, 55, 50, 3), (1, 50, 50, 3)]
    else:
        assert model.batch_shapes == [(1, 50, 60, 3), (1, 50, 60, 3), (1, 55, 50, 3), (1, 50, 50, 3)]
    assert len(times) == 4 and np.all(times >= 0)
    for per_image in all_detections:
        # the best two above the threshold: box 0 (0.9, label 0) and the miss (0.7, label 1)
        np.testing.assert_allclose(per_image[0], [[11, 11, 41, 31, 0.9]], rtol=1e-6)
        np.testing.assert_allclose(per_image[1], [[0, 60, 20, 80, 0.7]], rtol=1e-6)


def test_evaluate_equals_metric_on_precomputed_detections(tmp_path, fake_detection_generator, fake_inference_model):
    rng = np.random.default_rng(1)
    images, annotations, detections = _scene(rng, [(100, 120)] * 3)
    generator = fake_detection_generator(images, annotations, ["a", "b"], scale=2.0)
    model = fake_inference_model(detections, scale=2.0)

    average_precisions, inference_time = evaluate(generator, model, save_path=str(tmp_path), progress=False)

    # class a: 3 hits; class b: the three 0.7 misses outrank the three 0.6 hits, so
    # precision is 1/4, 2/5, 1/2 at recall 1/3, 2/3, 1: envelope 1/2 -> AP 1/2
    assert average_precisions == {0: (1.0, 3), 1: (0.5, 3)}
    assert isinstance(inference_time, float) and inference_time >= 0
    all_detections, _ = _get_detections(generator, fake_inference_model(detections, scale=2.0), progress=False)
    assert compute_average_precisions(all_detections, _get_annotations(generator)) == average_precisions

    # drawn images: ground truth outline (green) and detections changed the picture
    for index in range(3):
        drawn = cv2.imread(str(tmp_path / f"{index}.png"))
        assert drawn.shape == (100, 120, 3)
        assert tuple(drawn[20, 10]) == (0, 255, 0)  # left edge of the box (10, 10, 40, 30)
        assert np.any(drawn != images[index])
    plots = sorted(os.listdir(tmp_path / voc_eval.PRECISION_RECALL_FOLDER))
    assert plots == ["0_a.png", "1_b.png"]
    plot = cv2.imread(str(tmp_path / voc_eval.PRECISION_RECALL_FOLDER / "1_b.png"))
    assert plot.shape == (400, 500, 3) and plot.std() > 10


def test_training_model_outputs_are_rejected(fake_detection_generator):
    images, annotations, _ = _scene(np.random.default_rng(0), [(64, 64)])
    generator = fake_detection_generator(images, annotations, ["a", "b"])

    class TrainingModel:
        def predict_on_batch(self, batch):
            return [np.zeros((1, 10, 4)), np.zeros((1, 10, 2))]

    with pytest.raises(ValueError, match="inference model returning \\[boxes, scores, labels\\].*convert_model"):
        evaluate(generator, TrainingModel(), progress=False)


def test_annotations_without_labels_are_reported(fake_detection_generator):
    generator = fake_detection_generator([np.zeros((8, 8, 3), np.uint8)], [{"bboxes": np.zeros((1, 4))}], ["a"])
    with pytest.raises(ValueError, match="annotations of image 0 must be a dict with bboxes"):
        _get_annotations(generator)


# ---------------------------------------------------------------- property: ties and exact thresholds

@st.composite
def small_integer_cases(draw):
    """Few images and classes, integer boxes on a 12-pixel grid, scores with many ties."""
    num_images, num_classes = draw(st.integers(1, 4)), draw(st.integers(1, 3))

    def boxes(count):
        rows = []
        for _ in range(count):
            x1, y1 = draw(st.integers(0, 8)), draw(st.integers(0, 8))
            rows.append([x1, y1, x1 + draw(st.integers(1, 4)), y1 + draw(st.integers(1, 4))])
        return np.array(rows, dtype=np.float64).reshape(-1, 4)

    all_detections, all_annotations = [], []
    for _ in range(num_images):
        dets, anns = [], []
        for _ in range(num_classes):
            anns.append(boxes(draw(st.integers(0, 3))))
            found = boxes(draw(st.integers(0, 4)))
            scores = [draw(st.sampled_from([0.2, 0.5, 0.9])) for _ in range(len(found))]
            dets.append(np.concatenate([found, np.array(scores).reshape(-1, 1)], axis=1))
        all_detections.append(dets)
        all_annotations.append(anns)
    return all_detections, all_annotations, draw(st.sampled_from([0.25, 0.5, 1 / 3]))


@settings(max_examples=200, deadline=None)
@given(small_integer_cases())
def test_equals_plain_reference_with_ties(case):
    all_detections, all_annotations, iou_threshold = case
    average_precisions = compute_average_precisions(all_detections, all_annotations, iou_threshold)
    for label, (ap, _) in average_precisions.items():
        assert 0.0 <= ap <= 1.0
        assert ap == pytest.approx(reference_voc_ap(all_detections, all_annotations, label, iou_threshold), abs=1e-12)


def test_a_generator_that_contradicts_the_model_spec_is_warned_about(fake_detection_generator, fake_inference_model):
    """fizyr's evaluate(generator, model) runs the model the generator's way: say when that is not the spec's."""
    from keras_retinanet.spec import DetectorSpec

    rng = np.random.default_rng(1)
    images, annotations, detections = _scene(rng, [(100, 120)])
    generator = fake_detection_generator(images, annotations, ["a", "b"])
    model = fake_inference_model(detections)
    model.spec = DetectorSpec(backbone="mobilenet128_0.25", preprocess_mode="tf", class_names=("b", "a"))
    with pytest.warns(UserWarning) as records:
        evaluate(generator, model, progress=False)
    messages = [str(record.message) for record in records]
    assert any("the generator preprocesses images otherwise than mobilenet128_0.25 (tf mode)" in m for m in messages)
    assert any("the generator's class list [a, b] contradicts mobilenet128_0.25" in m for m in messages)


def test_compute_ap_is_fizyrs_name_of_average_precision():
    from keras_retinanet.utils.eval import _compute_ap, average_precision

    assert _compute_ap is average_precision
    # two detections, the first right: recall 0.5 -> 0.5, precision 1 -> 0.5 (VOC all-point)
    assert _compute_ap(np.array([0.5, 0.5]), np.array([1.0, 0.5])) == 0.5


def test_get_detections_with_several_model_calls_at_once(monkeypatch, fake_detection_generator, fake_inference_model):
    # whole ops (utils.threads): the model runs two calls at once; the detections are the same
    from keras_retinanet.utils import threads

    rng = np.random.default_rng(0)
    sizes = [(100, 120), (100, 120), (110, 100), (100, 100), (100, 120)]
    images, annotations, detections = _scene(rng, sizes)
    generator = fake_detection_generator(images, annotations, ["a", "b"], scale=0.5)
    serial, serial_times = _get_detections(
        generator, fake_inference_model(detections, scale=0.5), score_threshold=0.05, progress=False
    )
    monkeypatch.setattr(threads, "_chosen", (1, 2))
    assert threads.model_calls_at_once() == 2
    model = fake_inference_model(detections, scale=0.5)
    parallel, times = _get_detections(generator, model, score_threshold=0.05, progress=False)

    assert len(model.batch_shapes) == 5
    assert times.shape == (5,) and np.all(times > 0) and serial_times.shape == (5,)
    for got, want in zip(parallel, serial):
        for label in range(2):
            np.testing.assert_array_equal(got[label], want[label])
