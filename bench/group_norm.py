"""The package's GroupNormalization against Keras' own, one layer at a time, on the CPU.

For each feature-map shape a RetinaNet with a GroupNorm backbone or GroupNorm heads runs,
both layers (same groups, same weights) are timed inside ``tf.function`` in interleaved
rounds, forward alone (inference) and forward plus the gradient of a sum (training). It
prints the median milliseconds of each, the ratio ours / Keras' and the largest difference
between the two layers' outputs (forward; the same on both rows of a shape).

Usage::

    python bench/group_norm.py [--runs 15] [--threads 2]
"""
import argparse
import os
import statistics
import sys

from _timing import interleaved_seconds

# (B, H, W, C), groups: a 400 px MobileNet backbone's early and late maps, the heads at P3
SHAPES = (
    ((1, 200, 200, 64), 32),
    ((1, 100, 100, 128), 32),
    ((1, 50, 50, 256), 32),
    ((1, 50, 50, 256), 16),
    ((8, 40, 40, 256), 32),
)


def parse_args(args):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="timed rounds per shape")
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads")
    return parser.parse_args(args)


def main(args=None):
    args = parse_args(sys.argv[1:] if args is None else args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    import keras

    from keras_retinanet.layers import GroupNormalization

    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {args.threads} threads, {args.runs} rounds")
    rows = []
    for shape, groups in SHAPES:
        values = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, size=shape).astype("float32"))
        theirs = keras.layers.GroupNormalization(groups=groups)
        ours = GroupNormalization(groups=groups)
        theirs.build(shape)
        ours.build(shape)
        rng = np.random.default_rng(1)
        weights = [rng.normal(1.0, 0.1, size=shape[-1:]).astype("float32"), rng.normal(size=shape[-1:]).astype("float32")]
        theirs.set_weights(weights)
        ours.set_weights(weights)

        def forward(layer):
            return tf.function(lambda x: layer(x))

        def backward(layer):
            @tf.function
            def step(x):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    total = tf.reduce_sum(layer(x) * x)
                return tape.gradient(total, [x, *layer.trainable_variables])

            return step

        difference = float(np.max(np.abs(forward(ours)(values).numpy() - forward(theirs)(values).numpy())))
        for mode, make in (("forward", forward), ("forward + gradient", backward)):
            runs = {"ours": make(ours), "keras": make(theirs)}
            for run in runs.values():  # tracing and warm-up
                run(values)
                run(values)
            def fetched(run):  # the outputs to numpy: the call has finished
                return lambda: tf.nest.map_structure(lambda t: t.numpy(), run(values))

            times = interleaved_seconds({name: fetched(run) for name, run in runs.items()}, args.runs)
            ours_ms, keras_ms = (1000 * statistics.median(times[name]) for name in ("ours", "keras"))
            rows.append((shape, groups, mode, ours_ms, keras_ms, difference))
        print(f"  {shape} groups {groups}: done", flush=True)

    print()
    print("| input (B, H, W, C) | groups | pass | ours ms | Keras ms | ours / Keras | max forward diff |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for shape, groups, mode, ours_ms, keras_ms, difference in rows:
        print(f"| {shape} | {groups} | {mode} | {ours_ms:.2f} | {keras_ms:.2f} | {ours_ms / keras_ms:.2f}x | {difference:.1e} |")


if __name__ == "__main__":
    main()
