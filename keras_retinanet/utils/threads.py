"""How TensorFlow shares the CPU between its ops: threads inside one op, ops at once.

TensorFlow splits each op's work over its intra-op thread pool and runs independent ops at
once on its inter-op pool, both as large as the machine's cores by default. On a CPU of two
cores, the ops of a small RetinaNet (MobileNet backbones, narrow heads, images of a few
hundred pixels) are too short to split: the threads spend their time handing the pieces
to each other, in the kernel (futex waits and wake-ups). A training step has plenty of
independent ops (five pyramid levels, two heads, the gradients of each layer), so one
thread per op with two ops at once keeps both cores busy without the hand-offs.

Measured with ``bench/train_step.py`` (train_on_batch, 2 cores, images/s, 3 blocks each)::

    model, image side, batch              split ops (default)  whole ops, 2 at once
    mobilenet128_0.25 fs64, 128 px, 8          101                 137   (kernel 13% -> 2%)
    mobilenet128_0.25 fs256, 128 px, 8          19.4                24.3
    mobilenet224_1.0 fs64 gn, 256 px, 1          8.3                11.7
    mobilenet224_1.0 fs64 gn, 400 px, 1          3.8                 3.7
    mobilenet224_1.0 fs64 gn, 640 px, 1          2.1                 2.4
    mobilenet224_1.0 fs64 gn, 800 px, 1          1.2                 1.1
    resnet50 fs256, 256 px, 2                    2.8                 2.5
    resnet50 fs256, 512 px, 1                    0.8                 0.7

A ResNet's convolutions are long enough to split at any size; so are a MobileNet's at
800 px. ``parallel_ops_threads`` therefore runs whole ops two at once for backbones with
``light_ops`` (the MobileNets) on images of at most ``MAX_SIDE`` pixels, on a CPU-only
machine of at most ``MAX_CORES`` cores; anything else keeps TensorFlow's defaults (larger
machines were not measured). One inference call at a time then has less parallelism than
before, so inference runs ``model_calls_at_once()`` calls at once instead (``Detector``).
TensorFlow's own ``TF_NUM_INTRAOP_THREADS`` / ``TF_NUM_INTEROP_THREADS`` win when set, and
``KERAS_RETINANET_THREADS=tensorflow`` keeps TensorFlow's defaults (``auto`` or unset: the choice
above; any other value raises ``errors.SettingError``). It must run before TensorFlow's first op.
"""
import os

from .environment import read_setting

ENVIRONMENT_VARIABLE = "KERAS_RETINANET_THREADS"
SETTINGS = {"tensorflow": "TensorFlow's default threads", "auto": "the package's choice"}
TENSORFLOW_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
MAX_CORES = 2  # the machines it was measured on
MAX_SIDE = 640  # px: a MobileNet's ops at 800 px split well enough

_chosen = None  # (intra, inter) set by use_parallel_ops in this process


def usable_cores():
    """Cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def setting(environ=None):
    """The value of ``KERAS_RETINANET_THREADS``: 'auto' (also when unset or empty) or 'tensorflow'.

    Raises:
        SettingError: any other value.
    """
    return read_setting(ENVIRONMENT_VARIABLE, SETTINGS, "auto", environ)


def parallel_ops_threads(light_ops, image_side, cores=None, environ=None, has_gpu=False):
    """(intra-op threads, inter-op threads) for a model, or None to keep TensorFlow's (module docstring).

    Args:
        light_ops: the backbone's ``light_ops`` (``models.Backbone``).
        image_side: the largest side of the model's input images, in pixels (the resize
            bound ``image_max_side``, or the images' own when they are not resized).
        cores: usable cores (default: this process's).
        environ: the environment to read (default ``os.environ``).
        has_gpu: a GPU is visible (the CPU then only feeds it).

    Raises:
        SettingError: ``KERAS_RETINANET_THREADS`` has an unknown value (``setting``).
    """
    environ = os.environ if environ is None else environ
    if setting(environ) == "tensorflow":
        return None
    if any(environ.get(name, "").strip() for name in TENSORFLOW_VARIABLES) or has_gpu:
        return None
    cores = usable_cores() if cores is None else cores
    if not light_ops or image_side is None or image_side > MAX_SIDE or cores > MAX_CORES:
        return None
    return 1, max(1, cores)


def use_parallel_ops(light_ops, image_side):
    """Set TensorFlow's threads as ``parallel_ops_threads`` says, before its first op.

    Returns:
        (intra, inter) threads set, or None when TensorFlow's defaults were kept (including
        when TensorFlow has already run an op: they can no longer change).
    """
    global _chosen
    import tensorflow as tf

    threads = parallel_ops_threads(light_ops, image_side, has_gpu=bool(tf.config.list_physical_devices("GPU")))
    if threads is None:
        return None
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads[0])
        tf.config.threading.set_inter_op_parallelism_threads(threads[1])
    except RuntimeError:  # TensorFlow already started its thread pools
        return None
    _chosen = threads
    return threads


def use_parallel_ops_for(backbone, image_max_side=None, no_resize=None):
    """``use_parallel_ops`` for a model's recipe: its backbone name and resize settings.

    Returns None (TensorFlow's defaults kept) for an unknown or missing backbone too: the
    caller's own loading reports that.
    """
    from keras_retinanet import models

    try:
        light_ops = models.backbone(backbone).light_ops
    except (TypeError, ValueError):
        return None
    return use_parallel_ops(light_ops, None if no_resize else image_max_side)


def chosen_threads():
    """(intra, inter) threads ``use_parallel_ops`` set in this process, or None (TensorFlow's defaults)."""
    return _chosen


def model_calls_at_once():
    """Inference calls to run at once: the inter-op threads when ops run whole (one call alone
    would leave cores idle), else 1."""
    return 1 if _chosen is None else _chosen[1]
