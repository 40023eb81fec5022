"""Command-line tools: thin argument parsers over the library (see setup.py entry points)."""
import os
import sys

# TensorFlow's C++ start-up chatter (CPU features, absl) is noise for a command-line user.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def not_implemented(tool):
    """Exit status and message of a tool whose issue has not landed yet."""
    print(f"{tool}: not implemented yet", file=sys.stderr)
    return 2
