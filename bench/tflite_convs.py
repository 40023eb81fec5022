"""Why TFLite fp32 is slower than Keras: one convolution at a time, Keras against LiteRT.

The end-to-end figures of ``bench/inference.py --formats tflite`` put TFLite fp32 a few
percent behind Keras on the ResNet-50 RetinaNet at 800x1333. This script separates the
convolutions: for each kind of convolution that network runs (same kernel, stride,
channels and feature-map size), a one-layer Keras model with random weights is timed with
``tf.function`` (TensorFlow's oneDNN kernels) and, converted to TFLite, with the LiteRT
interpreter (its XNNPACK delegate, the default), both with 2 threads, in one process, in
interleaved rounds. It prints, per convolution, the median milliseconds of each side, the
ratio TFLite / Keras, and how many times the network runs that convolution, so that the
weighted sum says where the whole network's gap comes from.

Usage::

    python bench/tflite_convs.py [--runs 7] [--scale 1.0] [--only NAME ...]

``--scale`` shrinks the feature maps (0.5: a 400x667 image) for a quicker run.
"""
import argparse
import os
import statistics
import sys
import tempfile

from _timing import interleaved_seconds

NUM_THREADS = 2

# name, (H, W) of the input feature map at 800x1333, input channels, output channels,
# kernel, stride, times the ResNet-50 RetinaNet runs it per image
CONVS = (
    ("stem 7x7/2 3->64", (800, 1344), 3, 64, 7, 2, 1),
    ("res2 1x1 64->256", (200, 336), 64, 256, 1, 1, 4),
    ("res2 3x3 64->64", (200, 336), 64, 64, 3, 1, 3),
    ("res3 3x3 128->128", (100, 168), 128, 128, 3, 1, 4),
    ("res4 3x3 256->256", (50, 84), 256, 256, 3, 1, 6),
    ("res5 3x3 512->512", (25, 42), 512, 512, 3, 1, 3),
    ("res5 1x1 1024->2048", (25, 42), 1024, 2048, 1, 1, 1),
    ("head 3x3 256->256 @P3", (100, 168), 256, 256, 3, 1, 8),
    ("head cls 3x3 256->720 @P3", (100, 168), 256, 720, 3, 1, 1),
    ("head 3x3 256->256 @P4", (50, 84), 256, 256, 3, 1, 8),
)


def parse_args(args):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed rounds per convolution")
    parser.add_argument("--scale", type=float, default=1.0, help="feature-map scale (1.0: 800x1333)")
    parser.add_argument("--only", nargs="+", help="names (substrings) of the convolutions to run")
    return parser.parse_args(args)


def _conv_model(keras, shape, channels, filters, kernel, stride):
    inputs = keras.Input(shape=(*shape, channels), batch_size=1)
    outputs = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same")(inputs)
    return keras.Model(inputs, outputs)


def _tflite_bytes(tf, model, folder):
    # through a SavedModel, as retinanet-convert-model does: converting a concrete function of
    # the Keras model keeps its weights as uninitialised resource variables
    saved_model_dir = os.path.join(folder, "saved_model")
    model.export(saved_model_dir, verbose=False)
    return tf.lite.TFLiteConverter.from_saved_model(saved_model_dir).convert()


def _median_ms(times):
    return 1000.0 * statistics.median(times)


def main(args=None):
    args = parse_args(sys.argv[1:] if args is None else args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(NUM_THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    from keras_retinanet.inference import tflite_runtime

    Interpreter, runtime = tflite_runtime()
    print(f"TensorFlow {tf.__version__} against {runtime}, {NUM_THREADS} threads, {args.runs} rounds")
    rows = []
    for name, (height, width), channels, filters, kernel, stride, count in CONVS:
        if args.only and not any(part in name for part in args.only):
            continue
        shape = (max(1, round(height * args.scale)), max(1, round(width * args.scale)))
        model = _conv_model(keras, shape, channels, filters, kernel, stride)
        call = tf.function(lambda x, model=model: model(x, training=False))
        values = np.random.default_rng(0).normal(size=(1, *shape, channels)).astype("float32")
        tensor = tf.constant(values)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "conv.tflite")
            with open(path, "wb") as file:
                file.write(_tflite_bytes(tf, model, folder))
            interpreter = Interpreter(model_path=path, num_threads=NUM_THREADS)
        interpreter.allocate_tensors()
        input_index = interpreter.get_input_details()[0]["index"]
        output_index = interpreter.get_output_details()[0]["index"]
        interpreter.set_tensor(input_index, values)

        def run_keras():
            call(tensor).numpy()

        def run_tflite():
            # no get_tensor: it copies the output (69 MB for res2's 1x1), which .numpy() on
            # TensorFlow's CPU tensor does not, and which no layer inside a network pays
            interpreter.invoke()

        for run in (run_keras, run_tflite):  # warm-up: tracing, XNNPACK weight packing
            run()
            run()
        seconds = interleaved_seconds({"keras": run_keras, "tflite": run_tflite}, args.runs)
        keras_times, tflite_times = seconds["keras"], seconds["tflite"]
        ratios = [tflite / keras for tflite, keras in zip(tflite_times, keras_times)]
        expected = call(tensor).numpy()
        # relative to the outputs' scale: the two runtimes sum in different orders
        check = float(np.max(np.abs(expected - interpreter.get_tensor(output_index))) / np.max(np.abs(expected)))
        rows.append((name, shape, count, _median_ms(keras_times), _median_ms(tflite_times),
                     statistics.median(ratios), check))  # fmt: skip
        print(f"  {name}: done", flush=True)

    print()
    print(f"| convolution | input | per image | Keras ms | TFLite ms | TFLite / Keras | max rel. diff |")
    print("|---|---|---:|---:|---:|---:|---:|")
    keras_total = tflite_total = 0.0
    for name, (height, width), count, keras_ms, tflite_ms, ratio, check in rows:
        keras_total += count * keras_ms
        tflite_total += count * tflite_ms
        print(f"| {name} | {height}x{width} | {count} | {keras_ms:.1f} | {tflite_ms:.1f} | "
              f"{ratio:.2f}x | {check:.1e} |")  # fmt: skip
    if rows:
        print(f"| these convolutions, times their runs per image | | | {keras_total:.0f} | {tflite_total:.0f} | "
              f"{tflite_total / keras_total:.2f}x | |")  # fmt: skip


if __name__ == "__main__":
    main()
