"""AP50 of a trained detector's quantised exports next to its float ones, on its validation set.

Exports the snapshot in every asked format and precision with ``keras_retinanet.export``
(int8 calibrated on ``--calibration``, a few dozen training images, never the validation
set), then evaluates each file as ``retinanet-evaluate`` does (``inference.load_detector``
and ``utils.eval.evaluate``, VOC all-point AP at IoU 0.5) and prints one table: the mAP50,
its difference to the Keras fp32 model's and to the same format's fp32 export, the
export time and the file size.

    python bench/quantized_accuracy.py SNAPSHOT --annotations val.csv --classes classes.csv \
        --calibration train.csv [--calibration-images 100] [--input-size H W] \
        [--formats keras onnx:fp32 onnx:int8 tflite:fp32 tflite:fp16 tflite:int8] [--keep DIR]

``--input-size`` is the TFLite input (default: the first validation image's size).
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_FORMATS = ("keras", "onnx:fp32", "onnx:int8", "tflite:fp32", "tflite:fp16", "tflite:int8")
FILE_NAMES = {"onnx": "model_{}.onnx", "tflite": "model_{}.tflite", "saved_model": "saved_model_{}"}


def _size_mb(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files) / 1e6
    return os.path.getsize(path) / 1e6


def _map50(path, generator):
    from keras_retinanet.inference import load_detector
    from keras_retinanet.utils.eval import evaluate, mean_average_precision

    detector = load_detector(path)
    start = time.perf_counter()
    average_precisions, _ = evaluate(generator, detector, progress=False)
    return mean_average_precision(average_precisions), time.perf_counter() - start


def parse_args(args):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("snapshot", help="training snapshot (.keras) written by retinanet-train")
    parser.add_argument("--annotations", required=True, help="validation CSV")
    parser.add_argument("--classes", required=True, help="classes CSV")
    parser.add_argument("--calibration", required=True, help="calibration data (CSV, COCO, VOC or a folder of images)")
    parser.add_argument("--calibration-images", type=int, default=100)
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="TFLite input size")
    parser.add_argument("--formats", nargs="+", default=list(DEFAULT_FORMATS), help="format:precision items")
    parser.add_argument("--keep", help="write the exports into this folder (default: a temporary one)")
    return parser.parse_args(args)


def main(args=None):
    args = parse_args(sys.argv[1:] if args is None else args)
    from keras_retinanet import export
    from keras_retinanet.calibration import calibration_images
    from keras_retinanet.inference import open_keras_model
    from keras_retinanet.preprocessing.csv_generator import CSVGenerator

    generator = CSVGenerator(args.annotations, args.classes, shuffle_groups=False)
    input_size = tuple(args.input_size) if args.input_size else tuple(generator.load_image(0).shape[:2])
    loaded = open_keras_model(args.snapshot)
    spec = loaded.spec
    folder = args.keep or tempfile.mkdtemp(prefix="quantized_accuracy_")
    os.makedirs(folder, exist_ok=True)
    calibration = calibration_images(args.calibration, args.calibration_images)
    print(
        f"{args.snapshot}: {spec.backbone}, {generator.size()} validation images ({args.annotations}), "
        f"int8 calibrated on {len(calibration)} images of {args.calibration}; TFLite input {input_size[0]}x{input_size[1]}",
        flush=True,
    )
    rows = []
    try:
        for item in args.formats:
            format, _, precision = item.partition(":")
            precision = precision or "fp32"
            start = time.perf_counter()
            if format == "keras":
                path = args.snapshot
            else:
                path = os.path.join(folder, FILE_NAMES[format].format(precision))
                export.export_model(
                    loaded.model, path, format=format, preprocess_mode=spec.preprocess_mode,
                    input_size=input_size if format == "tflite" else None, spec=spec,
                    quantize=None if precision == "fp32" else precision,
                    calibration=calibration if precision == "int8" else None,
                    image_min_side=spec.image_min_side, image_max_side=spec.image_max_side, no_resize=spec.no_resize,
                )  # fmt: skip
            export_s = time.perf_counter() - start
            map50, eval_s = _map50(path, generator)
            rows.append((format, precision, map50, export_s, _size_mb(path), eval_s))
            print(f"  {format:12s} {precision:5s} mAP50 {map50:.4f}  (export {export_s:5.1f} s, eval {eval_s:5.1f} s)", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)

    reference = {(format, precision): map50 for format, precision, map50, *_ in rows}
    keras_map = reference.get(("keras", "fp32"))
    print("\n| format | precision | mAP50 | vs Keras fp32 | vs same format fp32 | file MB | export s |")
    print("|---|---|---|---|---|---|---|")
    for format, precision, map50, export_s, size, _ in rows:
        versus_keras = "" if keras_map is None else f"{100 * (map50 - keras_map):+.2f} pt"
        same = reference.get((format, "fp32"))
        versus_same = "" if same is None or precision == "fp32" else f"{100 * (map50 - same):+.2f} pt"
        print(f"| {format} | {precision} | {map50:.4f} | {versus_keras} | {versus_same} | {size:.1f} | {export_s:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
