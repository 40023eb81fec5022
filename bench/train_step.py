"""Training-step throughput of the model by FPN / head size (images/s, no input pipeline).

Builds the training model for each configuration (backbone, --feature-size, --head-depth)
with random weights, compiles it as retinanet-train does (Adam, smooth-L1 + focal loss),
and times ``train_on_batch`` on a fixed random batch with a few positive anchors.
Shows where training time goes on a CPU: the heads run their convs at every pyramid
level, so their width dominates at small image sizes.

Usage:
    python bench/train_step.py [--size 128] [--batch-size 8] [--steps 10] [--runs 3] \\
        [--configs mobilenet128_0.25:256:4 mobilenet128_0.25:64:4 ...]

Each config is BACKBONE:FEATURE_SIZE:HEAD_DEPTH. Figures are medians over --runs timed
blocks of --steps steps, after two warm-up steps, with min and max.
"""
import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

DEFAULT_CONFIGS = [
    "mobilenet128_0.25:256:4",
    "mobilenet128_0.25:128:4",
    "mobilenet128_0.25:64:4",
    "mobilenet128_0.25:64:2",
]


def parse_args(args):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="BACKBONE:FEATURE_SIZE:HEAD_DEPTH")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block")
    parser.add_argument("--runs", type=int, default=3, help="timed blocks")
    return parser.parse_args(args)


def _batch(size, batch_size, num_classes, num_anchors_total, positives=20):
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (batch_size, size, size, 3)).astype(np.float32)
    regression = np.zeros((batch_size, num_anchors_total, 5), np.float32)
    classification = np.zeros((batch_size, num_anchors_total, num_classes + 1), np.float32)
    regression[:, :positives, :4] = rng.normal(0, 1, (batch_size, positives, 4))
    regression[:, :positives, 4] = 1
    classification[:, :positives, 0] = 1
    classification[:, :positives, -1] = 1
    return images, {"regression": regression, "classification": classification}


def measure(config, args):
    from keras_retinanet import models
    from keras_retinanet.training import compile_training_model
    from keras_retinanet.utils.anchors import anchors_for_shape

    backbone, feature_size, depth = config.split(":")
    model = models.backbone(backbone).retinanet(
        args.classes, weights=None, freeze_bn=False, feature_size=int(feature_size), submodel_depth=int(depth)
    )
    compile_training_model(model, lr=1e-3)
    images, targets = _batch(args.size, args.batch_size, args.classes, len(anchors_for_shape((args.size, args.size))))
    for _ in range(2):
        model.train_on_batch(images, targets)
    rates = []
    for _ in range(args.runs):
        start = time.perf_counter()
        for _ in range(args.steps):
            model.train_on_batch(images, targets)
        rates.append(args.steps * args.batch_size / (time.perf_counter() - start))
    return model.count_params(), rates


def main(args=None):
    args = parse_args(sys.argv[1:] if args is None else args)
    print(f"train step, {args.size}x{args.size} images, batch {args.batch_size}, {args.classes} classes")
    print("| backbone | feature size | head depth | parameters | images/s (median, min-max) |")
    print("|---|---:|---:|---:|---:|")
    for config in args.configs:
        backbone, feature_size, depth = config.split(":")
        params, rates = measure(config, args)
        print(
            f"| {backbone} | {feature_size} | {depth} | {params / 1e6:.2f} M | "
            f"{statistics.median(rates):.1f} ({min(rates):.1f}-{max(rates):.1f}) |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
