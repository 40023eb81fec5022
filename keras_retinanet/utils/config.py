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
import difflib
import os
import re

from .anchors import AnchorParameters
from .files import read_utf8

ANCHOR_SECTION = "anchor_parameters"
PYRAMID_SECTION = "pyramid_levels"
ANCHOR_KEYS = ("sizes", "strides", "ratios", "scales")
PYRAMID_KEYS = ("levels",)


SECTIONS = {ANCHOR_SECTION: ANCHOR_KEYS, PYRAMID_SECTION: PYRAMID_KEYS}
_SECTION_LINE = re.compile(r"^\s*\[([^\]]*)\]")
_KEY_LINE = re.compile(r"^\s*([^=:\s][^=:]*?)\s*[=:]")


def _where(config, section, key):
    path = getattr(config, "path", None)
    prefix = f"{path}: " if path else ""
    line = getattr(config, "lines", {}).get((section, key))
    return f"{prefix}{f'line {line}: ' if line else ''}[{section}] {key}"


def _line_numbers(text):
    """{(section, None): line of its header, (section, key): line of the key} of an ini text."""
    lines, section = {}, None
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped[0] in "#;":
            continue
        header = _SECTION_LINE.match(raw)
        if header:
            section = header.group(1).strip()
            lines.setdefault((section, None), number)
        elif section is not None and not raw[:1].isspace():
            key = _KEY_LINE.match(raw)
            if key:
                lines.setdefault((section, key.group(1).strip().lower()), number)
    return lines


def _suggestion(name, choices):
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


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
    if os.path.isdir(config_path):
        raise ValueError(f"invalid config file: {config_path} is a folder, not an .ini file")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"config file not found: {config_path}")
    try:
        text = read_utf8(config_path)
    except ValueError as error:
        raise ValueError(f"invalid config file: {config_path}: {error}") from None
    config = configparser.ConfigParser()
    try:
        config.read_string(text, source=config_path)
    except configparser.Error as error:
        raise ValueError(f"invalid config file: {config_path}: {' '.join(str(error).split())}") from None
    config.path = config_path
    config.lines = _line_numbers(text)

    for section in config.sections():
        if section not in SECTIONS:
            line = config.lines.get((section, None))
            raise ValueError(
                f"invalid config file: {config_path}: {f'line {line}: ' if line else ''}unknown section "
                f"[{section}]{_suggestion(section, list(SECTIONS))}; the known sections are "
                f"{', '.join(f'[{name}]' for name in SECTIONS)}"
            )
    if config.defaults():
        raise ValueError(f"invalid config file: {config_path}: unknown section [{config.default_section}]")
    for section, keys in SECTIONS.items():
        if section not in config:
            continue
        present = set(config[section].keys())
        missing = [k for k in keys if k not in present]
        unknown = sorted(present - set(keys), key=lambda k: config.lines.get((section, k), 0))
        if unknown:
            line = config.lines.get((section, unknown[0]))
            raise ValueError(
                f"invalid config file: {config_path}: {f'line {line}: ' if line else ''}[{section}] has unknown key "
                f"{unknown[0]!r}{_suggestion(unknown[0], keys)} (expected keys: {', '.join(keys)})"
            )
        if missing:
            line = config.lines.get((section, None))
            raise ValueError(
                f"invalid config file: {config_path}: {f'line {line}: ' if line else ''}[{section}] is missing "
                f"{', '.join(missing)} (expected keys: {', '.join(keys)})"
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


def format_config(anchor_params, pyramid_levels=None, comment=None):
    """The text of a config.ini that ``anchor_settings`` reads back as these settings.

    Args:
        anchor_params: ``AnchorParameters``.
        pyramid_levels: levels (written as [pyramid_levels] when given).
        comment: a line written first as an ini comment (e.g. how the values were found).
    """

    def values(numbers):
        return " ".join(f"{float(v):.6g}" for v in numbers)

    lines = [f"# {comment}"] if comment else []
    lines += [
        f"[{ANCHOR_SECTION}]",
        f"sizes = {values(anchor_params.sizes)}",
        f"strides = {' '.join(str(int(s)) for s in anchor_params.strides)}",
        f"ratios = {values(anchor_params.ratios)}",
        f"scales = {values(anchor_params.scales)}",
    ]
    if pyramid_levels is not None:
        lines += ["", f"[{PYRAMID_SECTION}]", f"levels = {' '.join(str(int(level)) for level in pyramid_levels)}"]
    return "\n".join(lines) + "\n"
