"""Command-line tools: thin argument parsers over the library (see setup.py entry points).

What the tools share: the one-line error type, ``--version``, the examples epilog, and
how they name their recipe flags when a model's detector spec disagrees with them. Light
on purpose (no TensorFlow), so that ``--help`` and argument errors come back at once.
"""
import argparse
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


def new_parser(prog, description, examples, epilog_extra=""):
    """An ArgumentParser with ``--version`` and an examples epilog (kept as written)."""
    from keras_retinanet import __version__

    epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples.strip().splitlines())
    if epilog_extra:
        epilog += "\n\n" + epilog_extra.strip("\n")
    parser = argparse.ArgumentParser(
        prog=prog, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"{prog} (keras-retinanet {__version__})")
    return parser


def tool_main(prog):
    """Decorator of a tool's ``main``: the library's warnings print as ``<prog>: warning: <message>``.

    One line each on standard error (Python's default adds the source file and line of the
    library); the previous warning display is restored when ``main`` returns.
    """
    import functools
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {message}", file=sys.stderr if file is None else file)

    def decorate(main):
        @functools.wraps(main)
        def wrapped(*args, **kwargs):
            previous = warnings.showwarning
            warnings.showwarning = show
            try:
                return main(*args, **kwargs)
            finally:
                warnings.showwarning = previous

        return wrapped

    return decorate


def print_notes(prog, notes):
    """Print the library's notes (values resolved from a model's spec) to standard error, one line each."""
    for note in notes:
        print(f"{prog}: note: {note}", file=sys.stderr)
