"""Command-line tools: thin argument parsers over the library (see setup.py entry points).

What the tools share: the one-line error type, ``--version``, ``-q`` / ``-v``, the examples
epilog, how they report (``logging``: notes and warnings as ``<tool>: note: ...`` lines),
how they import TensorFlow (its C++ start-up lines hidden unless ``-v``), and how they
name their recipe flags when a model's detector spec disagrees with them. Light on
purpose (no TensorFlow), so that ``--help`` and argument errors come back at once.
"""
import argparse
import logging
import os
import re
import sys

from keras_retinanet.errors import first_line  # noqa: F401  (the tools' one-line error messages)

# How the tools name the caller's recipe values in notes and errors (``spec.resolve_recipe``).
RECIPE_FLAGS = {
    "backbone": "--backbone",
    "anchors": "--config",
    "pyramid_levels": "--config",
    "class_names": "--classes",
    "image_min_side": "--image-min-side",
    "image_max_side": "--image-max-side",
    "no_resize": "--no-resize",
}


class ToolError(Exception):
    """A problem with a tool's input, reported as one line and exit status 1."""


LOGGER = logging.getLogger("keras_retinanet.tools")
_LEVEL_WORDS = {logging.DEBUG: "debug", logging.INFO: "note", logging.WARNING: "warning", logging.ERROR: "error"}


def add_output_options(parser, suppress=False):
    """``-q/--quiet`` and ``-v/--verbose`` (``suppress``: for sub-command parsers, see evaluate)."""
    default = argparse.SUPPRESS if suppress else False
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true", default=default,
                       help="print errors only (no notes or warnings)")
    group.add_argument("-v", "--verbose", action="store_true", default=default,
                       help="also print TensorFlow's own log lines (hidden by default, except errors)")


def new_parser(prog, description, examples, epilog_extra=""):
    """An ArgumentParser with ``--version``, ``-q`` / ``-v`` and an examples epilog (kept as written)."""
    from keras_retinanet import __version__

    epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples.strip().splitlines())
    if epilog_extra:
        epilog += "\n\n" + epilog_extra.strip("\n")
    parser = argparse.ArgumentParser(
        prog=prog, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"{prog} (keras-retinanet {__version__})")
    add_output_options(parser)
    return parser


class _ToolFormatter(logging.Formatter):
    def __init__(self, prog):
        super().__init__()
        self.prog = prog

    def format(self, record):
        word = _LEVEL_WORDS.get(record.levelno, record.levelname.lower())
        return f"{self.prog}: {word}: {record.getMessage()}"


def set_verbosity(args):
    """Apply ``-q`` / ``-v`` of the parsed arguments to the tool's messages and TensorFlow's."""
    quiet, verbose = getattr(args, "quiet", False), getattr(args, "verbose", False)
    LOGGER.setLevel(logging.ERROR if quiet else logging.DEBUG if verbose else logging.INFO)
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"


# TensorFlow's start-up lines that carry no information for a user of the tools (CPU-only
# machines print a CUDA "error" at every start); anything else it prints is passed on.
TENSORFLOW_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|port\.cc:\d+\] oneDNN custom operations|cudart_stub\.cc|"
    r"cpu_feature_guard\.cc|To enable the following instructions:|cuda_platform\.cc:\d+\] failed call to cuInit|"
    r"Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered|TF-TRT Warning|"
    r"cuda_(executor|diagnostics)\.cc|Could not find cuda drivers"
)


def import_tensorflow(verbose=False):
    """Import TensorFlow (and start its devices) for a tool, hiding its start-up chatter.

    Everything TensorFlow writes to standard error meanwhile is held back and passed on,
    but for the lines of ``TENSORFLOW_NOISE``; ``verbose`` passes on everything.

    Raises:
        ToolError: a ``KERAS_RETINANET_THREADS`` / ``KERAS_RETINANET_MALLOC`` value it does not know.
    """
    from ..errors import SettingError
    from ..utils import threads
    from ..utils.allocator import keep_freed_memory

    try:
        threads.setting()  # read when the model is known; a typo stops the tool before any work
        keep_freed_memory()  # before TensorFlow's first buffers: no page faults on every step
    except SettingError as error:
        raise ToolError(str(error)) from None
    if verbose or "tensorflow" in sys.modules:
        import tensorflow as tf  # noqa: F401

        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    held = tempfile.TemporaryFile()
    os.dup2(held.fileno(), 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # device start-up: where the CUDA lines come from
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        held.seek(0)
        text = held.read().decode("utf-8", "replace")
        held.close()
        kept = [line for line in text.splitlines() if line.strip() and not TENSORFLOW_NOISE.search(line)]
        if kept:
            print("\n".join(kept), file=sys.stderr)


def log_threads():
    """Say (with -v) how TensorFlow's CPU threads were set for the run (``utils.threads``)."""
    from ..utils.threads import chosen_threads

    chosen = chosen_threads()
    if chosen is None:
        LOGGER.debug("TensorFlow threads: its defaults")
    else:
        LOGGER.debug(
            f"TensorFlow threads: {chosen[0]} per op, {chosen[1]} ops at once (keras_retinanet.utils.threads; "
            "KERAS_RETINANET_THREADS=tensorflow keeps TensorFlow's defaults)"
        )


def tool_main(prog):
    """Decorator of a tool's ``main``: the library's warnings print as ``<prog>: warning: <message>``.

    One line each on standard error (Python's default adds the source file and line of the
    library); the previous warning display is restored when ``main`` returns.
    """
    import functools
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        LOGGER.warning(str(message))

    def decorate(main):
        @functools.wraps(main)
        def wrapped(*args, **kwargs):
            previous = warnings.showwarning
            warnings.showwarning = show
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(_ToolFormatter(prog))
            LOGGER.addHandler(handler)
            LOGGER.propagate = False
            LOGGER.setLevel(logging.INFO)
            try:
                return main(*args, **kwargs)
            finally:
                warnings.showwarning = previous
                LOGGER.removeHandler(handler)

        return wrapped

    return decorate


def print_notes(prog, notes):
    """Report the library's notes (values resolved from a model's spec), one line each (hidden by -q)."""
    for note in notes:
        LOGGER.info(note)
