"""retinanet-train --strategy multi-worker: two worker processes on localhost against one process.

The workers (TF_CONFIG with free ports, gRPC ring collectives on the CPU) each load half
of every global batch; one process trains on the whole batches with the same flags. Both
start from the same weights (--seed) and see the same batches and flips, and the focal and
box losses count the positives of the whole global batch: the loss and the weights after
two SGD steps agree to float rounding.

The backbone's BatchNormalization runs in inference mode (--freeze-bn, as with pretrained
weights). Trainable, it is synchronised over the workers (tests/utils/test_model.py checks
that synchronised statistics give one device's result), but from scratch this tiny model's
first gradients are chaotic: on one device, inputs changed by one part in a million move
the weights after two steps by as much as the steps themselves, so no comparison of
weights could tell a bug from rounding.
"""
import csv
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from keras_retinanet.bin import train
from keras_retinanet.utils import synthetic

BACKBONE = "mobilenet128_0.25"
TRAIN_IMAGES = 8
VAL_IMAGES = 4
BATCH = 4
STEPS = 2
TIMEOUT = 600  # seconds for the whole run of the workers (a loaded 2-core machine takes a few minutes)

# Each worker runs retinanet-train's main with the image decoder counted: every image it
# decodes is appended to the file named by DECODE_LOG.
WORKER_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from keras_retinanet.preprocessing.csv_generator import CSVGenerator

    decode = CSVGenerator.load_image
    log = open(os.environ["DECODE_LOG"], "a", encoding="utf-8")

    def counted(self, image_index):
        log.write(os.path.basename(self.image_path(image_index)) + "\\n")
        log.flush()
        return decode(self, image_index)

    CSVGenerator.load_image = counted
    from keras_retinanet.bin import train

    sys.exit(train.main(sys.argv[1:]))
    """
)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    """Eight 64 px training images (two batches of four) and four validation images (one batch)."""
    folder = tmp_path_factory.mktemp("small")
    paths = synthetic.make_dataset(
        str(folder), {"train": TRAIN_IMAGES, "val": VAL_IMAGES}, seed=3, image_size=64, min_size=24, max_size=48
    )
    paths["dir"] = str(folder)
    return paths


def _flags(dataset, out, name):
    """The run's flags: a tiny model, two SGD steps of a global batch of four, no clipping; validation
    mAP and loss."""
    return [
        "--no-weights", "--freeze-bn", "--backbone", BACKBONE, "--feature-size", "16", "--head-depth", "1",
        "--batch-size", str(BATCH), "--epochs", "1", "--steps", str(STEPS),
        "--optimizer", "sgd", "--lr", "0.01", "--optimizer-clipnorm", "0",
        "--image-min-side", "64", "--image-max-side", "64", "--seed", "1",
        "--workers", "1", "--max-queue-size", "1", "--compute-val-loss",
        "--snapshot-path", str(out / f"snapshots_{name}"), "--tensorboard-dir", str(out / f"logs_{name}"),
    ]  # fmt: skip


def _data(dataset):
    return ["csv", dataset["train"], dataset["classes"], "--val-annotations", dataset["val"]]


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _logged(folder):
    """The epoch's figures in a run's CSV log (full precision)."""
    with open(folder / f"{BACKBONE}_csv_log.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 1
    return {key: float(value) for key, value in rows[0].items()}


def _summary(out):
    lines = [line for line in out.splitlines() if re.match(r"epoch 1 \| ", line)]
    assert len(lines) == 1, out[-3000:]
    return lines[0]


def _state(path):
    """(weights, SGD velocities) of a snapshot, in the model's order (names may differ between processes)."""
    import keras

    model = keras.models.load_model(str(path))
    velocities = [v for v in model.optimizer.variables if v.path.endswith("_momentum")]
    assert len(velocities) == len(model.trainable_weights)
    return [np.asarray(w.numpy()) for w in model.weights], [np.asarray(v.numpy()) for v in velocities]


def _start_workers(dataset, out, flags_of):
    """Start two workers on localhost (TF_CONFIG with free ports); returns their processes and output files."""
    script = out / "worker.py"
    script.write_text(WORKER_SCRIPT)
    cluster = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    workers = []
    for index in range(2):
        worker_env = dict(env, DECODE_LOG=str(out / f"decoded_{index}.txt"))
        task = {"type": "worker", "index": index}
        worker_env["TF_CONFIG"] = json.dumps({"cluster": {"worker": cluster}, "task": task})
        command = [sys.executable, str(script), *flags_of(index), "--strategy", "multi-worker", *_data(dataset)]
        stdout, stderr = open(out / f"stdout_{index}.txt", "w+"), open(out / f"stderr_{index}.txt", "w+")
        workers.append((subprocess.Popen(command, stdout=stdout, stderr=stderr, env=worker_env), stdout, stderr))
    return workers


def _finish_workers(workers, out, deadline):
    """Wait for both workers until ``deadline`` (time.monotonic), killing both at the first failure or then.

    Returns:
        [(exit status, stdout, stderr, decoded image names)] of worker 0 (the chief) and 1.
    """
    try:
        while any(process.poll() is None for process, _, _ in workers):
            if time.monotonic() > deadline or any(process.poll() not in (None, 0) for process, _, _ in workers):
                break
            time.sleep(0.2)
    finally:
        for process, _, _ in workers:
            if process.poll() is None:
                process.kill()
            process.wait()
    results = []
    for index, (process, stdout, stderr) in enumerate(workers):
        stdout.seek(0), stderr.seek(0)
        decoded_path = out / f"decoded_{index}.txt"
        decoded = decoded_path.read_text().split() if decoded_path.exists() else []
        results.append((process.returncode, stdout.read(), stderr.read(), decoded))
        stdout.close(), stderr.close()
    return results


@pytest.mark.slow
def test_two_workers_train_as_one_process_on_the_global_batch(small_dataset, tmp_path, capsys):
    out = tmp_path
    start = time.monotonic()
    # every worker gets the same command but its own folders, as on two machines
    workers = _start_workers(small_dataset, out, lambda index: _flags(small_dataset, out, f"worker{index}"))
    try:  # meanwhile, the same run in this process, on the whole batches
        assert train.main([*_flags(small_dataset, out, "single"), *_data(small_dataset)]) == 0
        single_out = capsys.readouterr().out
        single_seconds = time.monotonic() - start
    finally:
        workers = _finish_workers(workers, out, start + TIMEOUT)
    print(f"one process {single_seconds:.0f} s, two workers {time.monotonic() - start:.0f} s", file=sys.stderr)
    for index, (status, stdout, stderr, _) in enumerate(workers):
        assert status == 0, f"worker {index} exited with {status}:\n{stdout[-2000:]}\n{stderr[-4000:]}"

    (_, chief_out, chief_err, chief_decoded), (_, other_out, other_err, other_decoded) = workers
    assert "worker 1 of 2 (TF_CONFIG task worker 0, the chief)" in chief_err
    assert "this worker loads 2 of the 4 images of every batch" in other_err

    # only the chief wrote: snapshot, log and TensorBoard; nothing of the other worker
    assert sorted(os.listdir(out / "snapshots_worker0")) == [f"{BACKBONE}_csv_01.keras", f"{BACKBONE}_csv_log.csv"]
    assert os.listdir(out / "logs_worker0")
    assert not (out / "snapshots_worker1").exists() and not (out / "logs_worker1").exists()

    # each worker decoded only its half of every batch: disjoint halves, together the whole set
    train_names = {f"train_{i:05d}.png" for i in range(TRAIN_IMAGES)}
    val_names = [f"val_{i:05d}.png" for i in range(VAL_IMAGES)]
    chief_train = {name for name in chief_decoded if name in train_names}
    other_train = {name for name in other_decoded if name in train_names}
    assert len(chief_train) == len(other_train) == TRAIN_IMAGES // 2
    assert not chief_train & other_train and chief_train | other_train == train_names
    # the validation loss: each its half of the batch; the mAP: the chief alone, on every image
    assert sorted(name for name in other_decoded if name not in train_names) == val_names[2:]
    assert sorted(name for name in chief_decoded if name not in train_names) == sorted(val_names[:2] + val_names)
    # every worker prints the same figures (the mAP is the chief's)
    chief_line, other_line = _summary(chief_out), _summary(other_out)
    assert re.search(r"\| mAP \d\.\d{4} \|", chief_line) and "val_loss" in chief_line
    assert other_line.split(" | lr ")[0] == chief_line.split(" | lr ")[0]
    assert _summary(single_out)

    # the losses, the mAP and the weights after two steps are those of the single process
    multi, single = _logged(out / "snapshots_worker0"), _logged(out / "snapshots_single")
    for key in ("loss", "val_loss", "mAP"):
        print(f"{key}: two workers {multi[key]!r}, one process {single[key]!r}", file=sys.stderr)
        np.testing.assert_allclose(multi[key], single[key], rtol=1e-5)
    multi, multi_velocities = _state(out / "snapshots_worker0" / f"{BACKBONE}_csv_01.keras")
    single, single_velocities = _state(out / "snapshots_single" / f"{BACKBONE}_csv_01.keras")
    assert [w.shape for w in multi] == [w.shape for w in single]
    # the last step moved the weights by about its velocity; they differ by far less
    step = max(float(np.max(np.abs(v))) for v in single_velocities)
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(multi, single))
    worst_velocity = max(float(np.max(np.abs(a - b))) for a, b in zip(multi_velocities, single_velocities))
    print(f"weights: last step up to {step:.3g}, largest difference {worst:.3g} (velocities {worst_velocity:.3g})",
          file=sys.stderr)  # fmt: skip
    assert step > 1e-4
    assert worst < 1e-3 * step and worst_velocity < 1e-3 * step
