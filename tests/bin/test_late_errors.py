"""Errors found early, not late: bad images do not kill a long run; unwritable outputs fail before any work.

A PNG truncated after an intact header passes every header check; met during training or
validation it is skipped, named in the epoch line and at the end, and the run goes on
(its snapshots are written). Missing files stop the run before the first step, and
``--check-images`` decodes everything up front.
"""
import os
import subprocess

import pytest

from keras_retinanet.bin import convert_model, debug, evaluate, predict, train
from keras_retinanet.utils import synthetic
from tests.detector_model import training_model

BACKBONE = "mobilenet128_0.25"


def _truncate(path):
    data = open(path, "rb").read()
    with open(path, "wb") as file:
        file.write(data[: len(data) // 3])  # the header and a few rows: the size reads, the pixels do not


@pytest.fixture()
def data(tmp_path):
    paths = synthetic.make_dataset(str(tmp_path), {"train": 6, "val": 4}, seed=4, image_size=128, min_size=32, max_size=64)
    paths["images"] = str(tmp_path / "images")
    paths["root"] = tmp_path
    return paths


def _train(data, folder, *extra, epochs=2):
    return train.main([
        "--no-weights", "--backbone", BACKBONE, "--feature-size", "8", "--head-depth", "1", "--batch-size", "2",
        "--epochs", str(epochs), "--steps", "3", "--image-min-side", "128", "--image-max-side", "128",
        "--snapshot-path", str(folder), "--tensorboard-dir", "", *extra,
        "csv", data["train"], data["classes"], "--val-annotations", data["val"],
    ])  # fmt: skip


@pytest.mark.slow
def test_unreadable_images_are_skipped_named_and_the_run_goes_on(data, tmp_path, capsys):
    bad_train = os.path.join(data["images"], "train_00002.png")
    bad_val = os.path.join(data["images"], "val_00001.png")
    _truncate(bad_train)
    _truncate(bad_val)
    folder = tmp_path / "snapshots"
    status = _train(data, folder, "--group-method", "none")
    captured = capsys.readouterr()
    assert status == 0, captured.err[-3000:]
    epoch_lines = [line for line in captured.out.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 2
    assert "unreadable image" in epoch_lines[0] and bad_train in epoch_lines[0] and bad_val in epoch_lines[0]
    assert "unreadable" not in epoch_lines[1]  # each image is reported once
    assert sorted(os.listdir(folder)) == [f"{BACKBONE}_csv_01.keras", f"{BACKBONE}_csv_02.keras", f"{BACKBONE}_csv_log.csv"]
    log = (folder / f"{BACKBONE}_csv_log.csv").read_text().splitlines()
    assert log[0].split(",")[0] == "epoch" and "mAP" in log[0].split(",") and len(log) == 3
    final = [line for line in captured.err.splitlines() if line.startswith("retinanet-train: warning: ")]
    assert len(final) == 1 and "2 unreadable images skipped" in final[0] and bad_train in final[0]

    # --check-images finds them before training; retinanet-debug --check-images lists them
    status = _train(data, tmp_path / "checked", "--check-images")
    err = capsys.readouterr().err
    assert status == 1 and f"1 training images cannot be read: {bad_train} (could not read image" in err
    assert not (tmp_path / "checked").exists() or not os.listdir(tmp_path / "checked")
    assert debug.main(["--check-images", "csv", data["train"], data["classes"]]) == 1
    out = capsys.readouterr().out
    assert "images: 6, unreadable: 1" in out and bad_train in out

    # evaluation skips it too, and says so
    snapshot = str(folder / f"{BACKBONE}_csv_02.keras")
    status = evaluate.main(["csv", data["val"], data["classes"], snapshot])
    captured = capsys.readouterr()
    assert status == 0 and "instances" in captured.out
    assert f"1 unreadable image skipped: {bad_val}" in captured.err and "the figures leave them out" in captured.err


def test_a_missing_image_stops_training_before_the_first_step(data, tmp_path, capsys):
    missing = os.path.join(data["images"], "train_00003.png")
    os.remove(missing)
    status = _train(data, tmp_path / "snapshots", "--group-method", "random")
    err = capsys.readouterr().err
    assert status == 1
    assert f"retinanet-train: error: 1 training images cannot be read: {missing} (missing)" in err
    assert not (tmp_path / "snapshots").exists() or os.listdir(tmp_path / "snapshots") == []


def _one_line(capsys, status):
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("Loading model")]
    assert status == 1 and len(lines) == 1, err
    return lines[0]


def test_outputs_that_cannot_be_written_fail_before_any_work(data, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    snapshot = tmp_path / "snapshot.keras"
    training_model().save(str(snapshot))
    inside = str(blocker / "out")

    assert f"cannot write the --snapshot-path folder {inside}: {blocker} is not a folder" in _one_line(
        capsys, _train(data, inside))
    status = predict.main([str(snapshot), data["images"], "--output-dir", inside])
    assert f"cannot write the --output-dir {inside}: {blocker} is not a folder" in _one_line(capsys, status)
    status = evaluate.main(["csv", data["val"], data["classes"], str(snapshot), "--json", os.path.join(inside, "f.json")])
    assert f"{blocker} is not a folder" in _one_line(capsys, status)
    status = evaluate.main(["csv", data["val"], data["classes"], str(snapshot), "--save-path", inside])
    assert f"cannot write the --save-path folder {inside}" in _one_line(capsys, status)
    status = debug.main(["--no-gui", "--output-dir", inside, "csv", data["val"], data["classes"]])
    assert f"cannot write the --output-dir {inside}" in _one_line(capsys, status)
    status = convert_model.main([str(snapshot), os.path.join(inside, "m.keras")])
    assert f"{blocker} is not a folder" in _one_line(capsys, status)

    # a folder that does not exist yet is made
    out = tmp_path / "new" / "folder" / "model.keras"
    assert convert_model.main([str(snapshot), str(out)]) == 0 and out.is_file()


def test_a_read_only_file_system_is_refused_up_front(data, tmp_path, capsys):
    disk = tmp_path / "ro"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        status = _train(data, disk / "snapshots")
        assert f"cannot write the --snapshot-path folder {disk / 'snapshots'}: {disk} is not writable" in _one_line(
            capsys, status)
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_anchors_that_cannot_match_stop_training_before_it_starts(data, tmp_path, capsys):
    """Silent before: levels no anchor stride fits, or boxes no anchor matches, gave a regression loss of 0."""
    config = tmp_path / "levels.ini"
    config.write_text("[pyramid_levels]\nlevels = 5 6 7\n")
    message = _one_line(capsys, _train(data, tmp_path / "a", "--config", str(config)))
    assert "pyramid levels 5 6 7 have feature-map strides 32 64 128 px, but the anchor strides are 8 16 32" in message

    tiny = synthetic.make_dataset(str(tmp_path / "tiny"), {"train": 4}, seed=1, image_size=128, min_size=6, max_size=10)
    status = train.main(["--no-weights", "--backbone", BACKBONE, "--epochs", "1", "--steps", "1", "--image-min-side",
                         "128", "--image-max-side", "128", "--snapshot-path", str(tmp_path / "b"), "--tensorboard-dir",
                         "", "csv", tiny["train"], tiny["classes"]])  # fmt: skip
    message = _one_line(capsys, status)
    assert message.startswith("retinanet-train: error: training would learn nothing: ")
    assert "boxes in 4 training images get no positive anchor (IoU >= 0.5 with none); the boxes' shorter sides are" in message
    assert "the anchors' sides 32 .. 812.7 px" in message and "--config" in message


def test_a_truncated_jpeg_is_caught_not_decoded_as_grey(tmp_path):
    import cv2

    from keras_retinanet.utils.image import read_image_bgr

    image = synthetic.make_image(__import__("numpy").random.default_rng(0), 96, 96, 2, 20, 40)[0]
    path = tmp_path / "a.jpg"
    cv2.imwrite(str(path), image)
    assert read_image_bgr(str(path)).shape == (96, 96, 3)
    _truncate(path)
    with pytest.raises(OSError, match="a JPEG cut short"):
        read_image_bgr(str(path))


def test_bad_weights_and_unresumable_snapshots_are_one_line(data, tmp_path, capsys):
    bad = tmp_path / "weights.keras"
    bad.write_bytes(b"not weights at all" * 10)
    status = train.main(["--weights", str(bad), "--backbone", BACKBONE, "--epochs", "1", "--steps", "1",
                         "--image-min-side", "128", "--image-max-side", "128", "--snapshot-path", str(tmp_path / "a"),
                         "--tensorboard-dir", "", "csv", data["train"], data["classes"]])  # fmt: skip
    assert _one_line(capsys, status).startswith(f"retinanet-train: error: cannot load the weights of {bad}: ")
    folder = tmp_path / "folder.keras"
    folder.mkdir()
    message = _one_line(capsys, train.main(["--snapshot", str(folder), "csv", data["train"], data["classes"]]))
    assert message == f"retinanet-train: error: snapshot {folder} is a folder, not a file"


@pytest.mark.slow
def test_resuming_keeps_the_best_snapshot_the_log_and_the_epoch(data, tmp_path, capsys):
    import csv

    from keras_retinanet.spec import read_spec

    folder = tmp_path / "s"
    assert _train(data, folder, "--save-best", "--no-evaluation", epochs=2) == 0
    out = capsys.readouterr().out
    assert f"best snapshot: {folder / (BACKBONE + '_csv_best.keras')} (epoch " in out
    best = folder / f"{BACKBONE}_csv_best.keras"
    best_epoch = read_spec(best).epoch
    assert best_epoch in (1, 2)
    # it is never written over while it is the input
    status = train.main(["--snapshot", str(best), "--epochs", "3", "--steps", "1", "--snapshot-path", str(folder),
                         "--tensorboard-dir", "", "--save-best", "--overwrite", "csv", data["train"], data["classes"]])
    assert "is one of the inputs" in _one_line(capsys, status)
    # resume from the best snapshot (its name has no epoch: its spec has), now with validation data
    status = train.main(["--snapshot", str(best), "--epochs", "3", "--steps", "1", "--snapshot-path", str(folder),
                         "--tensorboard-dir", "", "--overwrite", "csv", data["train"], data["classes"],
                         "--val-annotations", data["val"]])  # fmt: skip
    captured = capsys.readouterr()
    assert status == 0, captured.err[-2000:]
    assert [line.split(" |")[0] for line in captured.out.splitlines() if line.startswith("epoch ")] == [
        f"epoch {e}" for e in range(best_epoch + 1, 4)]
    with open(folder / f"{BACKBONE}_csv_log.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["epoch"] for row in rows][-1] == "3" and "mAP" in rows[-1] and rows[-1]["mAP"] != ""
    assert all(row["loss"] for row in rows)  # the columns did not shift
