"""keras_retinanet.inference: loading, batching, scaling back, tiling, output rows."""
import csv
import threading
import time

import cv2
import numpy as np
import pytest

from keras_retinanet.inference import (
    Detections,
    Detector,
    KerasRunner,
    ModelLoadError,
    coco_results,
    csv_rows,
    load_detector,
    merge_detections,
    tile_windows,
)
from keras_retinanet.preprocessing.csv_generator import _read_annotations
from keras_retinanet.utils.synthetic import make_image
from tests.detector_model import BACKBONE, training_model


class WholeInputModel:
    """Inference-model stand-in: one detection covering its whole input, label 2, score 0.9.

    Records the batches it gets.
    """

    def __init__(self):
        self.batches = []

    def predict_on_batch(self, batch):
        self.batches.append(batch.copy())
        size, height, width = batch.shape[:3]
        boxes = -np.ones((size, 5, 4), np.float32)
        scores = -np.ones((size, 5), np.float32)
        labels = -np.ones((size, 5), np.int32)
        boxes[:, 0] = [0, 0, width, height]
        scores[:, 0], labels[:, 0] = 0.9, 2
        return [boxes, scores, labels]


def _images(*shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [make_image(rng, height, width, 2, 16, 40)[0] for height, width in shapes]


def test_keras_runner_preprocesses_resizes_and_scales_back():
    model = WholeInputModel()
    detector = Detector(KerasRunner(model, lambda x: x.astype(np.float32) / 255.0, 128, 160))
    image = _images((100, 150))[0]
    detections = detector.predict(image)
    (batch,) = model.batches
    assert batch.shape == (1, 107, 160, 3)  # 1.0667 x, capped by the max side
    assert 0.0 <= batch.min() and batch.max() <= 1.0
    np.testing.assert_allclose(detections.boxes, [[0, 0, 150, 100]], atol=1e-4)
    assert detections.scores.tolist() == pytest.approx([0.9]) and detections.labels.tolist() == [2]
    assert detections.labels.dtype == np.int32 and detections.boxes.dtype == np.float32


def test_predict_batches_images_of_one_resized_size_in_input_order(tmp_path):
    model = WholeInputModel()
    detector = Detector(KerasRunner(model, lambda x: x.astype(np.float32), 64, 64), batch_size=2)
    # 80x120 and 40x60 both resize to 43x64; 60x60 to 64x64
    a, b, c, d, e = _images((80, 120), (80, 120), (40, 60), (60, 60), (80, 120))
    path = tmp_path / "e.png"
    cv2.imwrite(str(path), e)
    results = detector.predict([a, b, c, d, str(path)])
    assert [batch.shape[:3] for batch in model.batches] == [(2, 43, 64), (2, 43, 64), (1, 64, 64)]
    expected = [[0, 0, 120, 80]] * 2 + [[0, 0, 60, 40], [0, 0, 60, 60], [0, 0, 120, 80]]
    np.testing.assert_allclose([r.boxes[0] for r in results], expected, atol=1e-4)
    # a single image (path or array) gives Detections, not a list
    assert isinstance(detector.predict(str(path)), Detections)


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    path = tmp_path_factory.mktemp("inference") / "training.keras"
    training_model().save(str(path))
    return load_detector(str(path), backbone=BACKBONE, image_min_side=128, image_max_side=160, score_threshold=0.3)


def test_a_training_snapshot_is_converted_and_batching_does_not_change_results(detector):
    images = _images((100, 150), (100, 150), (120, 90))
    single = [detector.predict(image) for image in images]
    assert all(len(d) > 0 for d in single)
    detector.batch_size = 3
    try:
        batched = detector.predict(images)
    finally:
        detector.batch_size = 1
    for one, other in zip(single, batched):
        np.testing.assert_allclose(one.boxes, other.boxes, atol=1e-3)
        np.testing.assert_array_equal(one.labels, other.labels)
    for detections, image in zip(single, images):
        height, width = image.shape[:2]
        assert detections.boxes.min() >= 0
        assert detections.boxes[:, [0, 2]].max() <= width and detections.boxes[:, [1, 3]].max() <= height
        assert detections.scores.min() > 0.3 and np.all(np.diff(detections.scores) <= 0)


def test_predict_tiled_is_the_merge_of_the_tiles(detector):
    image = _images((128, 256), seed=4)[0]
    tiled = detector.predict_tiled(image, tile_size=128, overlap=0)
    left, right = detector.predict([image[:, :128], image[:, 128:]])
    expected = merge_detections(
        np.concatenate([left.boxes, right.boxes + [128, 0, 128, 0]]),
        np.concatenate([left.scores, right.scores]),
        np.concatenate([left.labels, right.labels]),
    )
    assert len(tiled) == len(expected) > 0
    np.testing.assert_allclose(tiled.boxes, expected.boxes, atol=1e-3)
    assert tiled.boxes[:, 2].max() > 128  # full-image coordinates


class BrightSquareRunner:
    """Runner stand-in: detects the bounding box of bright pixels in each tile.

    Score 0.9 when the box is inside the tile, 0.6 when it touches the tile's border.
    """

    max_batch_size = None

    def __call__(self, images):
        boxes = -np.ones((len(images), 1, 4), np.float32)
        scores = -np.ones((len(images), 1), np.float32)
        labels = np.zeros((len(images), 1), np.int32)
        for index, image in enumerate(images):
            ys, xs = np.nonzero(image[..., 0] > 128)
            if len(xs):
                box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
                height, width = image.shape[:2]
                touches = box[0] == 0 or box[1] == 0 or box[2] == width or box[3] == height
                boxes[index, 0], scores[index, 0] = box, 0.6 if touches else 0.9
        return boxes, scores, labels


def test_tiles_find_an_object_whole_and_merge_its_copies():
    image = np.zeros((300, 420, 3), np.uint8)
    image[150:190, 200:240] = 255
    detections = Detector(BrightSquareRunner(), batch_size=4).predict_tiled(image, tile_size=128, overlap=48)
    best = detections.boxes[np.isclose(detections.scores, 0.9)]
    np.testing.assert_array_equal(best, [[200, 150, 240, 190]])  # seen whole in several tiles: merged
    assert (detections.boxes[:, [0, 2]] <= 420).all() and (detections.boxes[:, [1, 3]] <= 300).all()


@pytest.mark.parametrize("height, width, tile, overlap", [(300, 420, 128, 48), (100, 1000, 256, 0), (64, 64, 128, 16),
                                                          (257, 513, 256, 255), (1000, 130, 129, 1)])  # fmt: skip
def test_tile_windows_cover_the_image_with_the_overlap(height, width, tile, overlap):
    windows = tile_windows(height, width, tile, overlap)
    covered = np.zeros((height, width), bool)
    for x1, y1, x2, y2 in windows:
        assert (x2 - x1, y2 - y1) == (min(tile, width), min(tile, height))
        assert 0 <= x1 and 0 <= y1 and x2 <= width and y2 <= height
        covered[y1:y2, x1:x2] = True
    assert covered.all()
    for column in (0, 1):  # neighbouring starts differ by at most tile - overlap
        starts = np.unique(windows[:, column])
        side = width if column == 0 else height
        if len(starts) > 1:
            assert np.diff(starts).max() <= min(tile, side) - overlap


def test_tile_windows_reject_bad_sizes():
    with pytest.raises(ValueError, match=r"tile overlap must be in \[0, tile size \(64\)\), got 64"):
        tile_windows(100, 100, 64, 64)
    with pytest.raises(ValueError, match="tile size must be >= 1"):
        tile_windows(100, 100, 0)


def test_merge_detections_is_class_wise_nms():
    boxes = [[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [20, 20, 30, 30], [0, 5, 10, 15]]
    scores = [0.8, 0.9, 0.7, 0.5, 0.6]
    labels = [0, 0, 1, 0, 0]
    merged = merge_detections(boxes, scores, labels, iou_threshold=0.5)
    # [1,0,11,10] suppresses [0,0,10,10] (IoU 0.82); class 1 survives; IoU 1/3 survives
    np.testing.assert_array_equal(merged.boxes, [[1, 0, 11, 10], [0, 0, 10, 10], [0, 5, 10, 15], [20, 20, 30, 30]])
    assert merged.labels.tolist() == [0, 1, 0, 0]
    assert len(merge_detections(np.zeros((0, 4)), [], [])) == 0


def test_csv_rows_read_back_as_annotations():
    detections = Detections(
        np.array([[1.234, 2, 30.5, 40], [5, 5, 5.001, 9]], np.float32), np.array([0.9, 0.8], np.float32),
        np.array([1, 0], np.int32),
    )  # fmt: skip
    names = {0: "cat", 1: "dog"}.get
    rows = csv_rows("images/a.png", detections, names) + csv_rows("b.png", Detections.empty(), names)
    # the second box is empty once rounded to 2 decimals: dropped
    assert rows == [["images/a.png", "1.23", "2.00", "30.50", "40.00", "dog"], ["b.png", "", "", "", "", ""]]
    parsed = _read_annotations(csv.reader([",".join(row) for row in rows]), {"cat": 0, "dog": 1})
    assert parsed["images/a.png"] == [{"x1": 1.23, "y1": 2.0, "x2": 30.5, "y2": 40.0, "class": "dog"}]
    assert parsed["b.png"] == []


def test_coco_results_are_xywh():
    detections = Detections(np.array([[10, 20, 40, 60]], np.float32), np.array([0.87654], np.float32),
                            np.array([2], np.int32))  # fmt: skip
    assert coco_results(7, detections) == [{"image_id": 7, "category_id": 2, "bbox": [10.0, 20.0, 30.0, 40.0],
                                            "score": 0.8765}]  # fmt: skip


def test_load_detector_errors_name_the_file(tmp_path):
    with pytest.raises(ModelLoadError, match=f"model not found: {tmp_path / 'nope.keras'}"):
        load_detector(str(tmp_path / "nope.keras"))
    (tmp_path / "model.h5").write_text("x")
    with pytest.raises(ModelLoadError, match=r"model.h5 is not an HDF5 file \(an .h5 model is fizyr's or Keras 2's\)"):
        load_detector(str(tmp_path / "model.h5"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=f"cannot load SavedModel {tmp_path / 'empty'}"):
        load_detector(str(tmp_path / "empty"))
    (tmp_path / "bad.tflite").write_bytes(b"not a flatbuffer")
    with pytest.raises(ModelLoadError, match=f"cannot load TFLite model {tmp_path / 'bad.tflite'}"):
        load_detector(str(tmp_path / "bad.tflite"))
    (tmp_path / "bad.keras").write_text("not a zip")
    with pytest.raises(ModelLoadError, match=f"{tmp_path / 'bad.keras'} is not a .keras model file: not a zip archive"):
        load_detector(str(tmp_path / "bad.keras"), backbone=BACKBONE)
    with pytest.raises(ValueError, match=r"expected a \(H, W, 3\) BGR image, got an array of shape \(4, 4\)"):
        Detector(BrightSquareRunner()).predict([np.zeros((4, 4))])


def test_a_converted_snapshot_returns_as_many_detections_as_asked(tmp_path):
    """More than the graph's default 300: the conversion follows max_detections."""
    path = tmp_path / "training.keras"
    training_model().save(str(path))
    image = np.random.default_rng(0).integers(0, 255, size=(128, 128, 3), dtype=np.uint8)
    detector = load_detector(str(path), max_detections=800, score_threshold=0.0, nms=False,
                             image_min_side=128, image_max_side=128)  # fmt: skip
    assert len(detector.predict(image)) == 800


# ------------------------------------------------------------------ predict_iter's pipeline


def _same(a, b, atol=0.0):
    assert len(a) == len(b)
    for one, other in zip(a, b):
        np.testing.assert_allclose(one.boxes, other.boxes, atol=atol, rtol=0)
        np.testing.assert_allclose(one.scores, other.scores, atol=atol, rtol=0)
        np.testing.assert_array_equal(one.labels, other.labels)


def test_the_pipeline_gives_the_detections_of_one_image_at_a_time(detector, tmp_path):
    """Threads and batching by resized size change neither a detection nor the order."""
    shapes = [(100, 150), (120, 90), (100, 150), (50, 75), (120, 90), (100, 150), (100, 150)]
    images = _images(*shapes, seed=3)  # 100x150 and 50x75 both resize to 107x160
    paths = []
    for index, image in enumerate(images):
        paths.append(str(tmp_path / f"{index}.png"))
        cv2.imwrite(paths[-1], image)
    items = [(f"key{i}", path) for i, path in enumerate(paths)]
    one_by_one = [detector.predict(path) for path in paths]
    assert sum(len(d) for d in one_by_one) > 0
    detector.batch_size = 3
    try:
        sequential = list(detector.predict_iter(items, workers=0))
        threaded = list(detector.predict_iter(items, workers=2))
    finally:
        detector.batch_size = 1
    for results in (sequential, threaded):
        assert [key for key, _, _ in results] == [key for key, _ in items]
        for (_, image, _), original in zip(results, images):
            np.testing.assert_array_equal(image, original)
    _same([d for _, _, d in threaded], [d for _, _, d in sequential])  # the same model calls: bit for bit
    _same([d for _, _, d in threaded], one_by_one, atol=1e-4)  # batched against one at a time: float noise


def test_unreadable_images_go_to_on_error_at_their_place_or_raise(tmp_path):
    good = _images((60, 80), (60, 80), seed=5)
    paths = [str(tmp_path / "a.png"), str(tmp_path / "broken.png"), str(tmp_path / "b.png")]
    cv2.imwrite(paths[0], good[0])
    cv2.imwrite(paths[2], good[1])
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    for workers in (0, 2):
        events = []
        detector = Detector(KerasRunner(WholeInputModel(), lambda x: x.astype(np.float32), 64, 64), batch_size=2)
        for key, _, detections in detector.predict_iter(
            enumerate(paths), workers=workers, on_error=lambda key, error: events.append((key, str(error)))
        ):  # fmt: skip
            events.append((key, len(detections)))
        assert events == [(0, 1), (1, f"could not read image {paths[1]}: not an image file, or corrupt"), (2, 1)]
        with pytest.raises(OSError, match="broken.png: not an image file"):
            list(detector.predict_iter(enumerate(paths), workers=workers))
    with pytest.raises(ValueError, match="workers must be >= 0, got -1"):
        list(detector.predict_iter(enumerate(paths), workers=-1))


class OneAtATimeRunner:
    """Runner stand-in with a fixed input (like TFLite): batch 1, never two calls at once."""

    max_batch_size = 1
    concurrent_calls = False

    def __init__(self):
        self.running = threading.Lock()
        self.calls = 0

    def prepare(self, image):
        return cv2.resize(image, (32, 32)), image.shape[:2]

    def run(self, inputs, contexts):
        assert len(inputs) == 1 and inputs[0].shape == (32, 32, 3)
        assert self.running.acquire(blocking=False), "two calls at once"
        try:
            time.sleep(0.002)
            self.calls += 1
            (height, width), = contexts
            return np.array([[[0, 0, width, height]]], np.float32), np.array([[0.9]], np.float32), np.zeros((1, 1), np.int32)
        finally:
            self.running.release()


def test_a_fixed_size_runner_gets_one_image_per_call_from_one_thread():
    runner = OneAtATimeRunner()
    images = _images((40, 60), (70, 30), (40, 60), (50, 50), seed=6)
    detector = Detector(runner, batch_size=4)
    results = list(detector.predict_iter(enumerate(images), workers=3))
    assert runner.calls == 4
    np.testing.assert_array_equal([d.boxes[0] for _, _, d in results], [[0, 0, 60, 40], [0, 0, 30, 70], [0, 0, 60, 40], [0, 0, 50, 50]])


def test_tiles_through_the_pipeline_are_the_tiles_one_by_one():
    image = np.zeros((300, 420, 3), np.uint8)
    image[150:190, 200:240] = 255
    image[20:50, 30:90] = 200
    detector = Detector(BrightSquareRunner(), batch_size=3)  # a bare callable: nothing prepared ahead
    _same([detector.predict_tiled(image, 128, 48, workers=2)], [detector.predict_tiled(image, 128, 48)])
