"""TensorFlow version checks (fizyr's ``utils.tf_version``)."""

MINIMUM_TF_VERSION = (2, 16, 0)
BLACKLISTED_TF_VERSIONS = []


def tf_version():
    """The TensorFlow version as a tuple of integers, e.g. (2, 21, 0)."""
    import tensorflow as tf

    return tuple(int(part) for part in tf.version.VERSION.split("-")[0].split(".")[:3] if part.isdigit())


def tf_version_ok(minimum_tf_version=MINIMUM_TF_VERSION, blacklisted=BLACKLISTED_TF_VERSIONS):
    """Whether the TensorFlow in use is at least ``minimum_tf_version`` and not blacklisted."""
    version = tf_version()
    return version >= tuple(minimum_tf_version) and version not in [tuple(v) for v in blacklisted]


def assert_tf_version(minimum_tf_version=MINIMUM_TF_VERSION, blacklisted=BLACKLISTED_TF_VERSIONS):
    """AssertionError (as fizyr's) naming the versions when ``tf_version_ok`` is False."""
    if not tf_version_ok(minimum_tf_version, blacklisted):
        raise AssertionError(
            f"TensorFlow {'.'.join(map(str, tf_version()))} is in use; keras-retinanet needs "
            f"{'.'.join(map(str, minimum_tf_version))} or newer (not {blacklisted})"
        )


def check_tf_version():
    """fizyr's name: ``assert_tf_version`` (it printed and exited; this raises, the caller decides)."""
    assert_tf_version()
