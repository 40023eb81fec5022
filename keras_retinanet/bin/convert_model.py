"""retinanet-convert-model: turn a training snapshot into an inference model or an exported graph.

    retinanet-convert-model snapshots/resnet50_csv_10.keras model.keras
    retinanet-convert-model snapshots/resnet50_csv_10.keras exported/retinanet      # SavedModel
    retinanet-convert-model snap.keras model.tflite --input-size 480 640
    retinanet-convert-model snap.keras model.onnx --image-min-side 600 --image-max-side 1000
    retinanet-convert-model snap.keras model_int8.onnx --quantize int8 --calibration train.csv

The format follows MODEL_OUT's suffix (or --format). ``.keras`` is the inference model
(preprocessed, resized images in; boxes in its input's pixels). SavedModel, TFLite and
ONNX hold an end-to-end graph: original BGR images in (uint8 or float32), backbone
preprocessing and resize inside, NMS inside, boxes out in the original image's pixels.
See ``keras_retinanet.export``. The snapshot's detector spec gives the backbone, anchors
and image sizes; the output carries the spec on, with the filter settings.
"""
import os
import sys

from keras_retinanet import constants
from keras_retinanet.bin import (
    RECIPE_FLAGS,
    ToolError,
    first_line,
    import_tensorflow,
    new_parser,
    print_notes,
    set_verbosity,
    tool_main,
)

PROG = "retinanet-convert-model"
EXAMPLES = """
retinanet-convert-model snapshots/resnet50_csv_10.keras model.keras
retinanet-convert-model snapshots/resnet50_csv_10.keras exported_model
retinanet-convert-model snapshots/resnet50_csv_10.keras model.tflite --input-size 480 640
retinanet-convert-model snapshots/resnet50_csv_10.keras model.onnx --score-threshold 0.3
retinanet-convert-model snapshots/resnet50_csv_10.keras model_int8.onnx --quantize int8 --calibration train.csv
retinanet-convert-model snapshots/resnet50_csv_10.keras model_int8.tflite --input-size 480 640 \
    --quantize int8 --calibration photos/ --calibration-images 200
"""
FILTER_DEFAULTS = {
    "nms_threshold": constants.DEFAULT_NMS_THRESHOLD,
    "score_threshold": constants.DEFAULT_SCORE_THRESHOLD,
    "max_detections": constants.DEFAULT_MAX_DETECTIONS,
}

FORMAT_HELP = """formats:
  .keras        Keras inference model: takes preprocessed, resized images (B, H, W, 3)
                float32, returns [boxes, scores, labels] in the input's pixels.
  no suffix     TensorFlow SavedModel directory: signatures serving_default (uint8
                images) and serving_float32 (float32 images), any image size and
                batch; returns {boxes, scores, labels} in original-image pixels.
  .tflite       TFLite: a FIXED input size (TFLite interpreters allocate one shape):
                --input-size H W is required (the size of the images it will take; it
                still resizes them to min/max side inside); batch 1; --input-dtype
                uint8|float32. retinanet-predict and keras_retinanet.inference fit
                images of other sizes into it (aspect ratio kept, padded).
  .onnx         ONNX (needs the optional tf2onnx: pip install 'keras-retinanet[onnx]'):
                any image size and batch; --input-dtype uint8|float32.
Quantisation (--quantize): int8 (TFLite, ONNX) is post-training static quantisation,
calibrated on --calibration (a CSV annotations file, a COCO or Pascal VOC dataset folder,
or a folder of images; --calibration-images of them, default 100, spread over the set):
the convolutional network runs on int8, the box decoding and NMS in float; the graph still
takes uint8 images and returns boxes in their pixels. fp16 (TFLite): float16 weights.
Every format keeps NMS and the score threshold in the graph; outputs are padded with -1
up to --max-detections. Every format carries the model's detector spec (backbone,
classes, anchors, sizes, filter settings), which retinanet-predict, retinanet-evaluate
and keras_retinanet.inference.load_detector read: --backbone and --config are only for
snapshots without one."""


def parse_args(args):
    """Parse the command line (a list of strings)."""
    from keras_retinanet.calibration import DEFAULT_CALIBRATION_IMAGES
    from keras_retinanet.export import CHANNEL_ORDERS, DEFAULT_ONNX_OPSET, FORMATS, INPUT_DTYPES, QUANTIZE_MODES

    parser = new_parser(
        PROG,
        "Convert a training snapshot into an inference model (.keras) or an exported "
        "end-to-end graph (SavedModel, TFLite, ONNX) with NMS inside.",
        EXAMPLES,
        FORMAT_HELP,
    )
    parser.add_argument("model_in", help="training snapshot (.keras) written by retinanet-train (or an inference "
                                         "model, for the exported formats)")
    parser.add_argument("model_out", help="output: .keras, .tflite, .onnx, or a directory name (SavedModel)")
    parser.add_argument("--format", choices=FORMATS, help="output format (default: from MODEL_OUT's suffix)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace MODEL_OUT if it exists (never the input model; the old file stays until the "
                             "new one is complete)")
    parser.add_argument("--backbone",
                        help="backbone of a snapshot without a detector spec: sets the exported graph's "
                             "preprocessing (default: the spec's, else resnet50)")
    parser.add_argument("--no-nms", dest="nms", action="store_false", help="no non-maximum suppression")
    parser.add_argument("--no-class-specific-filter", dest="class_specific_filter", action="store_false",
                        help="keep only each anchor's best class; class-agnostic NMS")
    parser.add_argument("--no-fold-batch-norm", dest="fold_batch_norm", action="store_false",
                        help="keep the backbone's batch normalisation layers (by default they are folded into "
                             "the convolutions: same detections, faster)")
    parser.add_argument("--config", help="config .ini with the anchor parameters / pyramid levels of a snapshot "
                                         "without a detector spec")
    parser.add_argument("--nms-threshold", type=float,
                        help=f"IoU above which NMS drops the lower-scoring box (default {constants.DEFAULT_NMS_THRESHOLD})")
    parser.add_argument("--score-threshold", type=float,
                        help=f"drop detections scoring at most this (default {constants.DEFAULT_SCORE_THRESHOLD})")
    parser.add_argument("--max-detections", type=int,
                        help=f"detections per image (default {constants.DEFAULT_MAX_DETECTIONS})")
    parser.add_argument("--parallel-iterations", type=int,
                        help="images of a batch the filtering processes in parallel (default 32)")
    graph = parser.add_argument_group("image sizes (the inference model's spec; inside the exported graphs)")
    graph.add_argument("--image-min-side", type=int,
                       help="resize images so the smallest side is this long (default: the snapshot's, else "
                            f"{constants.DEFAULT_IMAGE_MIN_SIDE})")
    graph.add_argument("--image-max-side", type=int,
                       help="... unless the largest side then exceeds this (default: the snapshot's, else "
                            f"{constants.DEFAULT_IMAGE_MAX_SIDE})")
    graph.add_argument("--no-resize", action="store_true", default=None, help="run on images at their size")
    graph.add_argument("--input-channels", choices=CHANNEL_ORDERS, default="bgr",
                       help="channel order of the input images (default bgr, as cv2.imread)")
    graph.add_argument("--input-dtype", choices=INPUT_DTYPES, default="uint8",
                       help="TFLite and ONNX input type (default uint8; SavedModel has both signatures)")
    graph.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                       help="TFLite only, required: the fixed size of the images the model takes")
    graph.add_argument("--opset", type=int, default=DEFAULT_ONNX_OPSET,
                       help=f"ONNX opset (default {DEFAULT_ONNX_OPSET})")
    quantize = parser.add_argument_group("quantisation (TFLite and ONNX)")
    quantize.add_argument("--quantize", choices=QUANTIZE_MODES,
                          help="int8: post-training static quantisation of the convolutional network (int8 "
                               "per-channel weights; ONNX Runtime QDQ, TFLite int8 kernels), calibrated on "
                               "--calibration; fp16: float16 weights (TFLite)")
    quantize.add_argument("--calibration", metavar="DATA",
                          help="int8 calibration images: a CSV annotations file, a COCO or Pascal VOC dataset "
                               "folder, or a folder of images (training images, not the validation set)")
    quantize.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES, metavar="N",
                          help=f"calibration images used, spread over DATA (default {DEFAULT_CALIBRATION_IMAGES})")
    quantize.add_argument("--calibration-set", metavar="NAME",
                          help="the COCO / Pascal VOC set of DATA (default train2017 / trainval)")
    parsed = parser.parse_args(args)
    if parsed.calibration_images < 1:
        parser.error(f"--calibration-images must be >= 1, got {parsed.calibration_images}")
    if parsed.max_detections is not None and parsed.max_detections < 1:
        parser.error(f"--max-detections must be >= 1, got {parsed.max_detections}")
    if parsed.parallel_iterations is not None and parsed.parallel_iterations < 1:
        parser.error(f"--parallel-iterations must be >= 1, got {parsed.parallel_iterations}")
    if parsed.nms_threshold is not None and not 0 < parsed.nms_threshold <= 1:
        parser.error(f"--nms-threshold must be in (0, 1], got {parsed.nms_threshold}")
    for flag in ("image_min_side", "image_max_side"):
        if getattr(parsed, flag) is not None and getattr(parsed, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be > 0, got {getattr(parsed, flag)}")
    if None not in (parsed.image_min_side, parsed.image_max_side) and parsed.image_min_side > parsed.image_max_side:
        parser.error("--image-min-side must be <= --image-max-side")
    if parsed.input_size is not None and min(parsed.input_size) < 1:
        parser.error(f"--input-size must be positive, got {parsed.input_size}")
    return parsed


def check_inputs(args, format):
    """Raise ToolError for inputs that cannot work, before loading anything heavy; returns the calibration images."""
    if os.path.isdir(args.model_in):
        raise ToolError(f"{args.model_in} is a folder: give the training snapshot (.keras) to convert")
    if not os.path.isfile(args.model_in):
        raise ToolError(f"model file not found: {args.model_in}")
    from keras_retinanet.errors import OutputError
    from keras_retinanet.utils.files import OutputPlan

    inputs = [path for path in (args.model_in, args.config, args.calibration) if path]
    marker = "saved_model.pb" if format == "saved_model" else None  # only an earlier export is replaced
    try:
        OutputPlan(inputs=inputs, overwrite=args.overwrite).check(args.model_out, "output model", folder_marker=marker)
    except OutputError as error:
        raise ToolError(str(error)) from None
    if args.config and not os.path.isfile(args.config):
        raise ToolError(f"config file not found: {args.config}")
    if format == "tflite" and args.input_size is None:
        raise ToolError("TFLite needs a fixed input size: pass --input-size H W (the size of the images it will take)")
    if format != "tflite" and args.input_size is not None:
        raise ToolError(f"--input-size applies to TFLite only (the {format} output takes any size)")
    if format == "keras" and not args.model_out.endswith(".keras"):
        raise ToolError(f"a Keras model file must end with .keras, got {args.model_out}")
    if format == "onnx":
        import importlib.util

        if importlib.util.find_spec("tf2onnx") is None:
            raise ToolError("ONNX export needs tf2onnx: pip install 'keras-retinanet[onnx]'")
        if args.quantize == "int8" and importlib.util.find_spec("onnxruntime") is None:
            raise ToolError("int8 ONNX export needs onnxruntime (its quantisation tools): pip install 'keras-retinanet[onnx]'")
    return check_quantize_flags(args, format)


def check_quantize_flags(args, format):
    """Raise ToolError for quantisation flags that do not fit the output; returns the calibration images."""
    from keras_retinanet.export import QUANTIZE_FORMATS

    if args.quantize is None:
        if args.calibration is not None:
            raise ToolError("--calibration is for --quantize int8")
        return None
    if format not in QUANTIZE_FORMATS[args.quantize]:
        targets = " and ".join(QUANTIZE_FORMATS[args.quantize])
        raise ToolError(f"--quantize {args.quantize} applies to {targets} outputs, not {format} ({args.model_out})")
    if args.quantize != "int8":
        if args.calibration is not None:
            raise ToolError(f"--calibration is for --quantize int8, not {args.quantize}")
        return None
    if args.calibration is None:
        raise ToolError(
            "--quantize int8 needs --calibration DATA: a CSV annotations file, a COCO or Pascal VOC dataset folder, "
            "or a folder of images"
        )
    from keras_retinanet.calibration import calibration_images
    from keras_retinanet.errors import CalibrationError

    try:
        return calibration_images(args.calibration, args.calibration_images, set_name=args.calibration_set)
    except CalibrationError as error:
        raise ToolError(str(error)) from None


def convert(args, format, calibration=None):
    """Load, convert and write the model; returns (one-line description of the output, notes).

    Args:
        calibration: int8 only: the calibration images (``check_inputs``' result).
    """
    from keras_retinanet import export
    from keras_retinanet.errors import CalibrationError, ModelLoadError, OutputError, SpecConflictError, SpecError
    from keras_retinanet.inference import recipe_from_config, open_keras_model

    filter_flags = {name: getattr(args, name) for name in FILTER_DEFAULTS if getattr(args, name) is not None}
    if args.parallel_iterations is not None:
        filter_flags["parallel_iterations"] = args.parallel_iterations
    if not args.nms:
        filter_flags["nms"] = False
    if not args.class_specific_filter:
        filter_flags["class_specific_filter"] = False
    try:
        given = dict(
            recipe_from_config(args.config), backbone=args.backbone, image_min_side=args.image_min_side,
            image_max_side=args.image_max_side, no_resize=args.no_resize,
        )  # fmt: skip
        options = dict(FILTER_DEFAULTS, **filter_flags)
        loaded = open_keras_model(
            args.model_in, given, flag_names=RECIPE_FLAGS, fold_batch_norm=args.fold_batch_norm, **options
        )
    except (ModelLoadError, SpecConflictError, SpecError) as error:
        raise ToolError(str(error)) from None
    except (ValueError, KeyError) as error:  # config file or anchor parameters that do not fit the model
        raise ToolError(f"cannot convert {args.model_in}: {first_line(error)}") from None
    fizyr_file = os.path.splitext(args.model_in)[1].lower() == ".h5"
    if not loaded.converted:
        if format == "keras" and not fizyr_file:  # a fizyr inference model becomes a .keras one
            raise ToolError(f"{args.model_in} is an inference model already: nothing to convert to .keras")
        if filter_flags:
            flags = ", ".join("--" + name.replace("_", "-") for name in filter_flags)
            raise ToolError(
                f"{args.model_in} is an inference model: its filter settings are fixed in it ({flags} given); "
                "convert its training snapshot instead"
            )
    spec = loaded.spec
    graph_options = {
        "image_min_side": spec.image_min_side,
        "image_max_side": spec.image_max_side,
        "no_resize": spec.no_resize,
        "channel_order": args.input_channels,
    }
    try:
        export.export_model(
            loaded.model,
            args.model_out,
            format=format,
            preprocess_mode=spec.preprocess_mode,
            input_size=args.input_size,
            input_dtype=args.input_dtype,
            opset=args.opset,
            spec=spec,
            quantize=args.quantize,
            calibration=calibration,
            **graph_options,
        )
    except (export.ExportError, CalibrationError, OutputError) as error:
        raise ToolError(str(error)) from None
    if format == "keras":
        return f"inference model written to {args.model_out}", loaded.recipe.notes
    size = "x".join(str(s) for s in args.input_size) if format == "tflite" else "any size"
    resize = "no resize" if spec.no_resize else f"resized to min side {spec.image_min_side}, max {spec.image_max_side}"
    precision = ""
    if args.quantize == "int8":
        precision = f", int8 calibrated on {len(calibration)} images of {args.calibration}"
    elif args.quantize:
        precision = f", {args.quantize} weights"
    message = (
        f"{format} model written to {args.model_out} ({args.input_channels.upper()} images of {size}, {resize}"
        f"{precision})"
    )
    return message, loaded.recipe.notes


@tool_main(PROG)
def main(args=None):
    """Entry point of retinanet-convert-model; returns the exit status."""
    args = parse_args(sys.argv[1:] if args is None else args)
    set_verbosity(args)
    from keras_retinanet.export import ExportError, format_from_path

    try:
        format = format_from_path(args.model_out, args.format)
        calibration = check_inputs(args, format)
        import_tensorflow(args.verbose)
        message, notes = convert(args, format, calibration)
    except (ToolError, ExportError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    print_notes(PROG, notes)
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
