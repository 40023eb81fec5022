"""Benchmark: seconds to compute VOC mAP from precomputed detections (matching + AP).

Synthetic case: IMAGES images, DETECTIONS detections per image (most of them jittered
copies of ground-truth boxes, the rest random), CLASSES classes, GT_PER_CLASS boxes per
class per image. Times ``utils.eval.compute_average_precisions`` on fizyr's per-image,
per-label lists; no model runs. Prints the median of ``--runs`` runs after one warm-up,
with min and max.

With ``--peer-python`` (or $FIZYR_PYTHON) pointing at the python of a venv holding
fizyr/keras-retinanet 1.0.0 (see shared BENCHMARKS.md), the same lists are fed to fizyr's
``utils.eval.evaluate`` in a subprocess (its inference and annotation loading replaced
by the precomputed lists), timed the same way, and the ratio and the largest AP difference
between the two are printed (both implement the same VOC matching rule and the same IoU).

    python bench/evaluate.py [--images 5000] [--detections 100] [--classes 10] [--runs 5]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_retinanet.utils.eval import compute_average_precisions, mean_average_precision  # noqa: E402

IMAGE_SIZE = 800
MATCHED_FRACTION = 0.6  # share of detections that are jittered copies of ground truth

# Runs inside the peer's venv: rebuild the lists from the npz file, time fizyr's evaluate.
PEER_SCRIPT = r"""
import json, statistics, sys, time
import numpy as np
import keras_retinanet.utils.eval as fizyr_eval

data = np.load(sys.argv[1])
runs = int(sys.argv[2])
num_images, num_classes = int(data["num_images"]), int(data["num_classes"])

def split(rows, labels, images):
    out = [[rows[:0] for _ in range(num_classes)] for _ in range(num_images)]
    for i in range(num_images):
        in_image = images == i
        for c in range(num_classes):
            out[i][c] = rows[in_image & (labels == c)]
    return out

all_detections = split(data["det_rows"], data["det_labels"], data["det_images"])
all_annotations = split(data["gt_rows"], data["gt_labels"], data["gt_images"])
fizyr_eval._get_detections = lambda *a, **k: (all_detections, [0.0] * num_images)
fizyr_eval._get_annotations = lambda *a, **k: all_annotations

class Generator:
    def size(self): return num_images
    def num_classes(self): return num_classes
    def has_label(self, label): return True

times = []
for _ in range(runs):
    start = time.perf_counter()
    aps, _ = fizyr_eval.evaluate(Generator(), None)
    times.append(time.perf_counter() - start)
print(json.dumps({"times": times, "aps": {str(k): float(v[0]) for k, v in aps.items()}}))
"""


def make_case(seed, num_images, detections_per_image, num_classes, gt_per_class):
    """Flat arrays: det_rows (M, 5), det_labels, det_images; gt_rows (G, 4), gt_labels, gt_images."""
    rng = np.random.default_rng(seed)
    gt_count = gt_per_class * num_classes
    corners = rng.uniform(0, IMAGE_SIZE - 200, size=(num_images, gt_count, 2))
    sizes = rng.uniform(16, 200, size=(num_images, gt_count, 2))
    gt_rows = np.concatenate([corners, corners + sizes], axis=2)
    gt_labels = np.tile(np.repeat(np.arange(num_classes), gt_per_class), (num_images, 1))

    matched = int(detections_per_image * MATCHED_FRACTION)
    source = rng.integers(0, gt_count, size=(num_images, matched))
    copies = np.take_along_axis(gt_rows, source[..., None], axis=1)
    copies = copies + rng.normal(0, 6, size=copies.shape)
    copy_labels = np.take_along_axis(gt_labels, source, axis=1)
    random_corners = rng.uniform(0, IMAGE_SIZE - 200, size=(num_images, detections_per_image - matched, 2))
    random_boxes = np.concatenate([random_corners, random_corners + rng.uniform(16, 200, random_corners.shape)], axis=2)
    det_boxes = np.concatenate([copies, random_boxes], axis=1)
    det_labels = np.concatenate([copy_labels, rng.integers(0, num_classes, size=random_boxes.shape[:2])], axis=1)
    scores = rng.random((num_images, detections_per_image))
    order = np.argsort(-scores, axis=1)  # each image's detections best first, as inference gives them
    det_rows = np.concatenate([det_boxes, scores[..., None]], axis=2)
    det_rows = np.take_along_axis(det_rows, order[..., None], axis=1)
    det_labels = np.take_along_axis(det_labels, order, axis=1)
    images = np.arange(num_images)
    return {
        "det_rows": det_rows.reshape(-1, 5),
        "det_labels": det_labels.reshape(-1),
        "det_images": np.repeat(images, detections_per_image),
        "gt_rows": gt_rows.reshape(-1, 4),
        "gt_labels": gt_labels.reshape(-1),
        "gt_images": np.repeat(images, gt_count),
        "num_images": np.array(num_images),
        "num_classes": np.array(num_classes),
    }


def to_lists(case):
    """fizyr's all_detections[image][label] (K, 5) and all_annotations[image][label] (K, 4)."""
    num_images, num_classes = int(case["num_images"]), int(case["num_classes"])

    def split(rows, labels, images):
        order = np.lexsort((labels, images))
        rows, keys = rows[order], images[order] * num_classes + labels[order]
        bounds = np.searchsorted(keys, np.arange(num_images * num_classes + 1))
        return [
            [rows[bounds[i * num_classes + c]: bounds[i * num_classes + c + 1]] for c in range(num_classes)]
            for i in range(num_images)
        ]

    return (
        split(case["det_rows"], case["det_labels"], case["det_images"]),
        split(case["gt_rows"], case["gt_labels"], case["gt_images"]),
    )


def summary(times):
    return f"median {statistics.median(times):.3f} s  (min {min(times):.3f}, max {max(times):.3f}, {len(times)} runs)"


def run_peer(peer_python, case, runs):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "case.npz")
        np.savez(path, **case)
        script = os.path.join(folder, "peer.py")
        with open(script, "w") as f:
            f.write(PEER_SCRIPT)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
        # run outside this checkout so the peer imports its own keras_retinanet
        done = subprocess.run(
            [peer_python, script, path, str(runs)], capture_output=True, text=True, cwd=folder, env=env
        )
    if done.returncode != 0:
        raise SystemExit(f"peer failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--detections", type=int, default=100, help="detections per image")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--gt-per-class", type=int, default=2, help="ground-truth boxes per class per image")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--peer-python", default=os.environ.get("FIZYR_PYTHON"),
                        help="python of a venv with fizyr keras-retinanet 1.0.0 (default $FIZYR_PYTHON)")
    parser.add_argument("--peer-runs", type=int, default=1)
    args = parser.parse_args(argv)

    case = make_case(0, args.images, args.detections, args.classes, args.gt_per_class)
    all_detections, all_annotations = to_lists(case)
    print(
        f"mAP from precomputed detections: {args.images} images x {args.detections} detections x "
        f"{args.classes} classes ({args.gt_per_class * args.classes} ground-truth boxes per image)"
    )

    compute_average_precisions(all_detections, all_annotations)  # warm-up
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        average_precisions = compute_average_precisions(all_detections, all_annotations)
        times.append(time.perf_counter() - start)
    print(f"keras_retinanet.utils.eval: {summary(times)}; mAP {mean_average_precision(average_precisions):.4f}")

    if args.peer_python:
        peer = run_peer(args.peer_python, case, args.peer_runs)
        difference = max(abs(peer["aps"][str(label)] - ap) for label, (ap, _) in average_precisions.items())
        print(f"fizyr keras-retinanet 1.0.0:  {summary(peer['times'])}")
        print(f"speed-up: {statistics.median(peer['times']) / statistics.median(times):.1f}x; "
              f"largest AP difference from fizyr's {difference:.2e}")
    else:
        print("peer: not run (give --peer-python or $FIZYR_PYTHON)")


if __name__ == "__main__":
    main()
