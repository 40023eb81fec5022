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


def first_line(error):
    """The first line of an exception's message (its type name if the message is empty)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
