"""retinanet-evaluate: VOC mAP and COCO metrics of a RetinaNet model on a dataset.

    retinanet-evaluate csv val.csv classes.csv snapshots/resnet50_csv_10.keras
    retinanet-evaluate pascal /data/VOCdevkit/VOC2007 model.keras --metric all --save-path out/
    retinanet-evaluate coco /data/COCO model.onnx --batch-size 4 --json figures.json

The model is a training snapshot (converted on the fly), an inference model or an exported
graph; its detector spec gives the backbone's preprocessing, the anchors, the image sizes
and the class names, so no recipe flag is needed. Options may stand before the dataset
type or after its arguments. Prints a table of classes (instances, AP), the mean and the
instance-weighted mean AP, the inference time and, with --metric coco|all, COCOeval's 12
figures (against the dataset's own annotations for COCO, against its boxes for CSV and
Pascal VOC).
"""
import argparse
import json
import math
import os
import sys
import time

from keras_retinanet import constants
from keras_retinanet.bin import (
    LOGGER,
    RECIPE_FLAGS,
    ToolError,
    add_output_options,
    first_line,
    import_tensorflow,
    new_parser,
    print_notes,
    set_verbosity,
    tool_main,
)
from keras_retinanet.errors import OutputError
from keras_retinanet.preprocessing.datasets import add_dataset_subparsers

PROG = "retinanet-evaluate"
METRICS = ("voc", "coco", "all")
DEFAULT_METRIC = {"csv": "voc", "pascal": "voc", "coco": "coco", "kitti": "voc", "oid": "voc"}
DEFAULT_SET_NAME = {"pascal": "test", "coco": "val2017", "kitti": "val", "oid": "validation"}
MAX_MESSAGE_LENGTH = 200  # longer library messages are cut to their first sentence
EXAMPLES = """
retinanet-evaluate csv val.csv classes.csv snapshots/resnet50_csv_10.keras
retinanet-evaluate csv val.csv classes.csv model.tflite --metric all --json figures.json
retinanet-evaluate pascal /data/VOC2007 model.keras --save-path eval_out
retinanet-evaluate coco /data/coco model.keras --set-name val2017 --batch-size 4
retinanet-evaluate kitti /data/kitti model.keras --set-name val
"""
RECIPE_NOTE = """the model's detector spec gives its backbone, anchors, image sizes and classes:
--backbone and --config are only for older models (and must agree with the spec);
--image-min-side / --image-max-side evaluate at other sizes (a note says so)."""
# how messages name the values this tool passes to the library
FLAG_NAMES = dict(RECIPE_FLAGS, class_names="the dataset's class list")


def _add_options(parser, suppress):
    """Options shared by every dataset type.

    The sub-command parsers get them too (with suppressed defaults, so a value given
    before the sub-command is not overwritten), letting options follow the positionals.
    """

    def default(value):
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--convert-model", action="store_true", default=default(False),
                        help="accepted for compatibility: training snapshots are detected and converted by themselves")
    parser.add_argument("--backbone", default=default(None),
                        help="backbone of a model without a detector spec (default: the spec's, else resnet50)")
    parser.add_argument("--gpu", default=default(None), help="id of the GPU to use (sets CUDA_VISIBLE_DEVICES)")
    parser.add_argument("--score-threshold", type=float, default=default(constants.DEFAULT_SCORE_THRESHOLD),
                        help=f"ignore detections with a lower score (default {constants.DEFAULT_SCORE_THRESHOLD})")
    parser.add_argument("--iou-threshold", type=float, default=default(constants.DEFAULT_IOU_THRESHOLD),
                        help=f"minimum IoU of a true positive for VOC mAP (default {constants.DEFAULT_IOU_THRESHOLD})")
    parser.add_argument("--max-detections", type=int, default=default(constants.DEFAULT_EVAL_MAX_DETECTIONS),
                        help=f"detections kept per image, best first (default {constants.DEFAULT_EVAL_MAX_DETECTIONS})")
    parser.add_argument("--save-path", default=default(None),
                        help="write each image with ground truth and detections drawn, and a "
                             "precision-recall plot per class, into this folder")
    parser.add_argument("--image-min-side", type=int, default=default(None),
                        help="resize images so the smallest side is this long (default: the model's, else "
                             f"{constants.DEFAULT_IMAGE_MIN_SIDE})")
    parser.add_argument("--image-max-side", type=int, default=default(None),
                        help="... unless the largest side then exceeds this (default: the model's, else "
                             f"{constants.DEFAULT_IMAGE_MAX_SIDE})")
    parser.add_argument("--no-resize", action="store_true", default=default(None),
                        help="do not resize images (default: the model's)")
    parser.add_argument("--config", default=default(None),
                        help="config .ini with anchor parameters / pyramid levels of a model without a detector spec")
    parser.add_argument("--group-method", choices=("none", "random", "ratio"), default=default("none"),
                        help="accepted for compatibility; evaluation visits images in order")
    parser.add_argument("--metric", choices=METRICS, default=default(None),
                        help="voc (mAP), coco (COCOeval) or all (default: coco for COCO, else voc)")
    parser.add_argument("--batch-size", type=int, default=default(1), help="images per inference call (default 1)")
    parser.add_argument("--json", default=default(None), metavar="OUT", help="write every figure to this JSON file")
    parser.add_argument("--overwrite", action="store_true", default=default(False),
                        help="replace --json and --save-path files that exist already (inputs are never written over)")
    if suppress:
        add_output_options(parser, suppress=True)


def parse_args(args):
    """Parse the command line (a list of strings)."""
    parser = new_parser(
        PROG, "Evaluate a RetinaNet model: VOC mAP and COCO metrics.", EXAMPLES, RECIPE_NOTE
    )
    datasets = add_dataset_subparsers(parser, annotations_help="CSV file with the annotations to evaluate on")
    for dataset_type, default_set in DEFAULT_SET_NAME.items():
        datasets[dataset_type].add_argument("--set-name", default=default_set, help=f"set name (default {default_set})")

    # the model comes after the dataset's positionals (fizyr's order); a positional of the
    # main parser would swallow options written after them
    for sub_parser in datasets.values():
        sub_parser.add_argument(
            "model", help="training snapshot or inference model (.keras), SavedModel directory, .tflite or .onnx"
        )
        _add_options(sub_parser, suppress=True)
    _add_options(parser, suppress=False)

    parsed = parser.parse_args(args)
    if parsed.metric is None:
        parsed.metric = DEFAULT_METRIC[parsed.dataset_type]
    if parsed.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {parsed.batch_size}")
    if parsed.max_detections < 1:
        parser.error(f"--max-detections must be >= 1, got {parsed.max_detections}")
    if not 0 < parsed.iou_threshold <= 1:
        parser.error(f"--iou-threshold must be in (0, 1], got {parsed.iou_threshold}")
    for flag in ("image_min_side", "image_max_side"):
        if getattr(parsed, flag) is not None and getattr(parsed, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(parsed, flag)}")
    return parsed


# ------------------------------------------------------------------------ input checks


def check_inputs(args):
    """Raise ToolError if a file or folder named on the command line does not exist."""
    from keras_retinanet.preprocessing.datasets import dataset_inputs

    required = [("model file", args.model, os.path.exists)]
    required += [(what, path, os.path.isdir if is_folder else os.path.isfile)
                 for what, path, is_folder in dataset_inputs(args)]  # fmt: skip
    if args.config:
        required.append(("config file", args.config, os.path.isfile))
    for what, path, exists in required:
        if not exists(path):
            raise ToolError(f"{what} not found: {path}")


def _one_line(error):
    return first_line(error, MAX_MESSAGE_LENGTH)


def create_generator(args, preprocess_image=None):
    """The evaluation generator of the dataset type: images in order, no augmentation.

    It only reads images and annotations; the detector preprocesses and resizes (a
    ``preprocess_image`` given here is used by callers that run a bare model on it).
    """
    common = {"group_method": args.group_method, "shuffle_groups": False}
    if preprocess_image is not None:
        common["preprocess_image"] = preprocess_image
    from keras_retinanet.preprocessing.datasets import generator_from_args

    try:
        return generator_from_args(args, **common)
    except (ValueError, OSError, KeyError) as error:
        raise ToolError(_one_line(error)) from None


def load_model(args):
    """The ``inference.Detector`` of the model file, configured by its detector spec and the flags."""
    from keras_retinanet.errors import ModelLoadError, SpecConflictError, SpecError
    from keras_retinanet.inference import load_detector

    LOGGER.debug("loading the model")
    try:
        return load_detector(
            args.model, backbone=args.backbone, config=args.config, image_min_side=args.image_min_side,
            image_max_side=args.image_max_side, no_resize=args.no_resize, score_threshold=args.score_threshold,
            max_detections=args.max_detections, batch_size=args.batch_size, flag_names=FLAG_NAMES,
            clip_boxes=False, many_images=True,
        )  # fmt: skip
    except (ModelLoadError, SpecConflictError, SpecError) as error:
        raise ToolError(_one_line(error)) from None
    except (ValueError, KeyError, OSError) as error:  # unknown backbone, config that does not fit the model
        raise ToolError(f"cannot load model {args.model}: {_one_line(error)}") from None


def plan_outputs(args, generator):
    """Check --json and every file --save-path will get before any work (``OutputPlan``).

    Raises:
        ToolError: an output is an input, exists (without --overwrite), or cannot be written.
    """
    from keras_retinanet.errors import OutputError
    from keras_retinanet.utils import eval as voc_eval
    from keras_retinanet.utils.files import OutputPlan

    inputs = [args.model] + [getattr(args, name) for name in ("annotations", "classes", "config") if getattr(args, name, None)]
    try:
        inputs += [generator.image_path(index) for index in range(generator.size())]
    except NotImplementedError:
        pass
    plan = OutputPlan(inputs=inputs, overwrite=args.overwrite)
    try:
        if args.json:
            plan.check(args.json, "--json file")
        if args.save_path:
            plan.check_folder(args.save_path, "--save-path folder")
            for index in range(generator.size()):
                plan.check(voc_eval.drawn_image_path(args.save_path, index), "drawn image")
            for label in voc_eval.evaluated_labels(generator):
                path = voc_eval.precision_recall_plot_path(args.save_path, label, generator.label_to_name(label))
                plan.check(path, "precision-recall plot")
    except OutputError as error:
        raise ToolError(str(error)) from None
    return plan


def check_classes(detector, generator, model_path):
    """ToolError if the model's classes (from its spec) are not the dataset's, label by label."""
    from keras_retinanet.errors import SpecConflictError
    from keras_retinanet.spec import check_class_names, class_names_of

    try:
        check_class_names(detector.spec, class_names_of(generator), source=model_path)
    except SpecConflictError as error:
        raise ToolError(str(error)) from None


# ------------------------------------------------------------------------ evaluation and report


def _finite_or_none(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def run_evaluation(args, generator, model):
    """Run the model (an ``inference.Detector`` or a bare inference model) once; compute the metrics.

    Returns:
        the report dict (what --json writes).
    """
    from keras_retinanet.utils import coco_eval
    from keras_retinanet.utils import eval as voc_eval

    started = time.perf_counter()
    all_detections, inference_times = voc_eval.get_detections(
        generator, model, score_threshold=args.score_threshold, max_detections=args.max_detections,
        save_path=args.save_path, batch_size=args.batch_size, progress=True,
    )
    seconds = time.perf_counter() - started
    skipped = getattr(generator, "skipped_images", None) or {}
    detected = generator.size() - len(skipped)
    labels = voc_eval.evaluated_labels(generator)
    report = {
        "model": args.model,
        "dataset_type": args.dataset_type,
        "images": generator.size(),
        "score_threshold": args.score_threshold,
        "iou_threshold": args.iou_threshold,
        "max_detections": args.max_detections,
        "batch_size": args.batch_size,
        "inference_time_per_image": float(sum(inference_times) / max(len(inference_times), 1)),
        # with several calls at once a call takes longer than its images' share of the wall clock
        "model_calls_at_once": int(getattr(model, "model_calls", 1)),  # the tool's model is a Detector
        # the whole pass: reading, the first call's tracing, --save-path's drawings included
        "images_per_second": float(detected / seconds) if seconds > 0 else None,
    }
    spec = getattr(model, "spec", None)
    if spec is not None:
        report["detector_spec"] = spec.to_dict()
    all_annotations = None
    if args.metric in ("voc", "all"):
        all_annotations = voc_eval.get_annotations(generator)
        curves = voc_eval.precision_recall_curves(all_detections, all_annotations, args.iou_threshold, labels)
        average_precisions = voc_eval.average_precisions_from_curves(curves)
        if args.save_path:
            voc_eval.save_precision_recall_plots(curves, average_precisions, args.save_path, generator.label_to_name)
        report["voc"] = {
            "classes": [
                {"label": label, "name": generator.label_to_name(label), "instances": count, "ap": ap}
                for label, (ap, count) in average_precisions.items()
            ],
            "mAP": _finite_or_none(voc_eval.mean_average_precision(average_precisions)),
            "weighted_mAP": _finite_or_none(voc_eval.weighted_mean_average_precision(average_precisions)),
        }
    if args.metric in ("coco", "all"):
        if args.dataset_type == "coco":
            stats = coco_eval.coco_stats_from_results(
                generator, coco_eval.coco_results(generator, all_detections), verbose=False
            )
            figures = [0.0] * len(coco_eval.COCO_METRIC_NAMES) if stats is None else [float(v) for v in stats]
            report["coco"] = dict(zip(coco_eval.COCO_METRIC_NAMES, figures))
        else:
            if all_annotations is None:
                all_annotations = voc_eval.get_annotations(generator)
            report["coco"] = coco_eval.coco_metrics(all_detections, all_annotations, labels)
    return report


def format_report(report):
    """The report as the text the tool prints."""
    lines = []
    if "voc" in report:
        classes = report["voc"]["classes"]
        width = max([len("class")] + [len(str(entry["name"])) for entry in classes])
        lines.append(f"{'class':<{width}}  {'instances':>9}  {'AP':>6}")
        for entry in classes:
            lines.append(f"{entry['name']:<{width}}  {entry['instances']:>9d}  {entry['ap']:>6.4f}")
        with_instances = sum(1 for entry in classes if entry["instances"] > 0)
        total = sum(entry["instances"] for entry in classes)
        if report["voc"]["mAP"] is None:
            lines.append("No test instances found: mAP undefined.")
        else:
            lines.append(f"mAP (IoU {report['iou_threshold']:g}, mean over {with_instances} classes with instances): "
                         f"{report['voc']['mAP']:.4f}")
            lines.append(f"weighted mAP (by {total} instances): {report['voc']['weighted_mAP']:.4f}")
    if "coco" in report:
        from keras_retinanet.utils.coco_eval import COCO_METRIC_DESCRIPTIONS

        lines.append("COCO metrics:")
        for (name, value), description in zip(report["coco"].items(), COCO_METRIC_DESCRIPTIONS):
            lines.append(f"  {name:<6} {description} = {value:.4f}")
    lines.append(f"Inference time for {report['images']} images: {report['inference_time_per_image']:.4f} s per image "
                 f"(batch size {report['batch_size']}, {report['model_calls_at_once']} model call(s) at once)")
    if report.get("images_per_second"):
        lines.append(f"Whole detection pass (reading, tracing and any drawing included): {report['images_per_second']:.1f} images/s")
    return "\n".join(lines)


@tool_main(PROG)
def main(args=None):
    """Entry point of retinanet-evaluate; returns the exit status."""
    args = parse_args(sys.argv[1:] if args is None else args)
    set_verbosity(args)
    try:
        check_inputs(args)
        if args.gpu is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
        import_tensorflow(args.verbose)
        generator = create_generator(args)
        missing = generator.missing_images() if hasattr(generator, "missing_images") else []
        if missing:  # as retinanet-train: missing files are a mistake to fix first
            listed = ", ".join(path for _, path in missing[:5])
            raise ToolError(f"{len(missing)} images of the dataset are missing: {listed}{', ...' if len(missing) > 5 else ''}")
        plan = plan_outputs(args, generator)
        detector = load_model(args)
        check_classes(detector, generator, args.model)
        print_notes(PROG, detector.notes)
        try:
            report = run_evaluation(args, generator, detector)
            print(format_report(report))
            if args.json:
                with plan.open(args.json, "w", "--json file") as file:
                    json.dump(report, file, indent=2)
        except OutputError as error:
            raise ToolError(str(error)) from None
    except ToolError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    if args.save_path:
        print(f"Drawn images and precision-recall plots written to {args.save_path}")
    skipped = generator.skipped_images.items() if hasattr(generator, "skipped_images") else []
    if skipped:
        from keras_retinanet.preprocessing.generator import describe_skipped

        LOGGER.warning(f"{describe_skipped(skipped, limit=20)}; the figures leave them out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
