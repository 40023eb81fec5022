"""Training-step throughput of the model by FPN / head size (images/s, no input pipeline).

Builds the training model for each configuration (backbone, --feature-size, --head-depth)
with random weights, compiles it as retinanet-train does (Adam, smooth-L1 + focal loss),
and times ``train_on_batch`` on a fixed random batch with a few positive anchors.
Shows where training time goes on a CPU: the heads run their convs at every pyramid
level, so their width dominates at small image sizes.

Usage:
    python bench/train_step.py [--size 128] [--batch-size 8] [--steps 10] [--runs 3] \\
        [--configs mobilenet128_0.25:256:4 mobilenet128_0.25:64:4 ...]

Each config is BACKBONE:FEATURE_SIZE:HEAD_DEPTH, or BACKBONE:FEATURE_SIZE:HEAD_DEPTH:gn for
GroupNorm in the heads (``--head-norm group``). Figures are medians over --runs timed
blocks of --steps steps, after two warm-up steps, with min and max.

Each step-only figure is measured in a fresh process, twice: with the threads retinanet-train
sets for that model (``utils.threads.use_parallel_ops``: whole ops two at once for
MobileNets at small sizes on 2 cores) and with TensorFlow's default threads
(``KERAS_RETINANET_THREADS=tensorflow``); the ratio of the loop is to the first.

The whole loop: ``retinanet-train`` itself on synthetic shapes of the same size (its input
pipeline, augmentation off, callbacks, snapshots) for ``--loop-epochs`` epochs of
``--loop-steps`` steps; its images/s is the median of the epochs after the first (which
compiles), next to the step-only figure, with the share of its CPU time spent in the
kernel (``--no-loop`` skips it). Both run with ``utils.allocator.keep_freed_memory``, as
the tools do.
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
    parser.add_argument("--no-loop", action="store_true", help="skip the whole-loop figure")
    parser.add_argument("--loop-epochs", type=int, default=5)
    parser.add_argument("--loop-steps", type=int, default=16)
    parser.add_argument("--step-json", metavar="CONFIG", help=argparse.SUPPRESS)  # internal: one config's step figure
    return parser.parse_args(args)


def measure_loop(config, args, workdir):
    """retinanet-train's own images/s (epochs after the first) and its kernel share of CPU time."""
    import re
    import resource
    import subprocess

    from keras_retinanet.utils import synthetic

    backbone, feature_size, depth, norm = _parse(config)
    data = os.path.join(workdir, f"data_{args.size}")
    if not os.path.exists(os.path.join(data, "train.csv")):
        synthetic.make_dataset(data, {"train": 64}, image_size=args.size, min_size=args.size // 8, max_size=args.size // 3)
    command = [
        sys.executable, "-m", "keras_retinanet.bin.train", "--no-weights", "--backbone", backbone,
        "--feature-size", feature_size, "--head-depth", depth, "--head-norm", norm, "--batch-size", str(args.batch_size),
        "--lr", "1e-3", "--epochs", str(args.loop_epochs), "--steps", str(args.loop_steps),
        "--image-min-side", str(args.size), "--image-max-side", str(args.size), "--no-snapshots",
        "--tensorboard-dir", "", "--seed", "0", "csv", os.path.join(data, "train.csv"), os.path.join(data, "classes.csv"),
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    rates = [float(r) for r in re.findall(r"\| ([\d.]+) images/s", output)][1:]
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return statistics.median(rates), system / (user + system)


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


def _padded(size):
    from keras_retinanet.preprocessing.generator import PADDING_MULTIPLE

    return (size + PADDING_MULTIPLE - 1) // PADDING_MULTIPLE * PADDING_MULTIPLE


def _parse(config):
    """BACKBONE:FEATURE_SIZE:HEAD_DEPTH[:gn] -> (backbone, feature size, depth, head norm)."""
    parts = config.split(":")
    return parts[0], parts[1], parts[2], "group" if len(parts) > 3 and parts[3] == "gn" else "none"


def measure_step(config, args, tensorflow_threads=False):
    """(parameters, images/s of each timed block, (intra, inter) threads or None) in a fresh process."""
    import json
    import subprocess

    env = dict(os.environ)
    if tensorflow_threads:
        env["KERAS_RETINANET_THREADS"] = "tensorflow"
    command = [sys.executable, os.path.abspath(__file__), "--step-json", config, "--size", str(args.size),
               "--batch-size", str(args.batch_size), "--classes", str(args.classes), "--steps", str(args.steps),
               "--runs", str(args.runs)]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    result = json.loads(output.strip().splitlines()[-1])
    return result["params"], result["rates"], result["threads"]


def measure(config, args):
    """(parameters, images/s of each timed block, threads set) of ``train_on_batch``, in this process."""
    from keras_retinanet import models
    from keras_retinanet.training import compile_training_model
    from keras_retinanet.utils.anchors import anchors_for_shape
    from keras_retinanet.utils.threads import use_parallel_ops_for

    backbone, feature_size, depth, norm = _parse(config)
    threads = use_parallel_ops_for(backbone, _padded(args.size))  # as retinanet-train does
    model = models.backbone(backbone).retinanet(
        args.classes, weights=None, freeze_bn=False, feature_size=int(feature_size), submodel_depth=int(depth),
        head_norm=norm,
    )
    compile_training_model(model, lr=1e-3)
    side = _padded(args.size)  # the input the pipeline builds: padded to a multiple of the backbones' largest stride
    images, targets = _batch(side, args.batch_size, args.classes, len(anchors_for_shape((side, side))))
    for _ in range(2):
        model.train_on_batch(images, targets)
    rates = []
    for _ in range(args.runs):
        start = time.perf_counter()
        for _ in range(args.steps):
            model.train_on_batch(images, targets)
        rates.append(args.steps * args.batch_size / (time.perf_counter() - start))
    return model.count_params(), rates, threads


def main(args=None):
    import json
    import tempfile

    from keras_retinanet.utils.allocator import keep_freed_memory

    args = parse_args(sys.argv[1:] if args is None else args)
    keep_freed_memory()
    if args.step_json:
        params, rates, threads = measure(args.step_json, args)
        print(json.dumps({"params": params, "rates": rates, "threads": threads}))
        return 0
    workdir = tempfile.mkdtemp(prefix="retinanet_train_step_")
    print(f"train step, {args.size}x{args.size} images, batch {args.batch_size}, {args.classes} classes")
    print(
        "| backbone | feature size | head depth | parameters | threads (intra/inter) "
        "| step only, images/s (median, min-max) | step only, TensorFlow's threads "
        "| whole loop, images/s | loop / step | loop's kernel share of CPU |"
    )
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for config in args.configs:
        backbone, feature_size, depth, norm = _parse(config)
        params, rates, threads = measure_step(config, args)
        _, default_rates, _ = measure_step(config, args, tensorflow_threads=True)
        step = statistics.median(rates)
        loop = "- | - | -"
        if not args.no_loop:
            rate, kernel = measure_loop(config, args, workdir)
            loop = f"{rate:.1f} | {rate / step:.2f} | {100 * kernel:.0f}%"
        threads = "TensorFlow's" if threads is None else f"{threads[0]}/{threads[1]}"
        print(
            f"| {backbone} | {feature_size} | {depth}{' + GN' if norm == 'group' else ''} | {params / 1e6:.2f} M | "
            f"{threads} | {step:.1f} ({min(rates):.1f}-{max(rates):.1f}) | "
            f"{statistics.median(default_rates):.1f} ({min(default_rates):.1f}-{max(default_rates):.1f}) | {loop} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
