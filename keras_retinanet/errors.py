"""The package's typed errors, and the one-line form in which the tools report them.

Pure Python (no TensorFlow), so that the command-line tools can catch them cheaply.
"""


class ModelLoadError(ValueError):
    """A model file cannot be used for detection (missing, unreadable, wrong kind)."""


class SpecError(ValueError):
    """A detector spec is malformed, or was written by a newer version of the package."""


class SpecConflictError(ValueError):
    """A value given by the caller contradicts what the model's detector spec records.

    Raised for what cannot change after training (backbone and its preprocessing,
    anchors, pyramid levels, classes) and for what an exported graph has fixed.
    """


class CalibrationError(ValueError):
    """Calibration data for post-training quantisation cannot be used (missing, empty, unreadable).

    The message names the path (and, for an image, the dataset it came from).
    """


class OutputError(OSError):
    """An output cannot be written: it is an input, it exists and may not be replaced, or its place is not writable.

    Raised before any work starts where possible; the message names the path.
    """


class SettingError(ValueError):
    """An environment variable of the package (``KERAS_RETINANET_*``) has a value it does not know.

    The message names the variable, its value and the values it takes.
    """


class ClusterConfigError(ValueError):
    """The cluster of a multi-worker run (the TF_CONFIG environment variable) is missing or malformed."""


def first_line(error, max_length=None):
    """The first line of an exception's message (its type name if the message is empty).

    Args:
        max_length: a longer line is cut to its first sentence (library errors that
            dump a whole config, e.g. Keras' deserialisation errors).
    """
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    if max_length is not None and len(line) > max_length:
        line = line.split(". ")[0]
    return line
