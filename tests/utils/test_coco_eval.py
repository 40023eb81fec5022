import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from keras_retinanet.utils.coco_eval import (
    COCO_METRIC_NAMES,
    coco_metrics,
    evaluate_coco,
    evaluate_coco_metrics,
)
from keras_retinanet.utils.eval import _get_annotations, _get_detections

IMAGE_SIZE = 300


def random_boxes(rng, count):
    """Boxes from 6 to 160 pixels a side, so small, medium and large areas all occur."""
    corners = rng.uniform(0, IMAGE_SIZE - 20, size=(count, 2))
    sizes = np.exp(rng.uniform(np.log(6), np.log(160), size=(count, 2)))
    return np.concatenate([corners, corners + sizes], axis=1)


def random_case(seed, num_images=250, num_classes=3):
    rng = np.random.default_rng(seed)
    all_detections, all_annotations = [], []
    for _ in range(num_images):
        dets, anns = [], []
        for _ in range(num_classes):
            boxes = random_boxes(rng, rng.integers(0, 4))
            found = boxes[rng.random(len(boxes)) < 0.85]
            found = found + rng.normal(0, 0.06, size=found.shape) * (found[:, 2:] - found[:, :2]).repeat(2, axis=1)
            found = np.concatenate([found, random_boxes(rng, rng.integers(0, 3))])
            dets.append(np.concatenate([found, rng.random((len(found), 1))], axis=1))
            anns.append(boxes)
        all_detections.append(dets)
        all_annotations.append(anns)
    return all_detections, all_annotations


def pycocotools_stats(tmp_path, all_detections, all_annotations, num_classes):
    """Run pycocotools the documented way: json files on disk, COCO(file), loadRes(file)."""
    ground_truth = {"images": [], "categories": [{"id": c, "name": f"c{c}"} for c in range(num_classes)], "annotations": []}
    results = []
    for image_id, (dets, anns) in enumerate(zip(all_detections, all_annotations)):
        ground_truth["images"].append({"id": image_id, "width": IMAGE_SIZE, "height": IMAGE_SIZE})
        for category in range(num_classes):
            for x1, y1, x2, y2 in anns[category]:
                ground_truth["annotations"].append({
                    "id": len(ground_truth["annotations"]) + 1, "image_id": image_id, "category_id": category,
                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
                })
            for x1, y1, x2, y2, score in dets[category]:
                results.append({
                    "image_id": image_id, "category_id": category, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score
                })
    (tmp_path / "gt.json").write_text(json.dumps(ground_truth))
    (tmp_path / "dt.json").write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_true = COCO(str(tmp_path / "gt.json"))
        coco_eval = COCOeval(coco_true, coco_true.loadRes(str(tmp_path / "dt.json")), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats


@pytest.mark.parametrize("seed", [0, 1])
def test_coco_metrics_equal_pycocotools_on_json(tmp_path, seed):
    all_detections, all_annotations = random_case(seed)
    metrics = coco_metrics(all_detections, all_annotations)
    expected = pycocotools_stats(tmp_path, all_detections, all_annotations, num_classes=3)
    assert list(metrics) == list(COCO_METRIC_NAMES)
    np.testing.assert_allclose([metrics[name] for name in COCO_METRIC_NAMES], expected, rtol=0, atol=1e-9)
    # non-trivial figures in every area range
    assert all(0.05 < metrics[name] < 0.95 for name in COCO_METRIC_NAMES)
    assert metrics["AP50"] > metrics["AP"] > 0


def test_coco_metrics_without_detections_are_zero():
    _, all_annotations = random_case(2, num_images=20)
    empty = [[np.zeros((0, 5))] * 3 for _ in all_annotations]
    metrics = coco_metrics(empty, all_annotations)
    assert all(metrics[name] == 0.0 for name in COCO_METRIC_NAMES)


def test_perfect_detections_score_one():
    _, all_annotations = random_case(3, num_images=20)
    perfect = [[np.concatenate([boxes, np.ones((len(boxes), 1))], axis=1) for boxes in anns] for anns in all_annotations]
    metrics = coco_metrics(perfect, all_annotations)
    for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "ARs", "ARm", "ARl"):
        assert metrics[name] == pytest.approx(1.0)


def _small_boxes(rng, count):
    corners = rng.uniform(0, 70, size=(count, 2))
    return np.concatenate([corners, corners + rng.uniform(10, 45, size=(count, 2))], axis=1)


def _fake_scene(rng, count):
    """120 x 160 images with 3 boxes each; detections: the boxes jittered plus 2 random ones."""
    images, annotations, detections = [], [], []
    for _ in range(count):
        images.append(rng.integers(0, 255, size=(120, 160, 3), dtype=np.uint8))
        boxes = _small_boxes(rng, 3)
        labels = rng.integers(0, 2, size=3)
        annotations.append({"bboxes": boxes, "labels": labels})
        det_boxes = np.concatenate([boxes + rng.normal(0, 1.5, size=boxes.shape), _small_boxes(rng, 2)])
        detections.append((det_boxes.clip(0, 119), rng.uniform(0.1, 1, size=5), np.concatenate([labels, [0, 1]])))
    return images, annotations, detections


def test_evaluate_coco_metrics_runs_on_any_generator(fake_detection_generator, fake_inference_model):
    images, annotations, detections = _fake_scene(np.random.default_rng(4), 12)
    generator = fake_detection_generator(images, annotations, ["a", "b"], scale=0.5)
    metrics = evaluate_coco_metrics(generator, fake_inference_model(detections, scale=0.5), batch_size=4, progress=False)
    all_detections, _ = _get_detections(generator, fake_inference_model(detections, scale=0.5), progress=False)
    assert metrics == coco_metrics(all_detections, _get_annotations(generator))
    assert 0.5 < metrics["AP50"] <= 1 and 0 < metrics["AP"] < metrics["AP50"]


def test_evaluate_coco_uses_the_generators_coco_ids(fake_detection_generator, fake_inference_model):
    images, annotations, detections = _fake_scene(np.random.default_rng(5), 8)
    image_ids = [101 + 7 * index for index in range(8)]
    coco_labels = {0: 3, 1: 17}
    dataset = {
        "images": [{"id": image_id} for image_id in image_ids],
        "categories": [{"id": coco_labels[label], "name": name} for label, name in enumerate("ab")],
        "annotations": [],
    }
    for image_id, annotation in zip(image_ids, annotations):
        for (x1, y1, x2, y2), label in zip(annotation["bboxes"], annotation["labels"]):
            dataset["annotations"].append({
                "id": len(dataset["annotations"]) + 1, "image_id": image_id, "category_id": coco_labels[int(label)],
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
            })
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()

    class CocoLikeGenerator(fake_detection_generator):
        def label_to_coco_label(self, label):
            return coco_labels[label]

    generator = CocoLikeGenerator(images, annotations, ["a", "b"])
    generator.coco, generator.image_ids = coco, image_ids

    stats = evaluate_coco(generator, fake_inference_model(detections), progress=False)
    # the same detections in the dataset's own numbering give the same figures
    all_detections, _ = _get_detections(generator, fake_inference_model(detections), progress=False)
    expected = coco_metrics(all_detections, _get_annotations(generator))
    np.testing.assert_allclose(stats, [expected[name] for name in COCO_METRIC_NAMES], atol=1e-12)

    nothing = [(np.zeros((0, 4)), np.zeros(0), np.zeros(0))] * 8
    assert evaluate_coco(generator, fake_inference_model(nothing), progress=False) is None
