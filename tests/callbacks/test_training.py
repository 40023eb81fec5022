import os

import keras
import numpy as np
import pytest

from keras_retinanet.callbacks.training import (
    EpochSummary,
    LinearWarmup,
    NanGuard,
    Snapshot,
    epoch_from_snapshot,
    save_atomically,
    snapshot_path,
)


def _tiny_model():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    return model


def test_snapshot_names_round_trip():
    path = snapshot_path("snaps", "resnet50", "csv", 7)
    assert path == os.path.join("snaps", "resnet50_csv_07.keras")
    assert epoch_from_snapshot(path) == 7
    assert epoch_from_snapshot("mobilenet128_0.25_coco_123.keras") == 123
    assert epoch_from_snapshot("model.keras") is None


def test_save_atomically_never_leaves_a_partial_file(tmp_path, monkeypatch):
    model = _tiny_model()
    target = tmp_path / "resnet50_csv_01.keras"
    save_atomically(model, str(target))
    good = target.read_bytes()
    assert keras.models.load_model(str(target)).count_params() == 4

    def crash_mid_write(path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 truncated")
        raise OSError("disk full")

    monkeypatch.setattr(model, "save", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        save_atomically(model, str(target))
    assert target.read_bytes() == good  # the old snapshot is intact
    assert sorted(os.listdir(tmp_path)) == ["resnet50_csv_01.keras"]  # no temporary left behind


def test_snapshot_callback_writes_each_epoch_and_skips_nan(tmp_path):
    model = _tiny_model()
    snapshot = Snapshot(str(tmp_path), "vgg16", "csv")
    snapshot.set_model(model)
    snapshot.on_epoch_end(0, {"loss": 1.0})
    snapshot.on_epoch_end(1, {"loss": float("nan")})
    assert os.listdir(tmp_path) == ["vgg16_csv_01.keras"]
    assert snapshot.last_path == str(tmp_path / "vgg16_csv_01.keras")


def test_nan_guard_stops_and_names_the_last_snapshot(tmp_path):
    model = _tiny_model()
    snapshot = Snapshot(str(tmp_path), "resnet50", "csv", last_path="snaps/resnet50_csv_03.keras")
    guard = NanGuard(snapshot)
    x = np.ones((8, 3), np.float32)
    y = np.full((8, 1), np.nan, np.float32)  # the loss is NaN from the first batch on
    history = model.fit(x, y, batch_size=4, epochs=5, callbacks=[guard, snapshot], verbose=0)
    assert len(history.history["loss"]) == 1  # stopped in the first epoch
    assert "the loss became nan in epoch 1, batch 1" in guard.message
    assert "last good snapshot: snaps/resnet50_csv_03.keras" in guard.message
    assert os.listdir(tmp_path) == []


def test_epoch_summary_reports_losses_rate_and_map():
    lines = []
    model = _tiny_model()
    summary = EpochSummary(batch_size=4, print_fn=lines.append)
    x = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    model.fit(x, x[:, :1], batch_size=4, epochs=2, callbacks=[summary], verbose=0)
    assert len(lines) == 2 and lines[1].startswith("\nepoch 2 | loss ")
    assert "images/s" in lines[0] and "lr 1.00e-02" in lines[0]
    assert summary.history[0]["images_per_second"] > 0
    summary.on_epoch_begin(2)
    summary.on_epoch_end(2, {"loss": 0.5, "mAP": 0.75})
    assert "mAP 0.7500" in lines[-1]


class _RecordRate(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def test_linear_warmup_ramps_then_hands_over_and_resumes_mid_ramp():
    model = _tiny_model()
    x, y = np.ones((8, 3), np.float32), np.ones((8, 1), np.float32)
    record = _RecordRate()
    warmup = LinearWarmup(4, learning_rate=0.01, start_factor=0.2)
    model.fit(x, y, batch_size=2, epochs=2, callbacks=[warmup, record], verbose=0)  # 8 steps
    np.testing.assert_allclose(record.rates, [0.002, 0.004, 0.006, 0.008, 0.01, 0.01, 0.01, 0.01], rtol=1e-6)

    # once warmed up, a schedule set by someone else (ReduceLROnPlateau) is left alone
    model.optimizer.learning_rate = 0.001
    record.rates.clear()
    model.fit(x, y, batch_size=2, epochs=1, callbacks=[warmup, record], verbose=0)
    np.testing.assert_allclose(record.rates, [0.001] * 4, rtol=1e-6)

    # a resumed optimiser (iterations = 2) continues the ramp from step 2
    resumed = _tiny_model()
    resumed.optimizer.build(resumed.trainable_variables)
    resumed.optimizer.iterations.assign(2)
    record = _RecordRate()
    resumed.fit(x, y, batch_size=2, epochs=1, callbacks=[LinearWarmup(4, 0.01, 0.2), record], verbose=0)
    np.testing.assert_allclose(record.rates, [0.006, 0.008, 0.01, 0.01], rtol=1e-6)


def test_linear_warmup_rejects_bad_arguments():
    with pytest.raises(ValueError, match="steps >= 0"):
        LinearWarmup(-1, 0.01)
    with pytest.raises(ValueError, match="start_factor"):
        LinearWarmup(10, 0.01, start_factor=0)
