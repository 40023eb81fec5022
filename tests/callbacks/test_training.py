import os

import keras
import numpy as np
import pytest

from keras_retinanet.callbacks.training import (
    CosineSchedule,
    EpochSummary,
    LinearWarmup,
    NanGuard,
    Snapshot,
    TimeLimit,
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


def _fit(model, callbacks, epochs=1):
    x, y = np.ones((8, 3), np.float32), np.ones((8, 1), np.float32)
    model.fit(x, y, batch_size=2, epochs=epochs, callbacks=callbacks, verbose=0)  # 4 steps an epoch


def test_linear_warmup_ramps_to_the_rate_then_leaves_it_alone():
    model = _tiny_model()
    record = _RecordRate()
    warmup = LinearWarmup(4, learning_rate=0.01, start_factor=0.2)
    _fit(model, [warmup, record], epochs=2)
    # step i runs at 0.01 * (0.2 + 0.8 * (i + 1) / 4): the last warmup step at the full rate
    np.testing.assert_allclose(record.rates, [0.004, 0.006, 0.008, 0.01, 0.01, 0.01, 0.01, 0.01], rtol=1e-6)

    # after the warmup, a rate set by someone else (ReduceLROnPlateau) is left alone, even
    # when the next step is the first after the warmup
    model = _tiny_model()
    record = _RecordRate()
    warmup = LinearWarmup(4, learning_rate=0.01, start_factor=0.2)
    _fit(model, [warmup])
    model.optimizer.learning_rate = 0.001
    _fit(model, [warmup, record])
    np.testing.assert_allclose(record.rates, [0.001] * 4, rtol=1e-6)


class _HalveRateAt(keras.callbacks.Callback):
    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_begin(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            self.model.optimizer.learning_rate = float(self.model.optimizer.learning_rate.numpy()) / 2


def test_linear_warmup_scales_its_ramp_by_a_cut_made_meanwhile():
    model = _tiny_model()
    record = _RecordRate()
    # the cut lands before step 2: 0.006 -> 0.003, so the ramp now aims at 0.005
    _fit(model, [_HalveRateAt(2), LinearWarmup(4, 0.01, 0.2), record], epochs=2)
    np.testing.assert_allclose(record.rates, [0.004, 0.006, 0.004, 0.005, 0.005, 0.005, 0.005, 0.005], rtol=1e-6)


def _resumed_model(step, rate):
    model = _tiny_model()
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(step)
    model.optimizer.learning_rate = rate
    return model


def test_linear_warmup_continues_a_resumed_ramp_or_keeps_a_foreign_rate():
    # a snapshot written after step 1 of the ramp holds the rate of step 1: 0.006
    record, messages = _RecordRate(), []
    _fit(_resumed_model(2, 0.006), [LinearWarmup(4, 0.01, 0.2, print_fn=messages.append), record])
    np.testing.assert_allclose(record.rates, [0.008, 0.01, 0.01, 0.01], rtol=1e-6)
    assert messages == []

    # another rate (other --lr, or a schedule change) is kept, and said
    record = _RecordRate()
    _fit(_resumed_model(2, 0.0005), [LinearWarmup(4, 0.01, 0.2, print_fn=messages.append), record])
    np.testing.assert_allclose(record.rates, [0.0005] * 4, rtol=1e-6)
    assert messages == [
        "warning: warmup not continued: the resumed optimiser is at step 2 with learning rate 0.0005, "
        "not the 0.006 of a warmup to 0.01; its rate is kept"
    ]


def test_linear_warmup_rejects_bad_arguments():
    with pytest.raises(ValueError, match="steps >= 0"):
        LinearWarmup(-1, 0.01)
    with pytest.raises(ValueError, match="start_factor"):
        LinearWarmup(10, 0.01, start_factor=0)


def test_snapshot_keeps_the_last_n_and_the_best(tmp_path):
    model = _tiny_model()
    snapshot = Snapshot(str(tmp_path), "vgg16", "csv", keep_last=2, save_best=True, monitor="mAP", mode="max")
    snapshot.set_model(model)
    for epoch, value in enumerate([0.1, 0.5, 0.3, 0.4]):
        snapshot.on_epoch_end(epoch, {"loss": 1.0, "mAP": value})
    assert sorted(os.listdir(tmp_path)) == ["vgg16_csv_03.keras", "vgg16_csv_04.keras", "vgg16_csv_best.keras"]
    assert (snapshot.best_epoch, snapshot.best_value) == (2, 0.5)
    assert keras.models.load_model(str(tmp_path / "vgg16_csv_best.keras")).count_params() == 4
    with pytest.raises(ValueError, match="keep_last must be >= 1"):
        Snapshot(str(tmp_path), "vgg16", "csv", keep_last=0)


class _FakeClock:
    """A clock that advances by ``tick`` seconds every time it is read."""

    def __init__(self, tick):
        self.tick = tick
        self.now = 0.0

    def __call__(self):
        self.now += self.tick
        return self.now


def test_time_limit_stops_at_the_end_of_a_step_and_ends_the_epoch():
    model = _tiny_model()
    record = _RecordRate()
    epochs = []

    class _Epochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            epochs.append(epoch)

    # read at train begin (t=1) then after every step (t=2, 3, ...): 6 s reached after step 5
    limit = TimeLimit(5, clock=_FakeClock(1.0))
    _fit(model, [limit, record, _Epochs()], epochs=3)  # 4 steps an epoch
    assert len(record.rates) == 5
    assert limit.stopped_at == (2, 1)  # epoch 2, its first step
    assert epochs == [0, 1]  # the cut epoch still ends (its snapshot is written)
    with pytest.raises(ValueError, match="positive"):
        TimeLimit(0)


def test_cosine_schedule_warms_up_then_decays_to_its_floor():
    schedule = CosineSchedule(0.1, total_steps=8, warmup_steps=2, floor=0.0)
    rates = [schedule.rate(step) for step in range(9)]
    assert rates[0] == pytest.approx(0.1 * (0.001 + 0.999 * 0.5) * 0.5 * (1 + np.cos(0)))
    assert rates[1] == pytest.approx(0.1 * 0.5 * (1 + np.cos(np.pi / 8)))
    assert rates[4] == pytest.approx(0.05)  # half way: half the rate
    assert rates[8] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(rates[1:], rates[2:]))
    # by time: half the seconds, half the rate; after the end, the floor
    timed = CosineSchedule(0.1, seconds=100, floor=0.01)
    assert timed.rate(50, elapsed=50) == pytest.approx(0.1 * (0.01 + 0.99 * 0.5))
    assert timed.rate(10**6, elapsed=1000) == pytest.approx(0.001)

    model = _tiny_model()
    record = _RecordRate()
    _fit(model, [CosineSchedule(0.01, total_steps=4), record])
    np.testing.assert_allclose(record.rates, [CosineSchedule(0.01, total_steps=4).rate(i) for i in range(4)], rtol=1e-6)
    with pytest.raises(ValueError, match="total_steps or as seconds"):
        CosineSchedule(0.1)
    with pytest.raises(ValueError, match="total_steps or as seconds"):
        CosineSchedule(0.1, total_steps=3, seconds=3)
