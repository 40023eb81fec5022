"""Command-line tools: thin argument parsers over the library (see setup.py entry points)."""
import sys


def not_implemented(tool):
    """Exit status and message of a tool whose issue has not landed yet."""
    print(f"{tool}: not implemented yet", file=sys.stderr)
    return 2
