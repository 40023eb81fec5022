"""Throughput of the training input pipeline and of anchor targets, against fizyr/keras-retinanet.

Measures, on a synthetic CSV dataset of 640x480 PNG images with 3 classes (made with
keras_retinanet.utils.synthetic):

  1. the tf.data pipeline (build_dataset): decode + random horizontal flip + resize to
     800/1333 + preprocess + anchor targets, batch 1 and 4, in images/s;
  2. the same steps through Generator[i] (sequential Python, what fizyr's CSVGenerator does);
  3. anchor_targets_bbox alone for one 800x1333 image with 20 boxes and 80 classes, in ms,
     on anchors_for_shape's (cached, read-only) anchors, whose IoU preparation is reused
     as in training, and on a fresh writable copy, where it is not;
  4. compute_overlap of that image's anchors with the 20 boxes, in ms.

fizyr/keras-retinanet 1.0.0 (CSVGenerator, Cython compute_overlap, anchor_targets_bbox) is
measured on the same data in a subprocess of a separate interpreter (--fizyr-python), so
the two keras_retinanet packages never share one. Figures are medians over --runs runs
after a warm-up, with min and max. Install the peer with:

    python3 -m venv /work/venv-fizyr
    /work/venv-fizyr/bin/pip install numpy cython tensorflow-cpu opencv-python-headless pillow progressbar2
    /work/venv-fizyr/bin/pip install --no-build-isolation --no-deps keras-retinanet==1.0.0

Usage:
    python bench/pipeline.py [--images 64] [--runs 5] [--fizyr-python /work/venv-fizyr/bin/python]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

DEFAULT_FIZYR_PYTHON = "/work/venv-fizyr/bin/python"
IMAGE_SHAPE = (480, 640)
TARGET_SHAPE = (800, 1333, 3)
NUM_BOXES = 20
NUM_CLASSES = 80
FLIP_CHANCE = 0.5
SEED = 0

# Runs in the peer's interpreter; reads its arguments as JSON from argv[1], prints JSON.
FIZYR_SCRIPT = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import keras_retinanet
from keras_retinanet.preprocessing.csv_generator import CSVGenerator
from keras_retinanet.utils.anchors import anchor_targets_bbox, anchors_for_shape
from keras_retinanet.utils.compute_overlap import compute_overlap
from keras_retinanet.utils.transform import random_transform_generator

args = json.loads(sys.argv[1])
result = {"package": keras_retinanet.__file__, "pipeline": {}}

def timed(function, runs, warmup, cpu=None):
    for _ in range(warmup):
        function()
    times = []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        function()
        times.append(time.perf_counter() - start)
        if cpu is not None:
            cpu.append(time.process_time() - start_cpu)
    return times

for batch_size in args["batch_sizes"]:
    generator = CSVGenerator(
        args["train"], args["classes"], batch_size=batch_size,
        transform_generator=random_transform_generator(
            prng=np.random.RandomState(args["seed"]), flip_x_chance=args["flip"]
        ),
        image_min_side=800, image_max_side=1333,
    )
    batches = max(1, args["images"] // batch_size)
    def epoch():
        for i in range(batches):
            generator[i % len(generator)]
    cpu = []
    times = timed(epoch, args["runs"], 1, cpu)
    result["pipeline"][str(batch_size)] = [batches * batch_size / t for t in times]
    cpu_ms = [1000 * c / (batches * batch_size) for c in cpu]
    result.setdefault("pipeline_cpu_ms", {})[str(batch_size)] = cpu_ms

anchors = anchors_for_shape(tuple(args["target_shape"]))
boxes = np.array(args["boxes"], dtype=np.float64)
annotations = {"bboxes": boxes, "labels": np.array(args["labels"], dtype=np.float64)}
image = np.zeros(tuple(args["target_shape"]), dtype=np.uint8)
result["targets_ms"] = [1000 * t for t in timed(
    lambda: anchor_targets_bbox(anchors, [image], [annotations], args["num_classes"]), args["target_runs"], 3)]
anchors64 = anchors.astype(np.float64)
result["overlap_ms"] = [1000 * t for t in timed(lambda: compute_overlap(anchors64, boxes), args["target_runs"], 3)]
result["num_anchors"] = len(anchors)
print("RESULT " + json.dumps(result))
"""


def parse_args(args):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64, help="images in the dataset and per run")
    parser.add_argument("--runs", type=int, default=5, help="timed runs of the pipelines")
    parser.add_argument("--target-runs", type=int, default=20, help="timed runs of anchor targets")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--data-dir", help="dataset folder (default: a temporary folder)")
    parser.add_argument(
        "--fizyr-python",
        default=DEFAULT_FIZYR_PYTHON if os.path.exists(DEFAULT_FIZYR_PYTHON) else None,
        help="python of a venv with keras-retinanet==1.0.0 (default %(default)s)",
    )
    parser.add_argument("--no-fizyr", action="store_true", help="skip the peer")
    return parser.parse_args(args)


def _timed(function, runs, warmup, cpu=None):
    """Wall times of ``runs`` calls after ``warmup``; process CPU times appended to ``cpu``."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        function()
        times.append(time.perf_counter() - start)
        if cpu is not None:
            cpu.append(time.process_time() - start_cpu)
    return times


def _stats(values):
    values = np.asarray(values, dtype=np.float64)
    return float(np.median(values)), float(values.min()), float(values.max())


def _load():
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _make_dataset(data_dir, images):
    from keras_retinanet.utils import synthetic

    paths = synthetic.make_dataset(
        data_dir, {"train": images}, seed=SEED, image_size=IMAGE_SHAPE, min_size=32, max_size=240, max_objects=4
    )
    return paths["train"], paths["classes"]


def _ours(train, classes, args, boxes, labels):
    from keras_retinanet.preprocessing.csv_generator import CSVGenerator
    from keras_retinanet.preprocessing.pipeline import build_dataset
    from keras_retinanet.utils.anchors import anchor_targets_bbox, anchors_for_shape
    from keras_retinanet.utils.compute_overlap import compute_overlap
    from keras_retinanet.utils.transform import random_transform_generator

    def generator(batch_size):
        return CSVGenerator(
            train,
            classes,
            batch_size=batch_size,
            transform_generator=random_transform_generator(
                prng=np.random.RandomState(SEED), flip_x_chance=FLIP_CHANCE
            ),
            image_min_side=800,
            image_max_side=1333,
        )

    result = {"pipeline": {}, "sequential": {}, "pipeline_cpu_ms": {}, "sequential_cpu_ms": {}}
    for batch_size in args.batch_sizes:
        batches = max(1, args.images // batch_size)
        iterator = iter(build_dataset(generator(batch_size), repeat=True, seed=SEED))

        def epoch(iterator=iterator, batches=batches):
            for _ in range(batches):
                next(iterator)

        cpu = []
        times = _timed(epoch, args.runs, 1, cpu)
        del iterator
        result["pipeline"][batch_size] = [batches * batch_size / t for t in times]
        result["pipeline_cpu_ms"][batch_size] = [1000 * c / (batches * batch_size) for c in cpu]

        sequential = generator(batch_size)

        def sequential_epoch(sequential=sequential, batches=batches):
            for i in range(batches):
                sequential[i % len(sequential)]

        cpu = []
        times = _timed(sequential_epoch, max(1, args.runs // 2), 1, cpu)
        result["sequential"][batch_size] = [batches * batch_size / t for t in times]
        result["sequential_cpu_ms"][batch_size] = [1000 * c / (batches * batch_size) for c in cpu]

    anchors = anchors_for_shape(TARGET_SHAPE)
    annotations = {"bboxes": boxes, "labels": labels}
    image = np.zeros(TARGET_SHAPE, dtype=np.uint8)
    def milliseconds(function):
        return [1000 * t for t in _timed(function, args.target_runs, 3)]

    result["targets_ms"] = milliseconds(lambda: anchor_targets_bbox(anchors, [image], [annotations], NUM_CLASSES))
    fresh = np.array(anchors)  # a writable copy: no reuse of the IoU preparation across calls
    result["targets_fresh_ms"] = milliseconds(
        lambda: anchor_targets_bbox(fresh, [image], [annotations], NUM_CLASSES)
    )
    result["overlap_ms"] = milliseconds(lambda: compute_overlap(anchors, boxes))
    result["num_anchors"] = len(anchors)
    return result


def _fizyr(python, train, classes, args, boxes, labels):
    payload = {
        "train": train,
        "classes": classes,
        "batch_sizes": args.batch_sizes,
        "images": args.images,
        "runs": args.runs,
        "target_runs": args.target_runs,
        "seed": SEED,
        "flip": FLIP_CHANCE,
        "target_shape": list(TARGET_SHAPE),
        "boxes": boxes.tolist(),
        "labels": labels.tolist(),
        "num_classes": NUM_CLASSES,
    }
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with tempfile.TemporaryDirectory() as cwd:  # keep this repository off the peer's sys.path
        completed = subprocess.run(
            [python, "-I", "-c", FIZYR_SCRIPT, json.dumps(payload)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
        )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode != 0 or not lines:
        tail = "\n".join(completed.stderr.strip().splitlines()[-5:])
        print(f"fizyr run failed (exit {completed.returncode}):\n{tail}")
        return None
    result = json.loads(lines[-1][len("RESULT ") :])
    for key in ("pipeline", "pipeline_cpu_ms"):
        result[key] = {int(k): v for k, v in result[key].items()}
    return result


def _line(label, values, unit, peer=None, higher_is_better=True):
    median, low, high = _stats(values)
    text = f"  {label:<34} {median:8.1f} {unit} (min {low:.1f}, max {high:.1f})"
    if peer is not None:
        peer_median, peer_low, peer_high = _stats(peer)
        ratio = median / peer_median if higher_is_better else peer_median / median
        text += f" | fizyr {peer_median:.1f} (min {peer_low:.1f}, max {peer_high:.1f}) -> {ratio:.1f}x"
    print(text)


def main(args=None):
    args = parse_args(sys.argv[1:] if args is None else args)
    rng = np.random.default_rng(SEED)
    corners = rng.uniform(0, [1100, 600], size=(NUM_BOXES, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(20, 300, size=(NUM_BOXES, 2))], axis=1)
    labels = rng.integers(0, NUM_CLASSES, size=NUM_BOXES)

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or tmp
        train, classes = _make_dataset(data_dir, args.images)
        print(f"machine: {os.cpu_count()} cores; load average (1, 5, 15 min) at start: {_load()}")
        size = f"{IMAGE_SHAPE[1]}x{IMAGE_SHAPE[0]}"
        print(f"dataset: {args.images} synthetic {size} PNG images, 3 classes, in {data_dir}")
        ours = _ours(train, classes, args, boxes, labels)
        load_between = _load()
        peer = None
        if args.fizyr_python and not args.no_fizyr:
            peer = _fizyr(args.fizyr_python, train, classes, args, boxes, labels)
        elif not args.no_fizyr:
            print(f"fizyr not measured: no python at {DEFAULT_FIZYR_PYTHON} (see --fizyr-python)")

    print(f"load average after ours: {load_between}; at the end: {_load()}")
    if peer:
        print(f"fizyr package: {peer['package']}")
    steps = f"decode + flip (p={FLIP_CHANCE}) + resize 800/1333 + preprocess + anchor targets"
    sections = [
        (f"input pipeline: {steps}, images/s:", "pipeline", "sequential", "pipeline", "img/s", True),
        (
            "CPU time per image (all threads; less sensitive to the machine's load), ms:",
            "pipeline_cpu_ms",
            "sequential_cpu_ms",
            "pipeline_cpu_ms",
            "ms",
            False,
        ),
    ]
    for title, pipeline_key, sequential_key, peer_key, unit, higher_is_better in sections:
        print(title)
        for label, key in (("tf.data build_dataset", pipeline_key), ("Generator[i] sequential", sequential_key)):
            for batch_size in args.batch_sizes:
                peer_values = peer[peer_key][batch_size] if peer else None
                _line(f"{label}, batch {batch_size}", ours[key][batch_size], unit, peer_values, higher_is_better)
    print(
        f"anchor targets, one {TARGET_SHAPE[0]}x{TARGET_SHAPE[1]} image, {ours['num_anchors']} anchors, "
        f"{NUM_BOXES} boxes, {NUM_CLASSES} classes, ms:"
    )
    peer_targets = peer["targets_ms"] if peer else None
    _line("anchor_targets_bbox", ours["targets_ms"], "ms", peer_targets, False)
    _line("  same, anchors not reused", ours["targets_fresh_ms"], "ms", peer_targets, False)
    _line("compute_overlap", ours["overlap_ms"], "ms", peer["overlap_ms"] if peer else None, False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
