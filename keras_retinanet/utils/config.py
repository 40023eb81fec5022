"""Reading ``config.ini`` files that override the anchor parameters and pyramid levels.

Format (values are space separated)::

    [anchor_parameters]
    sizes   = 32 64 128 256 512
    strides = 8 16 32 64 128
    ratios  = 0.5 1 2 3
    scales  = 1 1.2 1.6

    [pyramid_levels]
    levels = 3 4 5 6 7
"""
import configparser
import os

from .anchors import AnchorParameters

ANCHOR_SECTION = "anchor_parameters"
PYRAMID_SECTION = "pyramid_levels"
ANCHOR_KEYS = ("sizes", "strides", "ratios", "scales")
PYRAMID_KEYS = ("levels",)


def _where(config, section, key):
    path = getattr(config, "path", None)
    prefix = f"{path}: " if path else ""
    return f"{prefix}[{section}] {key}"


def read_config_file(config_path):
    """Read and check a config file.

    Args:
        config_path: path of the .ini file.

    Returns:
        ``configparser.ConfigParser`` with a ``path`` attribute (the file's path).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not valid ini syntax, or a section misses keys or has
            keys it does not know, naming the file, section and key.
    """
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"config file not found: {config_path}")
    config = configparser.ConfigParser()
    try:
        with open(config_path) as f:
            config.read_file(f)
    except configparser.Error as error:
        raise ValueError(f"invalid config file: {config_path}: {error}") from None
    config.path = config_path

    for section, keys in ((ANCHOR_SECTION, ANCHOR_KEYS), (PYRAMID_SECTION, PYRAMID_KEYS)):
        if section not in config:
            continue
        present = set(config[section].keys())
        missing = [k for k in keys if k not in present]
        unknown = sorted(present - set(keys))
        if missing:
            raise ValueError(
                f"invalid config file: {config_path}: [{section}] is missing "
                f"{', '.join(missing)} (expected keys: {', '.join(keys)})"
            )
        if unknown:
            raise ValueError(
                f"invalid config file: {config_path}: [{section}] has unknown keys "
                f"{', '.join(unknown)} (expected keys: {', '.join(keys)})"
            )
    # Parse now so that bad values fail here, with the file's name, not deep in training.
    if ANCHOR_SECTION in config:
        parse_anchor_parameters(config)
    if PYRAMID_SECTION in config:
        parse_pyramid_levels(config)
    return config


def _parse_list(config, section, key, kind, positive=True):
    raw = config[section][key]
    values = []
    for token in raw.split():
        try:
            value = kind(token)
        except ValueError:
            raise ValueError(
                f"invalid config file: {_where(config, section, key)}: {token!r} is not "
                f"{'an integer' if kind is int else 'a number'} (value {raw!r})"
            ) from None
        if positive and not value > 0:
            raise ValueError(
                f"invalid config file: {_where(config, section, key)}: {token!r} must be "
                f"positive (value {raw!r})"
            )
        values.append(value)
    if not values:
        raise ValueError(f"invalid config file: {_where(config, section, key)}: no values")
    return values


def parse_anchor_parameters(config):
    """``AnchorParameters`` from the ``[anchor_parameters]`` section.

    Sizes are floats, strides integers, ratios and scales floats; there must be as
    many sizes as strides.
    """
    sizes = _parse_list(config, ANCHOR_SECTION, "sizes", float)
    strides = _parse_list(config, ANCHOR_SECTION, "strides", int)
    ratios = _parse_list(config, ANCHOR_SECTION, "ratios", float)
    scales = _parse_list(config, ANCHOR_SECTION, "scales", float)
    if len(sizes) != len(strides):
        raise ValueError(
            f"invalid config file: {_where(config, ANCHOR_SECTION, 'sizes')}: "
            f"{len(sizes)} sizes but {len(strides)} strides; give one of each per pyramid level"
        )
    return AnchorParameters(sizes, strides, ratios, scales)


def parse_pyramid_levels(config):
    """Pyramid levels (list of int, e.g. [3, 4, 5, 6, 7]) from the ``[pyramid_levels]`` section."""
    levels = _parse_list(config, PYRAMID_SECTION, "levels", int)
    if len(set(levels)) != len(levels) or sorted(levels) != levels:
        raise ValueError(
            f"invalid config file: {_where(config, PYRAMID_SECTION, 'levels')}: levels must "
            f"be increasing without repeats, got {levels}"
        )
    if ANCHOR_SECTION in config:
        sizes = _parse_list(config, ANCHOR_SECTION, "sizes", float)
        if len(sizes) < len(levels):
            raise ValueError(
                f"invalid config file: {_where(config, PYRAMID_SECTION, 'levels')}: "
                f"{len(levels)} levels but [{ANCHOR_SECTION}] gives only {len(sizes)} sizes"
            )
    return levels


def anchor_settings(config):
    """(anchor parameters or None, pyramid levels or None) of a config file: the one reader for every caller.

    Args:
        config: None, the path of a config.ini, or a parser from ``read_config_file``.

    Returns:
        (``AnchorParameters`` if the file has ``[anchor_parameters]`` else None,
        list of levels if it has ``[pyramid_levels]`` else None).

    Raises:
        FileNotFoundError, ValueError: see ``read_config_file``.
    """
    if config is None:
        return None, None
    if isinstance(config, (str, bytes)) or hasattr(config, "__fspath__"):
        config = read_config_file(os.fspath(config))
    anchor_params = parse_anchor_parameters(config) if ANCHOR_SECTION in config else None
    pyramid_levels = parse_pyramid_levels(config) if PYRAMID_SECTION in config else None
    return anchor_params, pyramid_levels
