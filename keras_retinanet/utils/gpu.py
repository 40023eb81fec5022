"""GPU selection for scripts (fizyr's ``utils.gpu.setup_gpu``)."""
import warnings


def setup_gpu(gpu_id):
    """Use one GPU (with memory growth, so TensorFlow does not take all of its memory), or none.

    Args:
        gpu_id: index of the GPU to use; 'cpu' or -1 for none. Without GPUs it does nothing.

    Warns when TensorFlow's devices were set up already (they cannot change then).
    """
    import tensorflow as tf

    if gpu_id == "cpu" or gpu_id == -1:
        tf.config.set_visible_devices([], "GPU")
        return
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return
    index = int(gpu_id)
    if not 0 <= index < len(gpus):
        raise ValueError(f"GPU {gpu_id} asked for, but {len(gpus)} GPU(s) are visible")
    try:
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
        tf.config.set_visible_devices(gpus[index], "GPU")
    except RuntimeError as error:  # devices initialised already
        warnings.warn(f"setup_gpu({gpu_id!r}) came too late: {error}", stacklevel=2)
