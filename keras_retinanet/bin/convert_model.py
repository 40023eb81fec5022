"""retinanet-convert-model: turn a training snapshot into an inference model or an exported graph.

    retinanet-convert-model snapshots/resnet50_csv_10.keras model.keras
    retinanet-convert-model snapshots/resnet50_csv_10.keras exported/retinanet      # SavedModel
    retinanet-convert-model snap.keras model.tflite --backbone mobilenet224_1.0 --input-size 480 640
    retinanet-convert-model snap.keras model.onnx --image-min-side 600 --image-max-side 1000

The format follows MODEL_OUT's suffix (or --format). ``.keras`` is the inference model
(preprocessed, resized images in; boxes in its input's pixels). SavedModel, TFLite and
ONNX hold an end-to-end graph: original BGR images in (uint8 or float32), backbone
preprocessing and resize to --image-min-side/--image-max-side inside, NMS inside, boxes
out in the original image's pixels. See ``keras_retinanet.export``.
"""
import argparse
import os
import sys

from keras_retinanet.bin import ToolError, first_line

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
Every format keeps NMS and the score threshold in the graph; outputs are padded with -1
up to --max-detections."""


def parse_args(args):
    """Parse the command line (a list of strings)."""
    from keras_retinanet.export import CHANNEL_ORDERS, DEFAULT_ONNX_OPSET, FORMATS, INPUT_DTYPES

    parser = argparse.ArgumentParser(
        prog="retinanet-convert-model",
        description="Convert a training snapshot into an inference model (.keras) or an exported "
        "end-to-end graph (SavedModel, TFLite, ONNX) with NMS inside.",
        epilog=FORMAT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model_in", help="training snapshot (.keras) written by retinanet-train")
    parser.add_argument("model_out", help="output: .keras, .tflite, .onnx, or a directory name (SavedModel)")
    parser.add_argument("--format", choices=FORMATS, help="output format (default: from MODEL_OUT's suffix)")
    parser.add_argument("--backbone", default="resnet50",
                        help="backbone of the model: sets the exported graph's preprocessing (default resnet50)")
    parser.add_argument("--no-nms", dest="nms", action="store_false", help="no non-maximum suppression")
    parser.add_argument("--no-class-specific-filter", dest="class_specific_filter", action="store_false",
                        help="keep only each anchor's best class; class-agnostic NMS")
    parser.add_argument("--no-fold-batch-norm", dest="fold_batch_norm", action="store_false",
                        help="keep the backbone's batch normalisation layers (by default they are folded into "
                             "the convolutions: same detections, faster)")
    parser.add_argument("--config", help="config .ini with the anchor parameters / pyramid levels of training")
    parser.add_argument("--nms-threshold", type=float, default=0.5,
                        help="IoU above which NMS drops the lower-scoring box (default 0.5)")
    parser.add_argument("--score-threshold", type=float, default=0.05,
                        help="drop detections scoring at most this (default 0.05)")
    parser.add_argument("--max-detections", type=int, default=300, help="detections per image (default 300)")
    graph = parser.add_argument_group("exported graphs (SavedModel, TFLite, ONNX)")
    graph.add_argument("--image-min-side", type=int, default=800,
                       help="resize images so the smallest side is this long (default 800)")
    graph.add_argument("--image-max-side", type=int, default=1333,
                       help="... unless the largest side then exceeds this (default 1333)")
    graph.add_argument("--no-resize", action="store_true", help="run on images at their size")
    graph.add_argument("--input-channels", choices=CHANNEL_ORDERS, default="bgr",
                       help="channel order of the input images (default bgr, as cv2.imread)")
    graph.add_argument("--input-dtype", choices=INPUT_DTYPES, default="uint8",
                       help="TFLite and ONNX input type (default uint8; SavedModel has both signatures)")
    graph.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                       help="TFLite only, required: the fixed size of the images the model takes")
    graph.add_argument("--opset", type=int, default=DEFAULT_ONNX_OPSET,
                       help=f"ONNX opset (default {DEFAULT_ONNX_OPSET})")
    parsed = parser.parse_args(args)
    if parsed.max_detections < 1:
        parser.error(f"--max-detections must be >= 1, got {parsed.max_detections}")
    if not 0 < parsed.nms_threshold <= 1:
        parser.error(f"--nms-threshold must be in (0, 1], got {parsed.nms_threshold}")
    if not 0 < parsed.image_min_side <= parsed.image_max_side:
        parser.error("--image-min-side must be > 0 and <= --image-max-side")
    if parsed.input_size is not None and min(parsed.input_size) < 1:
        parser.error(f"--input-size must be positive, got {parsed.input_size}")
    return parsed


def check_inputs(args, format):
    """Raise ToolError for inputs that cannot work, before loading anything heavy."""
    if not os.path.isfile(args.model_in):
        raise ToolError(f"model file not found: {args.model_in}")
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


def convert(args, format):
    """Load, convert and write the model; returns a one-line description of the output."""
    from keras_retinanet import export, models
    from keras_retinanet.inference import ModelLoadError, load_inference_model

    try:
        backbone = models.backbone(args.backbone)
    except ValueError as error:
        raise ToolError(str(error)) from None
    try:
        model, _ = load_inference_model(
            args.model_in,
            backbone=args.backbone,
            training=True,
            config=args.config,
            nms=args.nms,
            class_specific_filter=args.class_specific_filter,
            fold_batch_norm=args.fold_batch_norm,
            nms_threshold=args.nms_threshold,
            score_threshold=args.score_threshold,
            max_detections=args.max_detections,
        )
    except ModelLoadError as error:
        raise ToolError(str(error)) from None
    except (ValueError, KeyError) as error:  # config file or anchor parameters that do not fit the model
        raise ToolError(f"cannot convert {args.model_in}: {first_line(error)}") from None

    graph_options = {
        "image_min_side": args.image_min_side,
        "image_max_side": args.image_max_side,
        "no_resize": args.no_resize,
        "channel_order": args.input_channels,
    }
    try:
        export.export_model(
            model,
            args.model_out,
            format=format,
            preprocess_mode=backbone.preprocess_mode,
            input_size=args.input_size,
            input_dtype=args.input_dtype,
            opset=args.opset,
            **graph_options,
        )
    except export.ExportError as error:
        raise ToolError(str(error)) from None
    if format == "keras":
        return f"inference model written to {args.model_out}"
    size = "x".join(str(s) for s in args.input_size) if format == "tflite" else "any size"
    resize = "no resize" if args.no_resize else f"resized to min side {args.image_min_side}, max {args.image_max_side}"
    return f"{format} model written to {args.model_out} ({args.input_channels.upper()} images of {size}, {resize})"


def main(args=None):
    """Entry point of retinanet-convert-model; returns the exit status."""
    args = parse_args(sys.argv[1:] if args is None else args)
    from keras_retinanet.export import ExportError, format_from_path

    try:
        format = format_from_path(args.model_out, args.format)
        check_inputs(args, format)
        message = convert(args, format)
    except (ToolError, ExportError) as error:
        print(f"retinanet-convert-model: error: {error}", file=sys.stderr)
        return 1
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
