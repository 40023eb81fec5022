"""From scratch for the same wall minutes: ours against torchvision's RetinaNet, AP50 side by side.

Trains on one CSV dataset (a folder with train.csv, val.csv and classes.csv, or hard
synthetic scenes made here with ``--scenes clutter|crowns|canopy|shapes``, see
``keras_retinanet.utils.scenes``) for ``--minutes`` of training each:

- ours: ``retinanet-train --no-weights --time-limit MINUTES`` with each ``--variant``'s flags
  (default: the ``--preset scratch`` recipe and the older README recipe), epochs of one pass
  over the training set, no validation during training; then the last snapshot;
- torchvision's ``retinanet_resnet50_fpn`` (bench/peers/torchvision_train.py, in the venv of
  ``--torch-python``; the recipe of ../shared/BENCHMARKS.md).

Both are then scored by the same code on the held-out split: VOC AP50 (this package's
``utils.eval``, mean over classes) and COCO AP / AP50 (pycocotools). Printed: a Markdown
table with images seen, training seconds, the kernel's share of the training process's
CPU time (system / (user + system)), AP50, COCO AP, and each side's AP50 over
torchvision's. Nothing else may run on the machine meanwhile (the budget is wall time).

    python bench/train_budget.py --scenes crowns --minutes 20
    python bench/train_budget.py --data /path/to/csv_dataset --minutes 20 \\
        --variant "preset=--preset scratch" --variant "no-gn=--preset scratch --head-norm none"
"""
import argparse
import glob
import json
import math
import os
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEFAULT_TORCH_PYTHON = "/work/venv-torch/bin/python"
README_RECIPE = (
    "--backbone mobilenet128_0.25 --feature-size 64 --batch-size 8 --lr 1e-3 --warmup-steps 64"
)
DEFAULT_VARIANTS = ["preset=--preset scratch", f"readme={README_RECIPE}"]
EPOCH_LINE = re.compile(r"^epoch (\d+) \|.*\| ([\d.]+) images/s \| (\d+) s", re.M)


def parse_args(args):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="folder with train.csv, val.csv, classes.csv")
    source.add_argument("--scenes", choices=("clutter", "crowns", "canopy", "shapes"), help="make hard synthetic scenes of this kind")
    parser.add_argument("--train-images", type=int, default=None, help="scenes: training images (clutter 400, crowns 60, canopy 42, shapes 200)")
    parser.add_argument("--val-images", type=int, default=None, help="scenes: held-out images (clutter 100, crowns 20, canopy 14, shapes 50)")
    parser.add_argument("--minutes", type=float, default=20.0, help="training minutes for each side")
    parser.add_argument(
        "--variant",
        action="append",
        help="NAME=retinanet-train flags, repeatable (default: the scratch preset and the README recipe)",
    )
    parser.add_argument("--torch-python", default=DEFAULT_TORCH_PYTHON, help="interpreter with torch + torchvision")
    parser.add_argument("--no-peer", action="store_true", help="skip torchvision")
    parser.add_argument("--peer-json", help="reuse the detections of an earlier torchvision run (its JSON)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="data, snapshots and logs (default: a temporary folder)")
    return parser.parse_args(args)


def make_scenes(kind, folder, train_images, val_images, seed):
    from keras_retinanet.utils import scenes

    counts = {"clutter": (400, 100), "crowns": (60, 20), "canopy": (42, 14), "shapes": (200, 50)}[kind]
    splits = {"train": train_images or counts[0], "val": val_images or counts[1]}
    if not os.path.exists(os.path.join(folder, "val.csv")):
        scenes.make_dataset(folder, kind, splits, seed=seed)
    return folder


def read_split(folder, split):
    """(paths, annotations per image as {label: (K, 4)}, class names) of a CSV split."""
    from keras_retinanet.preprocessing.csv_generator import CSVGenerator

    generator = CSVGenerator(
        os.path.join(folder, f"{split}.csv"), os.path.join(folder, "classes.csv"), shuffle_groups=False
    )
    paths = [generator.image_path(i) for i in range(generator.size())]
    annotations = []
    for i in range(generator.size()):
        loaded = generator.load_annotations(i)
        boxes, labels = loaded["bboxes"], loaded["labels"]
        annotations.append([boxes[labels == c] for c in range(generator.num_classes())])
    names = [generator.label_to_name(c) for c in range(generator.num_classes())]
    return paths, annotations, names


def image_side(path):
    import cv2

    image = cv2.imread(path)
    return min(image.shape[:2]), max(image.shape[:2])


def score(detections, annotations, num_classes):
    """VOC AP50 (mean over classes with ground truth), COCO AP and AP50."""
    from keras_retinanet.utils.coco_eval import coco_metrics
    from keras_retinanet.utils.eval import compute_average_precisions, mean_average_precision

    average_precisions = compute_average_precisions(detections, annotations)
    coco = coco_metrics(detections, annotations, labels=list(range(num_classes)))
    return mean_average_precision(average_precisions), coco["AP"], coco["AP50"]


def per_label(rows, num_classes):
    """(K, 6) x1, y1, x2, y2, score, label rows -> [label] = (k, 5)."""
    rows = np.asarray(rows, np.float64).reshape(-1, 6)
    return [rows[rows[:, 5] == c, :5] for c in range(num_classes)]


def run_logged(command, log_path, check=False):
    """Run ``command`` with its output in ``log_path``; (exit status, kernel share of its CPU time)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log_path, "w") as log:
        completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=check)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return completed.returncode, system / max(user + system, 1e-9)


def train_ours(name, flags, folder, workdir, minutes, seed, side, train_count):
    """Run retinanet-train for the budget; returns (snapshot, images seen, seconds, kernel share, log)."""
    snapshots = os.path.join(workdir, f"ours_{name}")
    flags = shlex.split(flags)
    batch = int(flags[flags.index("--batch-size") + 1]) if "--batch-size" in flags else None
    command = [
        sys.executable, "-m", "keras_retinanet.bin.train", "--no-weights",
        "--time-limit", str(minutes), "--epochs", "100000",
        "--snapshot-path", snapshots, "--tensorboard-dir", "", "--seed", str(seed),
    ]  # fmt: skip
    if "--image-min-side" not in flags:
        command += ["--image-min-side", str(side[0]), "--image-max-side", str(side[1])]
    if "--steps" not in flags and batch:
        command += ["--steps", str(max(1, math.ceil(train_count / batch)))]
    command += flags + [
        "csv", os.path.join(folder, "train.csv"), os.path.join(folder, "classes.csv"),
    ]  # fmt: skip
    log_path = os.path.join(workdir, f"ours_{name}.log")
    print(f"[{name}] {shlex.join(command[1:])}", flush=True)
    returncode, kernel = run_logged(command, log_path)
    text = open(log_path).read()
    if returncode != 0:
        raise SystemExit(f"[{name}] retinanet-train failed (exit {returncode}), see {log_path}:\n{text[-2000:]}")
    epochs = EPOCH_LINE.findall(text)
    seconds = sum(float(s) for _, _, s in epochs)
    seen = sum(float(rate) * float(s) for _, rate, s in epochs)
    snapshot = max(glob.glob(os.path.join(snapshots, "*_[0-9][0-9]*.keras")), key=os.path.getmtime)
    return snapshot, int(round(seen)), seconds, kernel, log_path


def detect_ours(snapshot, paths, num_classes):
    from keras_retinanet.inference import load_detector

    detector = load_detector(snapshot)
    detections = []
    for result in detector.predict(paths):
        rows = np.concatenate([result.boxes, result.scores[:, None], result.labels[:, None]], 1)
        detections.append(per_label(rows, num_classes))
    return detections


def run_peer(args, folder, workdir, paths, num_classes):
    output = args.peer_json or os.path.join(workdir, "torchvision.json")
    kernel = None
    if not args.peer_json:
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers", "torchvision_train.py")
        command = [
            args.torch_python, script, os.path.join(folder, "train.csv"), os.path.join(folder, "classes.csv"),
            os.path.join(folder, "val.csv"), output, "--minutes", str(args.minutes), "--seed", str(args.seed),
        ]  # fmt: skip
        print(f"[torchvision] {shlex.join(command)}", flush=True)
        _, kernel = run_logged(command, os.path.join(workdir, "torchvision.log"), check=True)
    with open(output) as f:
        result = json.load(f)
    detections = [per_label(result["detections"].get(path, []), num_classes) for path in paths]
    return detections, result["images_seen"], result["train_seconds"], kernel


def main(args=None):
    args = parse_args(sys.argv[1:] if args is None else args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    workdir = args.workdir or tempfile.mkdtemp(prefix="retinanet_budget_")
    os.makedirs(workdir, exist_ok=True)
    folder = args.data or make_scenes(args.scenes, os.path.join(workdir, f"scenes_{args.scenes}"), args.train_images, args.val_images, args.seed)
    paths, annotations, names = read_split(folder, "val")
    train_paths, _, _ = read_split(folder, "train")
    side = image_side(train_paths[0])
    num_classes = len(names)
    print(f"data {folder}: {len(train_paths)} training and {len(paths)} held-out images of {side[1]} px, {num_classes} classes; {args.minutes:g} min each")

    rows = []
    if not args.no_peer:
        probe = subprocess.run([args.torch_python, "-c", "import torch, torchvision"], capture_output=True)
        if args.peer_json or probe.returncode == 0:
            detections, seen, seconds, kernel = run_peer(args, folder, workdir, paths, num_classes)
            rows.append(("torchvision retinanet_resnet50_fpn", seen, seconds, kernel, *score(detections, annotations, num_classes)))
        else:
            print(f"torchvision: not available ({args.torch_python} cannot import torch, torchvision)")
    for variant in args.variant or DEFAULT_VARIANTS:
        name, _, flags = variant.partition("=")
        snapshot, seen, seconds, kernel, _ = train_ours(name, flags, folder, workdir, args.minutes, args.seed, side, len(train_paths))
        detections = detect_ours(snapshot, paths, num_classes)
        rows.append((f"ours {name}", seen, seconds, kernel, *score(detections, annotations, num_classes)))
        print(f"[{name}] {os.path.basename(snapshot)}: AP50 {rows[-1][4]:.3f}", flush=True)

    peer = rows[0][4] if rows and rows[0][0].startswith("torchvision") else None
    print()
    print("| model | images seen | training s | kernel CPU | AP50 (VOC) | COCO AP | COCO AP50 | AP50 / torchvision |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, seen, seconds, kernel, ap50, coco_ap, coco_ap50 in rows:
        ratio = f"{ap50 / peer:.2f}x" if peer else "-"
        share = "-" if kernel is None else f"{100 * kernel:.0f}%"
        print(f"| {name} | {seen} | {seconds:.0f} | {share} | {ap50:.3f} | {coco_ap:.3f} | {coco_ap50:.3f} | {ratio} |")
    print(f"\nworkdir: {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
