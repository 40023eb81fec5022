"""No tool loses a user's file: every data-loss case of the hostile probe is refused or harmless.

Each test checksums the user's files before and after. Faults are real where the machine
allows it: a small tmpfs that fills up, kill -9 of a training process in the middle of a
snapshot save, a second training run started while the first one runs; a mocked ENOSPC
covers a full disk where tmpfs cannot be mounted.
"""
import errno
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from keras_retinanet.bin import convert_model, debug, evaluate, predict, train
from keras_retinanet.utils import files, synthetic
from tests.detector_model import training_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BACKBONE = "mobilenet128_0.25"


def checksums(folder):
    """{relative path: sha256} of every file under ``folder`` (hidden ones too)."""
    result = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as file:
                result[os.path.relpath(path, folder)] = hashlib.sha256(file.read()).hexdigest()
    return result


def one_line_error(capsys, status, prefix):
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("Loading model")]
    assert status == 1 and len(lines) == 1 and lines[0].startswith(prefix), err
    return lines[0]


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A user's folder: a dataset of PNGs, its CSVs, and a training snapshot."""
    root = tmp_path_factory.mktemp("user")
    paths = synthetic.make_dataset(str(root), {"train": 4, "val": 3}, seed=2, image_size=128, min_size=30, max_size=60)
    snapshot = root / "snapshot.keras"
    training_model().save(str(snapshot))
    paths.update(root=root, snapshot=str(snapshot), images=str(root / "images"))
    return paths


def test_predict_never_writes_over_its_input_images(user, capsys):
    before = checksums(user["root"])
    status = predict.main([user["snapshot"], user["images"], "--output-dir", user["images"], "--backbone", BACKBONE])
    message = one_line_error(capsys, status, f"retinanet-predict: error: --output-dir {user['images']} is a folder ")
    assert "of the input images: the annotated copies would mix with them" in message
    # not even when told to overwrite; and an output named like an input elsewhere is refused too
    status = predict.main([user["snapshot"], user["images"], "--output-dir", user["images"], "--overwrite"])
    assert "is a folder of the input images" in one_line_error(capsys, status, "retinanet-predict: error:")
    image = os.path.join(user["images"], "val_00000.png")
    status = predict.main([user["snapshot"], image, "--no-images", "--csv", image, "--overwrite",
                           "--output-dir", str(user["root"] / "p")])  # fmt: skip
    assert "is one of the inputs: it is never written over" in one_line_error(capsys, status, "retinanet-predict: error:")
    assert checksums(user["root"]) == before


def test_predict_and_evaluate_and_debug_keep_earlier_outputs_unless_told(user, tmp_path, capsys):
    out = tmp_path / "predictions"
    assert predict.main([user["snapshot"], user["images"], "--output-dir", str(out), "--backbone", BACKBONE]) == 0
    capsys.readouterr()
    earlier = checksums(out)
    status = predict.main([user["snapshot"], user["images"], "--output-dir", str(out), "--backbone", BACKBONE])
    message = one_line_error(capsys, status, "retinanet-predict: error: the annotated image ")
    assert "exists already (from an earlier run?): pass --overwrite to replace it" in message
    assert checksums(out) == earlier
    assert predict.main([user["snapshot"], user["images"], "--output-dir", str(out), "--overwrite",
                         "--backbone", BACKBONE]) == 0  # fmt: skip
    assert sorted(checksums(out)) == sorted(earlier)  # the same files, written again; no temporaries
    capsys.readouterr()

    figures = tmp_path / "figures.json"
    figures.write_text("my notes")
    status = evaluate.main(["csv", user["val"], user["classes"], user["snapshot"], "--backbone", BACKBONE,
                            "--json", str(figures)])  # fmt: skip
    assert f"the --json file {figures} exists already" in one_line_error(capsys, status, "retinanet-evaluate: error:")
    assert figures.read_text() == "my notes"

    pictures = tmp_path / "debug"
    pictures.mkdir()
    (pictures / "00000_val_00000.png").write_bytes(b"mine")
    status = debug.main(["--no-gui", "--output-dir", str(pictures), "csv", user["val"], user["classes"]])
    assert "exists already" in one_line_error(capsys, status, "retinanet-debug: error: the picture ")
    assert (pictures / "00000_val_00000.png").read_bytes() == b"mine"


def test_convert_never_replaces_its_input(user, capsys):
    before = checksums(user["root"])
    for extra in ([], ["--overwrite"]):
        status = convert_model.main([user["snapshot"], user["snapshot"], "--backbone", BACKBONE, *extra])
        message = one_line_error(capsys, status, "retinanet-convert-model: error: the output model ")
        assert "is one of the inputs" in message
    assert checksums(user["root"]) == before


def _fill_on_write(monkeypatch, after_bytes=1000):
    """Make every write of an atomic output fail with ENOSPC once it has written ``after_bytes``."""
    real = files.write_atomically

    def full_disk(path, write):
        def partial(temporary):
            write(temporary)
            with open(temporary, "r+b") as file:  # what a full disk leaves: a truncated file
                file.truncate(after_bytes)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        return real(path, partial)

    monkeypatch.setattr(files, "write_atomically", full_disk)


def test_convert_on_a_full_disk_keeps_the_previous_model(user, tmp_path, capsys, monkeypatch):
    target = tmp_path / "model.keras"
    assert convert_model.main([user["snapshot"], str(target), "--backbone", BACKBONE]) == 0
    capsys.readouterr()
    before = checksums(tmp_path)
    _fill_on_write(monkeypatch)
    status = convert_model.main([user["snapshot"], str(target), "--backbone", BACKBONE, "--overwrite"])
    message = one_line_error(capsys, status, "retinanet-convert-model: error: cannot write ")
    assert message.endswith(f"{target}: no space left on the device")
    assert checksums(tmp_path) == before  # the old model intact, no temporary left


def _mount_tmpfs(folder, size):
    folder.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    return result.returncode == 0


def test_convert_onto_a_real_full_tmpfs_keeps_the_previous_model(user, tmp_path, capsys):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "16m"):
        pytest.skip("cannot mount a tmpfs here (the mocked ENOSPC test covers a full disk)")
    try:
        target = disk / "model.keras"
        target.write_bytes(b"the previous model")
        (disk / "filler").write_bytes(b"\0" * (16 * 1024 * 1024 - 64 * 1024))  # leaves less than the model needs
        status = convert_model.main([user["snapshot"], str(target), "--backbone", BACKBONE, "--overwrite"])
        message = one_line_error(capsys, status, "retinanet-convert-model: error: cannot write ")
        assert "no space left on the device" in message
        assert target.read_bytes() == b"the previous model"
        assert sorted(os.listdir(disk)) == ["filler", "model.keras"]
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# ------------------------------------------------------------------------------ training


def _train_args(user, folder, epochs, *extra):
    return ["--no-weights", "--backbone", BACKBONE, "--feature-size", "8", "--head-depth", "1", "--batch-size", "2",
            "--epochs", str(epochs), "--steps", "1", "--image-min-side", "128", "--image-max-side", "128",
            "--snapshot-path", str(folder), "--tensorboard-dir", "", "--no-evaluation", *extra,
            "csv", user["train"], user["classes"]]  # fmt: skip


SLOW_SAVE = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r})
    from keras_retinanet.utils import files
    real = files._fsync_tree
    def slow(path):  # the save of each snapshot lasts long enough to be killed in the middle
        time.sleep(1.5)
        real(path)
    files._fsync_tree = slow
    from keras_retinanet.bin import train
    sys.exit(train.main({args!r}))
    """
)


def _wait_for(predicate, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.slow
def test_a_second_run_and_a_kill_during_a_save_lose_nothing(user, tmp_path, capsys):
    folder = tmp_path / "snapshots"
    script = SLOW_SAVE.format(repo=REPO, args=_train_args(user, folder, 100))
    first = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def temporaries():
            return [n for n in os.listdir(folder) if n.endswith(".tmp.keras")] if folder.is_dir() else []

        def snapshots():
            return sorted(n for n in os.listdir(folder) if n.endswith(".keras") and not n.startswith("."))

        # a second run into the same folder while the first trains: refused at once
        assert _wait_for(lambda: folder.is_dir() and snapshots(), 240), first.stderr.read().decode()[-3000:]
        status = train.main(_train_args(user, folder, 3))
        message = one_line_error(capsys, status, "retinanet-train: error: ")
        assert f"{folder} is in use by another retinanet-train run (process {first.pid})" in message

        # kill -9 while a snapshot is being written: the earlier snapshots stay whole
        assert _wait_for(lambda: len(snapshots()) >= 2 and temporaries(), 120)
        kept = {name: digest for name, digest in checksums(folder).items() if name in snapshots()}
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    left = temporaries()
    assert left, "the kill should have left the unfinished snapshot's temporary"
    assert {name: digest for name, digest in checksums(folder).items() if name in kept} == kept

    from keras_retinanet import models

    for name in kept:
        models.load_model(str(folder / name))  # every snapshot written before the kill loads

    # the next run: its existing snapshots are refused, the unfinished one is cleaned up
    last = max(kept)
    status = train.main(_train_args(user, folder, 100))
    assert "exists already (from an earlier run?): pass --overwrite" in one_line_error(capsys, status, "retinanet-train: error:")
    epochs = int(last[-8:-6]) + 1
    status = train.main(["--snapshot", str(folder / last), "--epochs", str(epochs), "--steps", "1",
                         "--snapshot-path", str(folder), "--tensorboard-dir", "", "--no-evaluation",
                         "csv", user["train"], user["classes"]])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 0, err
    assert f"retinanet-train: note: removed {folder / left[0]}: an unfinished snapshot of an interrupted run" in err
    assert temporaries() == []
    assert {name: digest for name, digest in checksums(folder).items() if name in kept} == kept


def test_training_refuses_to_write_over_earlier_snapshots(user, tmp_path, capsys):
    folder = tmp_path / "snapshots"
    folder.mkdir()
    earlier = folder / f"{BACKBONE}_csv_02.keras"
    earlier.write_bytes(b"an earlier run's snapshot")
    status = train.main(_train_args(user, folder, 3))
    message = one_line_error(capsys, status, "retinanet-train: error: the snapshot ")
    assert f"{earlier} exists already (from an earlier run?): pass --overwrite to replace it" in message
    assert earlier.read_bytes() == b"an earlier run's snapshot"
    assert sorted(os.listdir(folder)) == [earlier.name]


def test_an_output_folder_is_never_emptied(user, tmp_path, capsys):
    """--overwrite replaces an earlier output of the same kind, never a folder of the user's."""
    work = tmp_path / "work"
    work.mkdir()
    model = work / "m.keras"
    model.write_bytes(open(user["snapshot"], "rb").read())
    (work / "thesis.txt").write_text("three years")
    before = checksums(work)
    status = convert_model.main(["--overwrite", str(model), str(work)])  # the folder holding the input
    assert "is a folder that holds the input" in one_line_error(capsys, status, "retinanet-convert-model: error:")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "notes.txt").write_text("mine")
    status = convert_model.main(["--overwrite", str(model), str(photos)])  # a folder that is not a SavedModel
    assert "is an existing folder (no saved_model.pb in it): it is never replaced" in one_line_error(
        capsys, status, "retinanet-convert-model: error:")
    assert checksums(work) == before and (photos / "notes.txt").read_text() == "mine"


def test_predict_never_writes_over_its_model_or_classes(user, tmp_path, capsys):
    classes = tmp_path / "classes.csv"
    classes.write_text("rectangle,0\ncircle,1\ntriangle,2\n")
    image = os.path.join(user["images"], "val_00000.png")
    before = checksums(user["root"])
    status = predict.main([user["snapshot"], image, "--classes", str(classes), "--csv", str(classes), "--overwrite",
                           "--output-dir", str(tmp_path / "p1")])  # fmt: skip
    assert "is one of the inputs" in one_line_error(capsys, status, "retinanet-predict: error:")
    status = predict.main([user["snapshot"], image, "--json", user["snapshot"], "--overwrite",
                           "--output-dir", str(tmp_path / "p2")])  # fmt: skip
    assert "is one of the inputs" in one_line_error(capsys, status, "retinanet-predict: error:")
    jpgs = tmp_path / "jpgs"
    jpgs.mkdir()
    import cv2

    cv2.imwrite(str(jpgs / "a.jpg"), cv2.imread(image))
    status = predict.main([user["snapshot"], str(jpgs), "--output-dir", str(jpgs)])
    assert "is a folder of the input images" in one_line_error(capsys, status, "retinanet-predict: error:")
    assert classes.read_text().startswith("rectangle,0") and checksums(user["root"]) == before
    assert os.listdir(jpgs) == ["a.jpg"]
