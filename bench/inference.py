"""Inference latency and peak memory of the ResNet-50 RetinaNet, against torchvision's.

Each side runs in a fresh subprocess (so its peak RSS is its own): ours with this
interpreter, torchvision's ``retinanet_resnet50_fpn`` with ``--torch-python`` (default
/work/venv-torch/bin/python) when that interpreter can import torch and torchvision.
Same input size, same number of classes, same thread count (2) on both sides; random
weights (no download). Prints the median, min and max latency over ``--runs`` runs after
``--warmup`` runs, the peak RSS, and the ratio ours / torchvision.

Our side runs the inference model of ``models.convert_model`` (detections filtered in the
graph) through ``model.predict_on_batch`` -- the production path -- and, with
``--modes``, through other execution modes for comparison:

- ``predict``: ``model.predict_on_batch`` (Keras' tf.function with reduce_retracing);
- ``function``: ``tf.function`` with a fixed input signature (B, H, W, 3) of any size;
- ``xla``: ``tf.function(jit_compile=True)``, compiled for each input shape.

Usage::

    python bench/inference.py [--runs 5] [--warmup 1] [--height 800] [--width 1333]
                              [--classes 80] [--modes predict function xla] [--no-peer]
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
MODES = ("predict", "function", "xla")


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _time_runs(run, warmup, runs):
    start = time.perf_counter()
    for _ in range(warmup):
        run()
    first = time.perf_counter() - start
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return {"warmup_s": first, "times_s": times}


def worker_ours(args):
    """Build the ResNet-50 inference model and time one execution mode; prints a JSON line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, REPO)
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(NUM_THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(NUM_THREADS)
    from keras_retinanet import models

    backbone = models.backbone("resnet50")
    model = models.convert_model(backbone.retinanet(num_classes=args.classes))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(args.height, args.width, 3), dtype=np.uint8)

    if args.mode == "predict":
        predict = model.predict_on_batch
    elif args.mode == "function":
        spec = tf.TensorSpec((None, None, None, 3), tf.float32)
        predict = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    elif args.mode == "xla":
        predict = tf.function(lambda x: model(x, training=False), jit_compile=True)
    else:
        raise ValueError(f"unknown mode {args.mode!r}; expected one of {MODES}")

    def run():
        # preprocessing is part of the latency, as torchvision normalises inside its model
        batch = backbone.preprocess_image(image)[None]
        outputs = predict(batch)
        return [np.asarray(o) for o in outputs]

    result = _time_runs(run, args.warmup, args.runs)
    boxes, scores, labels = run()
    result.update(
        side="ours", mode=args.mode, peak_rss_mb=_peak_rss_mb(), detections=int((scores > 0).sum())
    )
    print(json.dumps(result))


def worker_torch(args):
    """Time torchvision's retinanet_resnet50_fpn; prints a JSON line."""
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

    result = _time_runs(run, args.warmup, args.runs)
    result.update(
        side="torchvision", mode="eval", peak_rss_mb=_peak_rss_mb(), versions=[torch.__version__, torchvision.__version__]
    )
    print(json.dumps(result))


def _run_worker(python, side, args, mode=None):
    command = [
        python, os.path.abspath(__file__), "--worker", side, "--runs", str(args.runs), "--warmup", str(args.warmup),
        "--height", str(args.height), "--width", str(args.width), "--classes", str(args.classes),
    ]
    if mode:
        command += ["--mode", mode]
    env = dict(os.environ, OMP_NUM_THREADS=str(NUM_THREADS))
    completed = subprocess.run(command, capture_output=True, text=True, env=env)
    if completed.returncode != 0:
        raise RuntimeError(f"{side} worker failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _torch_available(python):
    if not python or not os.path.exists(python):
        return False
    probe = subprocess.run([python, "-c", "import torch, torchvision"], capture_output=True)
    return probe.returncode == 0


def _summary(result):
    times = result["times_s"]
    return (
        f"median {statistics.median(times):6.2f} s  min {min(times):6.2f}  max {max(times):6.2f}  "
        f"(first call {result['warmup_s']:.1f} s)  peak RSS {result['peak_rss_mb']:6.0f} MB"
    )


def parse_args(args):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per side")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["predict"], help="our execution modes")
    parser.add_argument("--torch-python", default=DEFAULT_TORCH_PYTHON, help="interpreter with torch + torchvision")
    parser.add_argument("--no-peer", action="store_true", help="skip torchvision")
    parser.add_argument("--worker", choices=("ours", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="predict", help=argparse.SUPPRESS)
    return parser.parse_args(args)


def main(args=None):
    args = parse_args(sys.argv[1:] if args is None else args)
    if args.worker == "ours":
        return worker_ours(args)
    if args.worker == "torch":
        return worker_torch(args)

    load = os.getloadavg()
    print(
        f"RetinaNet ResNet-50 FPN inference, {args.height}x{args.width}, {args.classes} classes, "
        f"{NUM_THREADS} threads, {args.runs} runs after {args.warmup} warm-up; "
        f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs"
    )
    ours = {}
    for mode in args.modes:
        ours[mode] = _run_worker(sys.executable, "ours", args, mode)
        print(f"  keras-retinanet [{mode:8s}] {_summary(ours[mode])}", flush=True)

    if args.no_peer:
        return 0
    if not _torch_available(args.torch_python):
        print(f"  torchvision: not available ({args.torch_python} cannot import torch, torchvision)")
        return 0
    peer = _run_worker(args.torch_python, "torch", args)
    print(f"  torchvision {peer['versions'][1]:>12s} {_summary(peer)}")
    peer_median = statistics.median(peer["times_s"])
    for mode, result in ours.items():
        ratio = statistics.median(result["times_s"]) / peer_median
        memory = result["peak_rss_mb"] / peer["peak_rss_mb"]
        print(f"  ratio ours [{mode}] / torchvision: latency {ratio:.2f}x, peak RSS {memory:.2f}x")
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
