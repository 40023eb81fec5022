"""``utils.eval.evaluate`` against a plain, loop-based Pascal VOC reference.

The reference is written like the VOC devkit's ``voc_eval.py``: per class, the
detections of all images ranked by score, each matched to its highest-IoU ground truth
box of that class in its image (true positive if IoU >= threshold and the box is not yet
claimed), and all-point interpolated AP. It is ``tests/utils/test_eval.py``'s, and uses
nothing from ``keras_retinanet``.

The cases are random images of different sizes whose detections often cross the image
border. Evaluation does not clip boxes, one image at a time or in batches (which hold
images of one size, so nothing is padded); checked with a resize scale != 1.

Box coordinates are multiples of 1/8 px and scores multiples of 1/1024, so that the fake
model's float32 round trip (x * scale, then / scale) gives them back exactly; IoUs within
``IOU_MARGIN`` of a threshold are avoided, so float rounding cannot flip a match.
"""
import numpy as np
import pytest

from keras_retinanet.utils.eval import _get_detections, evaluate
from tests.utils.test_eval import _iou, reference_voc_ap

SEEDS = [0, 1, 2, 3, 4, 5]
IOU_THRESHOLDS = [0.3, 0.5, 0.75]
SCALE = 1.25
NUM_CLASSES = 3
NUM_IMAGES = 7
BATCH_SIZE = 3
MAX_DETECTIONS = 10_000
IOU_MARGIN = 1e-6
QUANTUM = 8.0  # coordinates are multiples of 1 / QUANTUM


# ------------------------------------------------------------------- reference (plain loops)
# The plain, loop-based VOC AP of tests/utils/test_eval.py (the devkit's voc_eval.py rules).

reference_iou = _iou


def reference_average_precisions(detections, annotations, iou_threshold, num_classes):
    """{label: (AP, num_annotations)} by ``test_eval.reference_voc_ap``.

    Args:
        detections: per image, a list of (box (4 floats), score, label).
        annotations: per image, a list of (box (4 floats), label).
    """
    all_detections = [
        [np.array([list(box) + [score] for box, score, lab in image if lab == label]).reshape(-1, 5)
         for label in range(num_classes)]
        for image in detections
    ]  # fmt: skip
    all_annotations = [
        [np.array([list(box) for box, lab in image if lab == label]).reshape(-1, 4) for label in range(num_classes)]
        for image in annotations
    ]
    return {
        label: (
            reference_voc_ap(all_detections, all_annotations, label, iou_threshold),
            sum(len(image[label]) for image in all_annotations),
        )
        for label in range(num_classes)
    }


# ------------------------------------------------------------------- random cases


def resized_size(height, width, scale=SCALE):
    """(height, width) of an image after FakeDetectionGenerator.resize_image.

    The fake rounds with Python's round (half to even): e.g. width 62 -> 77.5 -> 78, 66 -> 82.5 -> 82.
    """
    return round(height * scale), round(width * scale)


def clip_like_padded_batch(box, height, width, scale=SCALE):
    """A box clipped as KerasRunner clips the boxes of a padded image.

    The clip is in resized pixels (float32, as the runner's arrays are), to the resized
    image's extent, and then the scale is undone.
    """
    resized_height, resized_width = resized_size(height, width, scale)
    limits = [resized_width, resized_height, resized_width, resized_height]
    result = []
    for value, limit in zip(box, limits):
        resized = np.float32(value) * np.float32(scale)  # exact for multiples of 1/8
        resized = min(max(resized, np.float32(0.0)), np.float32(limit))
        result.append(float(np.float32(resized) / np.float32(scale)))
    return result


def crosses_border(box, height, width):
    return box[0] < 0 or box[1] < 0 or box[2] > width or box[3] > height


def quantize(values):
    return [float(np.round(v * QUANTUM) / QUANTUM) for v in values]


def _ious_are_safe(box, image_annotations, label, height, width):
    """No IoU with a same-class box near a threshold (or a near-tie for the best box)."""
    for variant in (box, clip_like_padded_batch(box, height, width)):
        ious = sorted((reference_iou(variant, gt) for gt, lab in image_annotations if lab == label), reverse=True)
        for iou in ious:
            if any(abs(iou - t) < IOU_MARGIN for t in IOU_THRESHOLDS):
                return False
        if len(ious) >= 2 and ious[0] > 0 and ious[0] - ious[1] < IOU_MARGIN:
            return False
    return True


def make_case(seed, num_images=NUM_IMAGES, num_classes=NUM_CLASSES):
    """Random images of different sizes, their ground truth and detections.

    Returns:
        sizes: [(height, width)]; annotations: per image [(box, label)];
        detections: per image [(box, score, label)] in original pixels (unclipped).
    """
    rng = np.random.default_rng(seed)
    sizes = [(int(rng.integers(60, 141)), int(rng.integers(60, 141))) for _ in range(num_images)]
    for index in range(1, num_images, 3):  # runs of two or three images of one size: batches of several
        sizes[index] = sizes[index - 1]
        if rng.random() < 0.5 and index + 1 < num_images:
            sizes[index + 1] = sizes[index]

    annotations, raw_detections = [], []
    for height, width in sizes:
        image_annotations = []
        for _ in range(int(rng.integers(2, 6))):
            label = int(rng.integers(0, num_classes))
            box_w = rng.uniform(12, 0.5 * width)
            box_h = rng.uniform(12, 0.5 * height)
            x1 = rng.uniform(0, width - box_w)
            y1 = rng.uniform(0, height - box_h)
            if rng.random() < 0.5:  # against a border: detections of it tend to cross it
                side = int(rng.integers(0, 4))
                if side == 0:
                    x1 = rng.uniform(0, 2)
                elif side == 1:
                    y1 = rng.uniform(0, 2)
                elif side == 2:
                    x1 = width - box_w - rng.uniform(0, 2)
                else:
                    y1 = height - box_h - rng.uniform(0, 2)
            box = quantize([x1, y1, x1 + box_w, y1 + box_h])
            box = [max(box[0], 0.0), max(box[1], 0.0), min(box[2], width), min(box[3], height)]
            image_annotations.append((box, label))

        image_detections = []
        for box, label in image_annotations:
            for _ in range(int(rng.integers(0, 3))):  # 0-2 jittered copies (duplicates: false positives)
                w, h = box[2] - box[0], box[3] - box[1]
                jittered = [
                    box[0] + rng.normal(0, 0.08 * w),
                    box[1] + rng.normal(0, 0.08 * h),
                    box[2] + rng.normal(0, 0.08 * w),
                    box[3] + rng.normal(0, 0.08 * h),
                ]
                if rng.random() < 0.6:  # push the sides near a border across it
                    if jittered[0] < 0.25 * width:
                        jittered[0] = min(jittered[0], 0) - rng.uniform(3, 0.6 * w)
                    if jittered[1] < 0.25 * height:
                        jittered[1] = min(jittered[1], 0) - rng.uniform(3, 0.6 * h)
                    if jittered[2] > 0.75 * width:
                        jittered[2] = max(jittered[2], width) + rng.uniform(3, 0.6 * w)
                    if jittered[3] > 0.75 * height:
                        jittered[3] = max(jittered[3], height) + rng.uniform(3, 0.6 * h)
                wrong_label = rng.random() < 0.1
                det_label = int((label + 1) % num_classes) if wrong_label else label
                image_detections.append((jittered, det_label))
        for _ in range(int(rng.integers(2, 6))):  # random boxes, about half of them crossing a border
            w, h = rng.uniform(8, 0.6 * width), rng.uniform(8, 0.6 * height)
            x1 = rng.uniform(-0.3 * w, width - 0.7 * w)
            y1 = rng.uniform(-0.3 * h, height - 0.7 * h)
            image_detections.append(([x1, y1, x1 + w, y1 + h], int(rng.integers(0, num_classes))))

        safe = []
        for box, label in image_detections:
            box = quantize(box)
            if box[2] - box[0] < 1:
                box[2] = box[0] + 1
            if box[3] - box[1] < 1:
                box[3] = box[1] + 1
            while not _ious_are_safe(box, image_annotations, label, height, width):
                box = [v + float(rng.integers(1, 4)) / QUANTUM for v in box]
            safe.append((box, label))
        annotations.append(image_annotations)
        raw_detections.append(safe)

    total = sum(len(d) for d in raw_detections)
    scores = (rng.permutation(1023)[:total] + 1) / 1024.0  # distinct, exact in float32
    detections, position = [], 0
    for image_detections in raw_detections:
        detections.append(
            [(box, float(scores[position + i]), label) for i, (box, label) in enumerate(image_detections)]
        )
        position += len(image_detections)
    return sizes, annotations, detections


def build(sizes, annotations, detections, generator_class, model_class):
    images = [np.full((h, w, 3), 128, dtype=np.uint8) for h, w in sizes]
    generator_annotations = [
        {
            "bboxes": np.array([box for box, _ in image], dtype=np.float64).reshape(-1, 4),
            "labels": np.array([label for _, label in image], dtype=np.int64),
        }
        for image in annotations
    ]
    generator = generator_class(images, generator_annotations, [f"class{i}" for i in range(NUM_CLASSES)], scale=SCALE)
    model_detections = [
        (
            np.array([box for box, _, _ in image], dtype=np.float64).reshape(-1, 4),
            np.array([score for _, score, _ in image], dtype=np.float64),
            np.array([label for _, _, label in image], dtype=np.int64),
        )
        for image in detections
    ]
    padded_size = max(len(image) for image in detections) + 5

    def new_model():
        return model_class(model_detections, scale=SCALE, padded_size=padded_size)

    return generator, new_model


def clipped(detections, sizes, which):
    """detections with the boxes of images ``which`` (indices) clipped like a padded image."""
    return [
        [
            (clip_like_padded_batch(box, *sizes[i]) if i in which else list(box), score, label)
            for box, score, label in image
        ]
        for i, image in enumerate(detections)
    ]


def assert_same_average_precisions(actual, expected):
    assert sorted(actual) == sorted(expected)
    for label, (ap, count) in expected.items():
        got_ap, got_count = actual[label]
        assert got_count == count, label
        assert abs(got_ap - ap) <= 1e-9, (label, got_ap, ap)


# ------------------------------------------------------------------- tests


def test_reference_on_a_hand_computed_case():
    # two images, one class, two ground truth boxes; ranked: TP (0.9), FP duplicate (0.8), FP miss (0.7), TP (0.6)
    annotations = [[([0, 0, 10, 10], 0)], [([20, 20, 40, 40], 0)]]
    detections = [
        [([0, 0, 10, 10], 0.9, 0), ([1, 0, 10, 10], 0.8, 0)],
        [([60, 60, 70, 70], 0.7, 0), ([20, 20, 40, 38], 0.6, 0)],
    ]
    # precision 1, 1/2, 1/3, 1/2 at recall 1/2, 1/2, 1/2, 1: AP = 1/2 * 1 + 1/2 * 1/2
    ap, count = reference_average_precisions(detections, annotations, 0.5, 1)[0]
    assert count == 2 and ap == pytest.approx(0.75, abs=1e-12)
    # at IoU 0.95 the last one (IoU 0.9) misses
    assert reference_average_precisions(detections, annotations, 0.95, 1)[0][0] == pytest.approx(0.5, abs=1e-12)
    assert reference_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)


@pytest.mark.parametrize("seed", SEEDS)
def test_cases_cross_the_border_and_have_true_positives(seed):
    sizes, annotations, detections = make_case(seed)
    assert len(set(sizes)) > 1
    boxes = [(box, sizes[i]) for i, image in enumerate(detections) for box, _, _ in image]
    crossing = sum(crosses_border(box, h, w) for box, (h, w) in boxes)
    assert crossing >= 0.3 * len(boxes), (crossing, len(boxes))
    ap = reference_average_precisions(detections, annotations, 0.5, NUM_CLASSES)
    assert any(value > 0 for value, _ in ap.values())
    assert sum(count > 0 for _, count in ap.values()) >= 2


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("iou_threshold", IOU_THRESHOLDS)
def test_evaluate_matches_reference_unclipped(seed, iou_threshold, fake_detection_generator, fake_inference_model):
    sizes, annotations, detections = make_case(seed)
    generator, new_model = build(sizes, annotations, detections, fake_detection_generator, fake_inference_model)
    model = new_model()
    actual, _ = evaluate(
        generator, model, iou_threshold=iou_threshold, score_threshold=0.0,
        max_detections=MAX_DETECTIONS, batch_size=1, progress=False,
    )  # fmt: skip
    assert all(shape[0] == 1 for shape in model.batch_shapes) and len(model.batch_shapes) == len(sizes)
    expected = reference_average_precisions(detections, annotations, iou_threshold, NUM_CLASSES)
    assert_same_average_precisions(actual, expected)


def test_clipping_would_change_the_reference():
    """The cases tell clipped from unclipped boxes (else the test above could not)."""
    changed = []
    for seed in SEEDS:
        sizes, annotations, detections = make_case(seed)
        all_clipped = clipped(detections, sizes, set(range(len(sizes))))
        for iou_threshold in IOU_THRESHOLDS:
            plain = reference_average_precisions(detections, annotations, iou_threshold, NUM_CLASSES)
            clip = reference_average_precisions(all_clipped, annotations, iou_threshold, NUM_CLASSES)
            if any(abs(plain[label][0] - clip[label][0]) > 1e-6 for label in plain):
                changed.append((seed, iou_threshold))
    assert len(changed) >= len(SEEDS), changed  # in practice most (seed, threshold) pairs


@pytest.mark.parametrize("seed", SEEDS)
def test_evaluate_in_batches_equals_one_image_at_a_time(seed, fake_detection_generator, fake_inference_model):
    """Batches hold images of one size (no padding, which would change a real model's output):
    the figures are the unclipped reference's, as with one image at a time."""
    sizes, annotations, detections = make_case(seed)
    generator, new_model = build(sizes, annotations, detections, fake_detection_generator, fake_inference_model)
    for iou_threshold in IOU_THRESHOLDS:
        model = new_model()
        actual, _ = evaluate(
            generator, model, iou_threshold=iou_threshold, score_threshold=0.0,
            max_detections=MAX_DETECTIONS, batch_size=BATCH_SIZE, progress=False,
        )  # fmt: skip
        expected = reference_average_precisions(detections, annotations, iou_threshold, NUM_CLASSES)
        assert_same_average_precisions(actual, expected)
        # one call per run of same-size images within each batch of BATCH_SIZE
        calls = []
        for start in range(0, len(sizes), BATCH_SIZE):
            batch = sizes[start : start + BATCH_SIZE]
            runs = [1]
            for previous, size in zip(batch, batch[1:]):
                if size == previous:
                    runs[-1] += 1
                else:
                    runs.append(1)
            calls += runs
        assert [shape[0] for shape in model.batch_shapes] == calls
        assert max(calls) > 1


def test_get_detections_returns_the_model_boxes_unclipped(fake_detection_generator, fake_inference_model):
    sizes, annotations, detections = make_case(SEEDS[0])
    generator, new_model = build(sizes, annotations, detections, fake_detection_generator, fake_inference_model)
    all_detections, inference_times = _get_detections(
        generator, new_model(), score_threshold=0.0, max_detections=MAX_DETECTIONS, batch_size=1, progress=False
    )
    assert len(all_detections) == len(sizes) and len(inference_times) == len(sizes)
    checked_crossing = 0
    for index, image in enumerate(detections):
        assert len(all_detections[index]) == NUM_CLASSES
        for label in range(NUM_CLASSES):
            rows = all_detections[index][label]
            wanted = sorted((d for d in image if d[2] == label), key=lambda d: -d[1])
            assert rows.shape == (len(wanted), 5)
            for row, (box, score, _) in zip(rows, wanted):
                assert np.allclose(row[:4], box, rtol=0, atol=1e-4), (index, label, row, box)
                assert abs(row[4] - score) <= 1e-6
                checked_crossing += crosses_border(box, *sizes[index])
            assert np.all(np.diff(rows[:, 4]) < 0)
    assert checked_crossing > 0
