"""The package's environment variables (``KERAS_RETINANET_*``): read one, refuse a value it does not know."""
import os

from ..errors import SettingError


def read_setting(name, choices, default, environ=None):
    """The value of environment variable ``name``, lower-cased; ``default`` when unset or empty.

    Args:
        name: the variable, e.g. 'KERAS_RETINANET_THREADS'.
        choices: {value: what it does}, in the order the error message lists them.
        default: the value when the variable is unset or empty (one of ``choices``).
        environ: the environment to read (default ``os.environ``).

    Raises:
        SettingError: any other value (a typo would otherwise be ignored without a word).
    """
    environ = os.environ if environ is None else environ
    value = environ.get(name, "").strip().lower() or default
    if value not in choices:
        listed = " or ".join(f"'{choice}' ({meaning})" for choice, meaning in choices.items())
        raise SettingError(f"{name}={environ[name]!r} is not a setting: use {listed}, or leave it unset")
    return value
