"""Command-line tools: thin argument parsers over the library (see setup.py entry points)."""
from keras_retinanet.inference import first_line  # noqa: F401  (the tools' one-line error messages)


class ToolError(Exception):
    """A problem with a tool's input, reported as one line and exit status 1."""
