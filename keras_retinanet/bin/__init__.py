"""Command-line tools: thin argument parsers over the library (see setup.py entry points)."""
