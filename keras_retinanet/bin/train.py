"""retinanet-train: train a RetinaNet detector on CSV, COCO, Pascal VOC, KITTI or Open Images data.

    retinanet-train --backbone resnet50 csv annotations.csv classes.csv --val-annotations val.csv

Snapshots ``<backbone>_<dataset>_<epoch:02d>.keras`` land in ``--snapshot-path`` after every
epoch (written atomically, with the optimiser state); ``--snapshot`` resumes from one.
"""
import argparse
import os
import sys

from keras_retinanet import constants
from keras_retinanet.bin import LOGGER, ToolError, import_tensorflow, log_threads, new_parser, print_notes, set_verbosity, tool_main
from keras_retinanet.preprocessing.datasets import add_dataset_subparsers

STRATEGIES = ("auto", "default", "mirrored", "multi-worker")
# (dataset type, default training set, default validation set); kitti and oid as fizyr's
DEFAULT_SETS = (
    ("coco", "train2017", "val2017"),
    ("pascal", "trainval", "test"),
    ("kitti", "train", "val"),
    ("oid", "train", "validation"),
)
MULTIPROCESSING_NOTE = (
    "--multiprocessing is not needed: the tf.data pipeline loads images in parallel threads (--workers)"
)
EXAMPLES = """
retinanet-train --backbone resnet50 --batch-size 2 csv train.csv classes.csv --val-annotations val.csv
retinanet-train --no-weights --backbone mobilenet128_0.25 --feature-size 64 --image-min-side 128 \\
    --image-max-side 128 --lr 1e-3 csv train.csv classes.csv
retinanet-train --snapshot snapshots/resnet50_csv_07.keras csv train.csv classes.csv
retinanet-train --config anchors.ini --epochs 20 pascal /data/VOC2007
retinanet-train kitti /data/kitti
retinanet-train oid /data/open_images --labels-filter Helmet,Hat --annotation-cache-dir cache
"""
RECIPE_NOTE = """every snapshot carries its recipe (backbone, classes, anchors, image sizes): --snapshot
resumes with it, and the other tools read it, so none of these flags is needed after training."""


def parse_args(args):
    """Parse the command line (fizyr-compatible flags plus tf.distribute / mixed precision)."""
    parser = new_parser(
        "retinanet-train", "Train a RetinaNet detector on CSV, COCO, Pascal VOC, KITTI or Open Images data.", EXAMPLES, RECIPE_NOTE
    )
    from keras_retinanet.presets import PRESETS, describe, preset_defaults

    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="a recipe that sets the defaults of several flags (flags given win): "
        + "; ".join(describe(name) for name in sorted(PRESETS)),
    )
    datasets = add_dataset_subparsers(parser, annotations_help="CSV file with the training annotations")
    for dataset_type, train_set, val_set in DEFAULT_SETS:
        datasets[dataset_type].add_argument(
            "--train-set", default=train_set, help=f"training set name (default: {train_set})"
        )
        datasets[dataset_type].add_argument(
            "--val-set", default=val_set, help=f"validation set name (default: {val_set})"
        )
    datasets["csv"].add_argument("--val-annotations", help="CSV file with the validation annotations (optional)")

    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--snapshot", help="resume training from this training snapshot (.keras)")
    weights.add_argument(
        "--imagenet-weights",
        action="store_const",
        const=True,
        default=True,
        help="initialise the backbone with ImageNet weights (default; downloaded by keras.applications)",
    )
    weights.add_argument("--weights", help="initialise the model with the weights of this file")
    weights.add_argument(
        "--no-weights", dest="imagenet_weights", action="store_const", const=False, help="train from scratch"
    )

    parser.add_argument(
        "--backbone", help="backbone name (default: resnet50; with --snapshot, the snapshot's)"
    )
    parser.add_argument(
        "--feature-size",
        type=int,
        help="channels of the FPN levels and of the heads' hidden layers (default: 256, the paper's); "
        "64 or 128 train several times faster on small images and few classes",
    )
    parser.add_argument("--head-depth", type=int, help="hidden 3x3 conv layers in each head (default: 4)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="global batch size: the images of one step over all replicas, on all workers (default: 1). "
        "Under --strategy mirrored / multi-worker it is split evenly over the replicas; with multi-worker, each "
        "worker loads batch-size / workers images per step (give the same value on every worker)",
    )
    parser.add_argument("--gpu", help="ids of the GPUs to use (as CUDA_VISIBLE_DEVICES), e.g. 0 or 0,1")
    parser.add_argument(
        "--multi-gpu", type=int, default=0, help="train on this many GPUs with tf.distribute.MirroredStrategy"
    )
    parser.add_argument("--multi-gpu-force", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="auto",
        help="distribution: auto (mirrored over --multi-gpu GPUs, else default), default (one device), "
        "mirrored (all visible GPUs), multi-worker (one process per machine, MultiWorkerMirroredStrategy: "
        "TF_CONFIG names the cluster and this worker; the chief writes the snapshots, logs and TensorBoard)",
    )
    parser.add_argument("--initial-epoch", type=int, help="epoch to start at (default: 0, or the snapshot's)")
    parser.add_argument("--epochs", type=int, default=50, help="number of epochs (default: 50)")
    parser.add_argument(
        "--time-limit",
        type=float,
        metavar="MINUTES",
        help="stop after this many minutes of training, at the end of a step; that epoch's snapshot is written",
    )
    parser.add_argument(
        "--steps", type=int, help="steps per epoch (default: one pass over the training set; fizyr's was 10000)"
    )
    parser.add_argument("--lr", type=float, default=1e-5, help="learning rate (default: 1e-5)")
    parser.add_argument(
        "--optimizer-clipnorm", type=float, default=0.001, help="clip gradients to this norm; 0: no clipping (default: 0.001)"
    )
    parser.add_argument("--optimizer", choices=constants.OPTIMIZERS, default="adam", help="optimiser (default: adam)")
    parser.add_argument("--weight-decay", type=float, help="weight decay (default: adamw 1e-4, others none)")
    parser.add_argument(
        "--lr-schedule",
        choices=constants.LR_SCHEDULES,
        default="plateau",
        help="plateau: divide the rate when the loss stops falling (--reduce-lr-*); cosine: decay it to 1%% "
        "over --epochs x --steps, or over --time-limit (default: plateau)",
    )
    parser.add_argument(
        "--head-norm",
        choices=constants.HEAD_NORMS,
        help="normalisation in the heads' hidden layers: none (the paper's) or group (GroupNorm; default: none)",
    )
    parser.add_argument(
        "--backbone-norm",
        choices=constants.BACKBONE_NORMS,
        help="normalisation in the backbone: batch (its BatchNormalization) or group (GroupNormalization "
        "in its place: each image normalised by its own statistics, in training and at inference alike, "
        "which small batches from scratch need; default: batch)",
    )
    parser.add_argument(
        "--fit-anchors",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="scale the anchor sizes (--config's or the defaults) to fit the training boxes before training; "
        "the fitted sizes are saved in the model",
    )
    parser.add_argument(
        "--box-loss", choices=constants.BOX_LOSSES, default="smooth_l1", help="box regression loss (default: smooth_l1)"
    )
    parser.add_argument("--snapshot-path", default="./snapshots", help="where snapshots go (default: ./snapshots)")
    parser.add_argument(
        "--tensorboard-dir", default="./logs", help="TensorBoard log folder; '' disables (default: ./logs)"
    )
    parser.add_argument("--tensorboard-freq", default="epoch", help="'epoch', 'batch' or a number of batches")
    parser.add_argument("--no-snapshots", dest="snapshots", action="store_false", help="don't save snapshots")
    parser.add_argument(
        "--keep-last", type=int, metavar="N", help="keep only the last N snapshots of this run (default: all)"
    )
    parser.add_argument(
        "--save-best",
        action="store_true",
        help="also keep <backbone>_<dataset>_best.keras, the snapshot of the best validation mAP (without "
        "validation data: of the lowest loss)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace snapshots of this run's epochs that exist already in --snapshot-path (never the --snapshot "
        "resumed from); without it, such a snapshot stops the run before it starts",
    )
    parser.add_argument(
        "--no-evaluation", dest="evaluation", action="store_false", help="no per-epoch validation mAP"
    )
    parser.add_argument("--freeze-backbone", action="store_true", help="keep the backbone's weights fixed")
    parser.add_argument(
        "--freeze-bn",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the backbone's BatchNormalization in inference mode (default: on with pretrained "
        "weights, off with --no-weights)",
    )
    parser.add_argument("--random-transform", action="store_true", help="augment: random affine transforms and colours")
    parser.add_argument(
        "--check-images",
        action="store_true",
        help="decode every image before training and stop if one cannot be read (by default, missing files "
        "stop the run and unreadable images met during training are skipped and reported)",
    )
    parser.add_argument(
        "--image-min-side",
        type=int,
        help=f"resize so the short side is this (default: {constants.DEFAULT_IMAGE_MIN_SIDE}; with --snapshot, "
        "the snapshot's)",
    )
    parser.add_argument(
        "--image-max-side",
        type=int,
        help=f"and the long side at most this (default: {constants.DEFAULT_IMAGE_MAX_SIDE}; with --snapshot, "
        "the snapshot's)",
    )
    parser.add_argument("--no-resize", action="store_true", default=None, help="don't resize images")
    parser.add_argument(
        "--config",
        help="config.ini with [anchor_parameters] / [pyramid_levels] (with --snapshot: the snapshot's are used)",
    )
    parser.add_argument("--weighted-average", action="store_true", help="mAP weighted by instances per class")
    parser.add_argument("--compute-val-loss", action="store_true", help="also compute the validation loss")
    parser.add_argument("--reduce-lr-patience", type=int, default=2, help="epochs without improvement (default: 2)")
    parser.add_argument("--reduce-lr-factor", type=float, default=0.1, help="LR multiplier on plateau (default: 0.1)")
    parser.add_argument(
        "--warmup-steps",
        type=int,
        default=0,
        help="raise the learning rate linearly from --lr/1000 to --lr over the first N steps "
        "(default: 0, no warmup). A --snapshot taken during the warmup continues it when given the same --lr",
    )
    parser.add_argument(
        "--early-stopping-patience",
        type=int,
        default=0,
        help="stop after this many epochs without a better validation mAP (default: 0, never)",
    )
    parser.add_argument("--group-method", default="ratio", choices=("none", "random", "ratio"))
    parser.add_argument(
        "--workers", type=int, default=-1, help="parallel input-pipeline calls (default: -1, autotune)"
    )
    parser.add_argument("--max-queue-size", type=int, default=10, help="batches prefetched (default: 10)")
    parser.add_argument(
        "--multiprocessing", action="store_true",
        help="accepted for compatibility (fizyr's fit_generator option): images load in parallel threads anyway",
    )  # fmt: skip
    parser.add_argument("--mixed-precision", action="store_true", help="compute in float16 (mixed_float16 policy)")
    parser.add_argument("--seed", type=int, help="seed Python, NumPy and TensorFlow for a repeatable run")
    preset = argparse.ArgumentParser(add_help=False)
    preset.add_argument("--preset", choices=sorted(PRESETS))
    preset.add_argument("--snapshot")
    known, _ = preset.parse_known_args(args)
    if known.preset:
        parser.set_defaults(**preset_defaults(known.preset, resuming=bool(known.snapshot)))
    parsed = check_args(parser, parser.parse_args(args))
    parsed.given_flags = _given_flags(parser, args, GIVEN_FLAGS_CHECKED)
    return parsed


# flags whose value a resumed snapshot decides (its compiled optimiser and loss): given with
# --snapshot they must agree with it (training.check_resumed_flags)
GIVEN_FLAGS_CHECKED = ("lr", "optimizer", "optimizer_clipnorm", "weight_decay", "box_loss")


def _given_flags(parser, args, dests):
    """The ``dests`` given on the command line (not a default, nor a preset's)."""
    unset = object()
    parser.set_defaults(**{dest: unset for dest in dests})
    try:
        again = parser.parse_args(args)
    finally:
        parser.set_defaults(**{dest: None for dest in dests})
    return frozenset(dest for dest in dests if getattr(again, dest, unset) is not unset)


def _argument_problems(args):
    """What is impossible in parsed arguments (messages naming the flags); attributes a
    fizyr-style parser lacks count as their defaults."""
    def get(name, default=None):
        return getattr(args, name, default)

    checks = [
        (get("batch_size", 1) < 1, f"--batch-size must be >= 1, got {get('batch_size')}"),
        (get("epochs", 1) < 1 or (get("steps") is not None and get("steps") < 1), "--epochs and --steps must be >= 1"),
        (get("lr", 1) <= 0, f"--lr must be > 0, got {get('lr')}"),
        (get("feature_size") is not None and get("feature_size") < 1,
         f"--feature-size must be >= 1, got {get('feature_size')}"),
        (bool(get("snapshot")) and any(get(name) is not None for name in ("feature_size", "head_depth", "backbone_norm")),
         "--feature-size, --head-depth and --backbone-norm shape a new model; a --snapshot keeps the architecture "
         "it was saved with"),
        (get("snapshots", False) and not get("snapshot_path", "./snapshots"),
         "--snapshot-path is empty (give a folder, or --no-snapshots)"),
        (get("keep_last") is not None and get("keep_last") < 1, f"--keep-last must be >= 1, got {get('keep_last')}"),
        (bool(get("fit_anchors")) and bool(get("snapshot")),
         "--fit-anchors shapes a new model's anchors; a --snapshot keeps the anchors it was trained with"),
        (get("time_limit") is not None and not get("time_limit") > 0,
         f"--time-limit must be > 0 minutes, got {get('time_limit')}"),
        (get("warmup_steps", 0) < 0, f"--warmup-steps must be >= 0, got {get('warmup_steps')}"),
        (get("head_depth") is not None and get("head_depth") < 0, f"--head-depth must be >= 0, got {get('head_depth')}"),
        (get("multi_gpu", 0) < 0, "--multi-gpu must be >= 0"),
        (get("multi_gpu", 0) > 1 and get("batch_size", 1) < get("multi_gpu", 0),
         f"--batch-size ({get('batch_size')}) must be >= --multi-gpu ({get('multi_gpu')})"),
        (get("image_min_side") is not None and get("image_min_side") < 32,
         f"--image-min-side must be >= 32, got {get('image_min_side')}"),
        (get("image_max_side") is not None and get("image_max_side") < (get("image_min_side") or 32),
         "--image-max-side must be >= --image-min-side (and >= 32)"),
        (get("snapshot") is None and get("image_max_side") is None
         and (get("image_min_side") or 0) > constants.DEFAULT_IMAGE_MAX_SIDE,
         f"--image-min-side ({get('image_min_side')}) > the default --image-max-side: give --image-max-side"),
    ]  # fmt: skip
    return [message for failed, message in checks if failed]


def check_args(parser_or_args, args=None):
    """Reject impossible combinations of parsed arguments; returns the arguments.

    Two call forms: ``check_args(parser, args)`` reports through ``parser.error`` (argparse's
    message, exit status 2), as ``parse_args`` does; fizyr's ``check_args(parsed_args)``
    raises ``ValueError``.
    """
    parser = parser_or_args if args is not None else None
    args = parser_or_args if args is None else args
    problems = _argument_problems(args)
    if problems and parser is not None:
        parser.error(problems[0])
    if problems:
        raise ValueError(problems[0])
    return args


def makedirs(path):
    """Create a folder and its parents; nothing if it exists already (fizyr's helper)."""
    os.makedirs(path, exist_ok=True)


def _require_file(path, what):
    if os.path.isdir(path):
        raise ValueError(f"{what} {path} is a folder, not a file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")


def check_inputs(args):
    """Check that every file the run needs exists, before anything heavy is imported or built."""
    from keras_retinanet.preprocessing.datasets import dataset_inputs

    for what, path, is_folder in dataset_inputs(args):
        if is_folder and not os.path.isdir(path):
            raise FileNotFoundError(f"{what} not found: {path}")
        if not is_folder:
            _require_file(path, what)
    if args.dataset_type == "csv" and args.val_annotations:
        _require_file(args.val_annotations, "validation annotations file")
    if args.snapshot:
        _require_file(args.snapshot, "snapshot")
    if args.weights:
        _require_file(args.weights, "weights file")
    if args.config:
        _require_file(args.config, "config file")


def __getattr__(name):
    # fizyr's scripts import these from here; they live in keras_retinanet.training (lazy: TF is heavy)
    if name in ("create_generators", "create_models", "create_callbacks", "model_with_weights"):
        from keras_retinanet import training

        return getattr(training, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


EXIT_STATUS = {"done": 0, "interrupted": 130, "diverged": 1, "output-error": 1}


@tool_main("retinanet-train")
def main(args=None):
    args = parse_args(sys.argv[1:] if args is None else args)
    set_verbosity(args)
    if args.multiprocessing:
        LOGGER.info(MULTIPROCESSING_NOTE)
    try:
        check_inputs(args)
        if args.strategy == "multi-worker":
            from keras_retinanet.distribute import read_tf_config

            read_tf_config()  # a bad cluster fails here, before TensorFlow starts
        if args.gpu is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = args.gpu
        import_tensorflow(args.verbose)
        from keras_retinanet import training  # heavy imports only once the arguments are sane

        run = training.prepare(args)
    except (ToolError, ValueError, OSError) as error:
        print(f"retinanet-train: error: {error}", file=sys.stderr)
        return 1
    print_notes("retinanet-train", run.notes)
    log_threads()
    result = run()
    if result.skipped:
        from keras_retinanet.preprocessing.generator import describe_skipped

        LOGGER.warning(describe_skipped(result.skipped, limit=20))
    if result.best is not None:
        path, epoch, monitor, value = result.best
        print(f"best snapshot: {path} (epoch {epoch}, {monitor} {value:.4f})")
    if result.status == "interrupted":
        print(f"\nretinanet-train: {result.message}", file=sys.stderr)
    elif result.message:
        print(f"retinanet-train: error: {result.message}", file=sys.stderr)
    return EXIT_STATUS[result.status]


if __name__ == "__main__":
    sys.exit(main())
