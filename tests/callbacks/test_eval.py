import glob

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_retinanet.callbacks import CocoEval, Evaluate, RedirectModel
from keras_retinanet.utils.coco_eval import COCO_METRIC_NAMES

BOXES = np.array([[10, 10, 40, 30], [50, 20, 90, 60], [5, 40, 30, 70]], dtype=np.float64)
LABELS = np.array([0, 1, 1])


@pytest.fixture
def dataset(fake_detection_generator):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, size=(80, 100, 3), dtype=np.uint8) for _ in range(3)]
    annotations = [{"bboxes": BOXES.copy(), "labels": LABELS.copy()} for _ in range(3)]
    return fake_detection_generator(images, annotations, ["square", "round"])


def perfect(count=3):
    return [(BOXES, np.array([0.9, 0.8, 0.7]), LABELS)] * count


def half_of_round_missed(count=3):
    # class 'round' (2 boxes per image): one found, one replaced by a miss that ranks first
    boxes = np.array([[10, 10, 40, 30], [50, 20, 90, 60], [60, 0, 99, 10]], dtype=np.float64)
    return [(boxes, np.array([0.9, 0.5, 0.8]), LABELS)] * count


def tiny_training_model():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    return model


def fit(model, callbacks, epochs):
    data = np.zeros((8, 4), dtype=np.float32), np.zeros((8, 1), dtype=np.float32)
    return model.fit(*data, epochs=epochs, batch_size=8, verbose=0, callbacks=callbacks)


def test_map_reaches_the_logs_and_early_stopping(dataset, fake_inference_model):
    # the "converter" gives a perfect model after epoch 1 and a worse one afterwards
    models = iter([fake_inference_model(perfect()), fake_inference_model(half_of_round_missed())] * 3)
    converted = []

    def convert(training_model):
        converted.append(training_model)
        return next(models)

    training_model = tiny_training_model()
    evaluation = Evaluate(dataset, prediction_model=convert, verbose=0)
    stop = keras.callbacks.EarlyStopping(monitor="mAP", mode="max", patience=0)
    history = fit(training_model, [evaluation, stop], epochs=5)

    # round: precision 0, 1/2, 1/3, 1/4, 2/5, 1/2 over recall 0 .. 1/2 (misses rank first)
    assert history.history["mAP"] == pytest.approx([1.0, (1.0 + 0.25) / 2])
    assert len(history.history["loss"]) == 2  # stopped: mAP did not improve
    assert all(model is training_model for model in converted)
    assert evaluation.average_precisions == {0: (1.0, 3), 1: (pytest.approx(0.25), 6)}


def test_weighted_average(dataset, fake_inference_model):
    evaluation = Evaluate(dataset, prediction_model=fake_inference_model(half_of_round_missed()),
                          weighted_average=True, verbose=0)
    logs = {}
    evaluation.on_epoch_end(0, logs)
    assert logs["mAP"] == pytest.approx((1.0 * 3 + 0.25 * 6) / 9)


def test_redirect_model_and_printout(dataset, fake_inference_model, capsys):
    evaluation = RedirectModel(Evaluate(dataset, verbose=1), fake_inference_model(perfect()))
    history = fit(tiny_training_model(), [evaluation], epochs=1)
    assert history.history["mAP"] == [1.0]
    out = capsys.readouterr().out
    assert "3 instances of class square with average precision: 1.0000" in out
    assert "mAP: 1.0000" in out


def test_training_model_without_prediction_model_is_reported(dataset):
    # an image model with a training model's two outputs, regression and classification
    inputs = keras.Input((None, None, 3))
    regression = keras.layers.Reshape((-1, 4), name="regression")(keras.layers.Conv2D(4, 1)(inputs))
    classification = keras.layers.Reshape((-1, 2), name="classification")(keras.layers.Conv2D(2, 1)(inputs))
    evaluation = Evaluate(dataset, verbose=0)
    evaluation.set_model(keras.Model(inputs, [regression, classification]))
    with pytest.raises(ValueError, match=r"inference model returning \[boxes, scores, labels\] \(found 2 outputs\)"):
        evaluation.on_epoch_end(0, {})


def read_scalars(folder):
    scalars = {}
    for path in sorted(glob.glob(f"{folder}/**/events.out.tfevents.*", recursive=True)):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    return scalars


def test_tensorboard_folder_gets_map_per_epoch(dataset, fake_inference_model, tmp_path):
    models = iter([fake_inference_model(half_of_round_missed()), fake_inference_model(perfect())])
    evaluation = Evaluate(dataset, prediction_model=lambda _: next(models), tensorboard=str(tmp_path), verbose=0)
    fit(tiny_training_model(), [evaluation], epochs=2)
    scalars = read_scalars(tmp_path)
    assert scalars["mAP"] == [(0, pytest.approx(0.625)), (1, pytest.approx(1.0))]
    assert scalars["AP/round"] == [(0, pytest.approx(0.25)), (1, pytest.approx(1.0))]


def test_tensorboard_callback_gets_map_in_its_validation_folder(dataset, fake_inference_model, tmp_path):
    board = keras.callbacks.TensorBoard(log_dir=str(tmp_path))
    evaluation = Evaluate(dataset, prediction_model=fake_inference_model(perfect()), tensorboard=board, verbose=0)
    fit(tiny_training_model(), [evaluation], epochs=1)  # (the TensorBoard callback needs tensorboard)
    assert read_scalars(tmp_path / "validation")["mAP"] == [(0, 1.0)]


def test_bad_tensorboard_and_prediction_model_are_reported(dataset):
    with pytest.raises(TypeError, match="tensorboard must be a log folder"):
        Evaluate(dataset, prediction_model=lambda m: m, tensorboard=42, verbose=0)._scalars.write({"mAP": 1}, 0)
    with pytest.raises(TypeError, match="prediction_model must be None"):
        Evaluate(dataset, prediction_model=3, verbose=0).on_epoch_end(0, {})


def test_coco_eval_logs_twelve_figures(dataset, fake_inference_model, tmp_path):
    evaluation = CocoEval(dataset, prediction_model=fake_inference_model(perfect()), tensorboard=str(tmp_path), verbose=0)
    history = fit(tiny_training_model(), [evaluation], epochs=1)
    for name in COCO_METRIC_NAMES:
        assert f"coco_{name}" in history.history
    assert history.history["coco_AP"] == [pytest.approx(1.0)]
    assert history.history["coco_AP50"] == [pytest.approx(1.0)]
    assert history.history["coco_APl"] == [-1.0]  # no box larger than 96 x 96
    assert read_scalars(tmp_path)["coco/AP"] == [(0, pytest.approx(1.0))]
