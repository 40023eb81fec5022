"""Inference latency and peak memory of the ResNet-50 RetinaNet, against torchvision's.

Each side runs in its own worker process (so its peak RSS is its own): ours with this
interpreter, torchvision's ``retinanet_resnet50_fpn`` with ``--torch-python`` (default
/work/venv-torch/bin/python) when that interpreter can import torch and torchvision.
Same input size, same number of classes, 2 threads on both sides, random weights (no
download). The workers are started one after the other (build + ``--warmup`` runs),
then timed in interleaved rounds -- one image per side per round, the order rotating --
so that both sides see the same background load on a shared machine. Prints median, min
and max latency, peak RSS, and the ratio ours / torchvision (median of the per-round
ratios).

Our side runs the inference model of ``models.convert_model`` (detections filtered in the
graph); ``--modes`` picks how it is executed:

- ``predict``: ``model.predict_on_batch`` (Keras' tf.function with reduce_retracing);
- ``function``: ``tf.function`` with a fixed input signature (B, H, W, 3) of any size;
- ``xla``: ``tf.function(jit_compile=True)``, compiled for each input shape;
- ``folded``: ``predict_on_batch`` of ``convert_model(..., fold_batch_norm=True)``
  (batch normalisation folded into the convolutions), the recommended path for prediction;
- ``folded-xla``: both.

With ``--formats``, the same (folded) model is also exported by ``keras_retinanet.export``
and run end to end from a uint8 image (preprocessing, resize -- a no-op at this size --
and NMS in the graph), each in its own worker (``all``: every one of them):

- ``saved_model``: the SavedModel's ``serving_default`` signature in TensorFlow;
- ``onnx``, ``onnx-int8``: ONNX Runtime, 2 intra-op threads (needs the ``onnx`` extra:
  tf2onnx, onnxruntime); int8 is its static QDQ quantisation (``export.quantize_onnx``);
- ``tflite``, ``tflite-fp16``, ``tflite-int8``: the TFLite interpreter (LiteRT's when the
  ``tflite`` extra is installed, else ``tf.lite``), 2 threads, input size fixed to
  --height x --width; fp16 weights, or full-integer int8.

The int8 graphs are calibrated on ``--calibration-images`` random images of the input size
(the weights are random too: the figures are speed, not accuracy; for accuracy see
``bench/quantized_accuracy.py``). The export runs in a child process (the runtime's peak
RSS is its own); the export time is printed. The last table has every side: latency
median / min / max, peak RSS, and the ratios to our first mode (Keras fp32) and to
torchvision fp32 (medians of the per-round ratios).

Usage::

    python bench/inference.py [--runs 5] [--warmup 1] [--height 800] [--width 1333]
                              [--classes 80] [--modes folded predict] [--no-peer]
                              [--formats all | saved_model onnx onnx-int8 tflite tflite-fp16 tflite-int8]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_TORCH_PYTHON = "/work/venv-torch/bin/python"
NUM_THREADS = 2
MODES = ("predict", "function", "xla", "folded", "folded-xla")
FORMATS = ("saved_model", "onnx", "onnx-int8", "tflite", "tflite-fp16", "tflite-int8")
EXPORT_FILE_NAMES = {"saved_model": "saved_model", "onnx": "model.onnx", "tflite": "model.tflite"}
DEFAULT_CALIBRATION_IMAGES = 4


def _format_precision(name):
    """('onnx', 'int8') of 'onnx-int8'; ('tflite', 'fp32') of 'tflite'."""
    format, _, precision = name.partition("-")
    return format, precision or "fp32"


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _serve(run, warmup, info):
    """Worker loop: warm up, then one timed run per 'run' line on stdin; JSON lines out."""
    start = time.perf_counter()
    for _ in range(warmup):
        run()
    print(json.dumps(dict(info, ready=True, warmup_s=time.perf_counter() - start)), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        start = time.perf_counter()
        run()
        print(json.dumps({"time_s": time.perf_counter() - start}), flush=True)
    print(json.dumps({"peak_rss_mb": _peak_rss_mb()}), flush=True)


def worker_ours(args):
    """Build the ResNet-50 inference model and serve timed runs in one execution mode."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, REPO)
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(NUM_THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(NUM_THREADS)
    from keras_retinanet import models

    backbone = models.backbone("resnet50")
    model = models.convert_model(
        backbone.retinanet(num_classes=args.classes), fold_batch_norm=args.mode.startswith("folded")
    )
    if args.mode in ("predict", "folded"):
        predict = model.predict_on_batch
    elif args.mode == "function":
        spec = tf.TensorSpec((None, None, None, 3), tf.float32)
        predict = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    elif args.mode in ("xla", "folded-xla"):
        predict = tf.function(lambda x: model(x, training=False), jit_compile=True)
    else:
        raise ValueError(f"unknown mode {args.mode!r}; expected one of {MODES}")

    image = np.random.default_rng(0).integers(0, 256, size=(args.height, args.width, 3), dtype=np.uint8)

    def run():
        # preprocessing is part of the latency, as torchvision normalises inside its model
        outputs = predict(backbone.preprocess_image(image)[None])
        return [np.asarray(o) for o in outputs]

    _serve(run, args.warmup, {"side": "ours", "mode": args.mode})


def worker_export_file(args):
    """Build the folded ResNet-50 inference model and export it to ``args.output``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, REPO)
    from keras_retinanet import export, models

    import numpy as np

    format, precision = _format_precision(args.mode)
    calibration = None
    if precision == "int8":
        rng = np.random.default_rng(1)
        calibration = [
            rng.integers(0, 256, size=(args.height, args.width, 3), dtype=np.uint8) for _ in range(args.calibration_images)
        ]
    float_onnx = _export_path(args, "onnx") if args.exports else None
    if format == "onnx" and precision == "int8" and float_onnx and os.path.exists(float_onnx):
        # what export_onnx does after tf2onnx, from the float export already there (this process
        # holds no TensorFlow model: ONNX Runtime's calibration at 800x1333 needs ~10 GB)
        import onnx

        from keras_retinanet.utils.files import write_atomically

        proto = export.quantize_onnx(onnx.load(float_onnx), calibration)
        write_atomically(args.output, lambda target: onnx.save(proto, target))
        return
    backbone = models.backbone("resnet50")
    model = models.convert_model(backbone.retinanet(num_classes=args.classes), fold_batch_norm=True)
    export.export_model(
        model, args.output, preprocess_mode=backbone.preprocess_mode,
        input_size=(args.height, args.width) if format == "tflite" else None,
        image_min_side=min(args.height, args.width), image_max_side=max(args.height, args.width),
        quantize=None if precision == "fp32" else precision, calibration=calibration,
    )  # fmt: skip


def worker_export(args):
    """Export the model in one format (in a child process), then serve timed runs of the export.

    The export runs in its own process so that this worker's peak RSS is the runtime's.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, REPO)
    import shutil
    import tempfile

    import numpy as np

    folder = args.exports or tempfile.mkdtemp(prefix="bench_export_")
    format, precision = _format_precision(args.mode)
    try:
        path = _export_path(args, args.mode) if args.exports else os.path.join(folder, EXPORT_FILE_NAMES[format])
        start = time.perf_counter()
        command = [
            sys.executable, os.path.abspath(__file__), "--worker", "export-file", "--mode", args.mode,
            "--output", path, "--height", str(args.height), "--width", str(args.width), "--classes", str(args.classes),
            "--calibration-images", str(args.calibration_images),
        ]  # fmt: skip
        export_s = None
        if not os.path.exists(path):
            completed = subprocess.run(command, capture_output=True, text=True, check=False)
            if completed.returncode != 0:
                raise RuntimeError(f"export to {args.mode} failed:\n{completed.stderr[-3000:]}")
            export_s = time.perf_counter() - start

        from keras_retinanet.inference import OnnxRunner, SavedModelRunner, TFLiteRunner

        runtime = ""
        if format == "saved_model":
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(NUM_THREADS)
            tf.config.threading.set_inter_op_parallelism_threads(NUM_THREADS)
            runner = SavedModelRunner(path)
        elif format == "onnx":
            import onnxruntime

            runner = OnnxRunner(path, num_threads=NUM_THREADS)
            runtime = f"onnxruntime {onnxruntime.__version__}"
        else:
            runner = TFLiteRunner(path, num_threads=NUM_THREADS)
            runtime = runner.runtime
        image = np.random.default_rng(0).integers(0, 256, size=(1, args.height, args.width, 3), dtype=np.uint8)
        info = {"side": "export", "mode": args.mode, "export_s": export_s, "runtime": runtime}
        _serve(lambda: runner(image), args.warmup, info)
    finally:
        if not args.exports:
            shutil.rmtree(folder, ignore_errors=True)


def _export_path(args, name):
    """The --exports file of format-precision ``name``: one per size and classes, reused by later runs."""
    format, precision = _format_precision(name)
    file_name, suffix = os.path.splitext(EXPORT_FILE_NAMES[format])
    return os.path.join(args.exports, f"{file_name}_{precision}_{args.height}x{args.width}_{args.classes}{suffix}")


def _format_available(name):
    """None if the format can be benchmarked here, else why not."""
    import importlib.util

    if name.startswith("onnx"):
        missing = [m for m in ("tf2onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
        if missing:
            return f"{' and '.join(missing)} not installed (pip install '.[onnx]')"
    return None


def worker_torch(args):
    """Build torchvision's retinanet_resnet50_fpn and serve timed runs."""
    import torch
    import torchvision

    torch.set_num_threads(NUM_THREADS)
    # min_size / max_size equal to the input: torchvision's transform keeps the image size
    # (it would rescale anything to 800 px otherwise); it still pads to a multiple of 32.
    model = torchvision.models.detection.retinanet_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=args.classes,
        min_size=min(args.height, args.width),
        max_size=max(args.height, args.width),
    ).eval()
    torch.manual_seed(0)
    image = torch.rand(3, args.height, args.width)

    def run():
        with torch.inference_mode():
            return model([image])

    _serve(run, args.warmup, {"side": "torchvision", "mode": f"torchvision {torchvision.__version__}"})


class _Worker:
    def __init__(self, python, side, args, mode=None):
        command = [
            python, os.path.abspath(__file__), "--worker", side, "--warmup", str(args.warmup),
            "--height", str(args.height), "--width", str(args.width), "--classes", str(args.classes),
            "--calibration-images", str(args.calibration_images),
        ]
        if args.exports:
            command += ["--exports", args.exports]
        if mode:
            command += ["--mode", mode]
        env = dict(os.environ, OMP_NUM_THREADS=str(NUM_THREADS))
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.info = self._read()
        if side == "torch":
            self.label = f"{self.info['mode']} fp32"
        elif side == "export":
            format, precision = _format_precision(mode)
            self.label = f"{format} {precision}" + (f" ({self.info['runtime']})" if self.info.get("runtime") else "")
        else:
            self.label = f"keras [{mode}] fp32"
        self.side = side
        self.times = []

    def _read(self):
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker failed:\n{self.process.stderr.read()[-3000:]}")
        return json.loads(line)

    def run(self):
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        self.times.append(self._read()["time_s"])
        return self.times[-1]

    def close(self):
        self.process.stdin.write("quit\n")
        self.process.stdin.flush()
        self.peak_rss_mb = self._read()["peak_rss_mb"]
        self.process.wait()

    def summary(self):
        t = self.times
        export = ""
        if self.side == "export":
            seconds = self.info.get("export_s")
            export = f"  (export {seconds:.1f} s)" if seconds is not None else "  (export reused)"
        return (
            f"median {statistics.median(t):6.2f} s  min {min(t):6.2f}  max {max(t):6.2f}  "
            f"(build + warm-up {self.info['warmup_s']:5.1f} s)  peak RSS {self.peak_rss_mb:6.0f} MB{export}"
        )


def _torch_available(python):
    if not python or not os.path.exists(python):
        return False
    probe = subprocess.run([python, "-c", "import torch, torchvision"], capture_output=True)
    return probe.returncode == 0


def _load():
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def parse_args(args):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed rounds (one run per side each)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per side first")
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["folded"], help="our execution modes")
    parser.add_argument("--torch-python", default=DEFAULT_TORCH_PYTHON, help="interpreter with torch + torchvision")
    parser.add_argument("--no-peer", action="store_true", help="skip torchvision")
    parser.add_argument("--formats", nargs="+", choices=FORMATS + ("all",), default=[],
                        help="also time the exported end-to-end graphs in these formats (all: every one)")
    parser.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES,
                        help="random images calibrating the int8 exports")
    parser.add_argument("--exports", metavar="DIR",
                        help="keep the exported files in DIR and reuse those there (default: export afresh)")
    parser.add_argument("--export-only", action="store_true", help="write the --exports files, time nothing")
    parser.add_argument("--worker", choices=("ours", "export", "export-file", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="predict", help=argparse.SUPPRESS)
    return parser.parse_args(args)


def main(args=None):
    args = parse_args(sys.argv[1:] if args is None else args)
    if "all" in args.formats:
        args.formats = list(FORMATS)
    if args.worker == "ours":
        return worker_ours(args)
    if args.worker == "export":
        return worker_export(args)
    if args.worker == "export-file":
        return worker_export_file(args)
    if args.worker == "torch":
        return worker_torch(args)

    print(
        f"RetinaNet ResNet-50 FPN inference, {args.height}x{args.width}, {args.classes} classes, "
        f"{NUM_THREADS} threads, {args.runs} interleaved rounds after {args.warmup} warm-up run(s); "
        f"load average before: {_load()} on {os.cpu_count()} CPUs",
        flush=True,
    )
    if args.export_only:
        if not args.exports:
            raise SystemExit("--export-only needs --exports DIR")
        os.makedirs(args.exports, exist_ok=True)
        for name in args.formats:  # each in its own process (memory), float ONNX before int8
            path = _export_path(args, name)
            if os.path.exists(path):
                continue
            start = time.perf_counter()
            command = [
                sys.executable, os.path.abspath(__file__), "--worker", "export-file", "--mode", name, "--output", path,
                "--height", str(args.height), "--width", str(args.width), "--classes", str(args.classes),
                "--calibration-images", str(args.calibration_images), "--exports", args.exports,
            ]  # fmt: skip
            completed = subprocess.run(command, capture_output=True, text=True, check=False)
            if completed.returncode != 0:
                print(f"  {name}: export failed:\n{completed.stderr[-2000:]}", flush=True)
                continue
            print(f"  {name}: exported to {path} in {time.perf_counter() - start:.0f} s", flush=True)
        return 0
    workers = [_Worker(sys.executable, "ours", args, mode) for mode in args.modes]
    for name in args.formats:
        missing = _format_available(name)
        if missing:
            print(f"  {name}: not available ({missing})")
        else:
            workers.append(_Worker(sys.executable, "export", args, name))
    peer = None
    if not args.no_peer:
        if _torch_available(args.torch_python):
            peer = _Worker(args.torch_python, "torch", args)
            workers.append(peer)
        else:
            print(f"  torchvision: not available ({args.torch_python} cannot import torch, torchvision)")

    for round_index in range(args.runs):
        shift = round_index % len(workers)
        for worker in workers[shift:] + workers[:shift]:
            worker.run()
    for worker in workers:
        worker.close()
        print(f"  {worker.label:40s} {worker.summary()}")

    keras_worker = workers[0] if args.modes else None

    def ratio(worker, other):
        if other is None or other is worker:
            return ""
        ratios = [ours / theirs for ours, theirs in zip(worker.times, other.times)]
        return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}..{max(ratios):.2f})"

    print(
        f"\n| {args.height}x{args.width}, {NUM_THREADS} threads | median s | min s | max s | peak RSS MB "
        f"| vs Keras fp32 | vs torchvision fp32 |"
    )
    print("|---|---|---|---|---|---|---|")
    for worker in workers:
        t = worker.times
        print(
            f"| {worker.label} | {statistics.median(t):.2f} | {min(t):.2f} | {max(t):.2f} | {worker.peak_rss_mb:.0f} "
            f"| {ratio(worker, keras_worker)} | {ratio(worker, peer)} |"
        )
    print(f"load average after: {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
