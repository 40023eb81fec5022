import numpy as np
import pytest

from keras_retinanet.utils.anchors import anchors_for_shape
from keras_retinanet.utils.config import parse_anchor_parameters, parse_pyramid_levels, read_config_file

VALID = """
[anchor_parameters]
sizes   = 32 64 128 256 512
strides = 8 16 32 64 128
ratios  = 0.5 1 2 3
scales  = 1 1.2 1.6

[pyramid_levels]
levels = 3 4 5 6 7
"""


def _write(tmp_path, text, name="config.ini"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_parse_valid_file(tmp_path):
    config = read_config_file(_write(tmp_path, VALID))
    params = parse_anchor_parameters(config)
    assert params.sizes == [32, 64, 128, 256, 512]
    assert params.strides == [8, 16, 32, 64, 128]
    np.testing.assert_allclose(params.ratios, [0.5, 1, 2, 3])
    np.testing.assert_allclose(params.scales, [1, 1.2, 1.6])
    assert params.num_anchors() == 12
    assert parse_pyramid_levels(config) == [3, 4, 5, 6, 7]
    assert anchors_for_shape((64, 64), anchor_params=params).shape == (12 * (64 + 16 + 4 + 1 + 1), 4)


def test_only_anchor_section(tmp_path):
    config = read_config_file(_write(tmp_path, VALID.split("[pyramid_levels]")[0]))
    assert "pyramid_levels" not in config
    assert parse_anchor_parameters(config).num_anchors() == 12


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("sizes   = 32 64", "sizes   = 32 big", r"\[anchor_parameters\] sizes: 'big' is not a number"),
        ("strides = 8 16", "strides = 8 16.5", r"\[anchor_parameters\] strides: '16.5' is not an integer"),
        ("ratios  = 0.5", "ratios  = -0.5", r"\[anchor_parameters\] ratios: '-0.5' must be positive"),
        ("scales  = 1 1.2 1.6", "scales  =", r"\[anchor_parameters\] scales: no values"),
        ("strides = 8 16 32 64 128", "strides = 8 16 32", r"\[anchor_parameters\] sizes: 5 sizes but 3 strides"),
        ("levels = 3 4 5 6 7", "levels = 3 5 4", r"\[pyramid_levels\] levels: levels must be increasing"),
        ("levels = 3 4 5 6 7", "levels = 2 3 4 5 6 7", r"6 levels but \[anchor_parameters\] gives only 5 sizes"),
        ("scales  = 1 1.2 1.6\n", "", r"\[anchor_parameters\] is missing scales"),
        ("levels = 3 4 5 6 7", "levels = 3 4 5 6 7\nlevel = 3",
         r"line 10: \[pyramid_levels\] has unknown key 'level' \(did you mean 'levels'\?\)"),
    ],
)
def test_bad_values_name_file_section_and_key(tmp_path, old, new, message):
    assert old in VALID
    path = _write(tmp_path, VALID.replace(old, new))
    with pytest.raises(ValueError, match=message) as error:
        read_config_file(path)
    assert str(error.value).startswith(f"invalid config file: {path}")


def test_missing_and_unparsable_files(tmp_path):
    missing = str(tmp_path / "nope.ini")
    with pytest.raises(FileNotFoundError, match=f"config file not found: {missing}"):
        read_config_file(missing)
    path = _write(tmp_path, "sizes = 1 2\n")
    with pytest.raises(ValueError, match=f"invalid config file: {path}: File contains no section headers"):
        read_config_file(path)


def test_a_misspelled_section_is_an_error_naming_file_and_line(tmp_path):
    """A section the reader does not know is not silently ignored (the defaults would be used)."""
    path = _write(tmp_path, VALID.replace("[anchor_parameters]", "[anchor_parameter]"))
    with pytest.raises(ValueError) as error:
        read_config_file(path)
    assert str(error.value) == (
        f"invalid config file: {path}: line 2: unknown section [anchor_parameter] (did you mean 'anchor_parameters'?); "
        "the known sections are [anchor_parameters], [pyramid_levels]"
    )
    with pytest.raises(ValueError, match=r"unknown section \[DEFAULT\]"):
        read_config_file(_write(tmp_path, "[DEFAULT]\nsizes = 1\n" + VALID, "default.ini"))


def test_values_are_reported_with_their_line_and_a_bom_is_fine(tmp_path):
    path = _write(tmp_path, "\ufeff" + VALID.replace("ratios  = 0.5 1 2 3", "ratios  = 0.5 one 2"), "bom.ini")
    with pytest.raises(ValueError, match=r"bom.ini: line 5: \[anchor_parameters\] ratios: 'one' is not a number"):
        read_config_file(path)
    assert parse_pyramid_levels(read_config_file(_write(tmp_path, "\ufeff" + VALID, "ok.ini"))) == [3, 4, 5, 6, 7]
    latin = tmp_path / "latin.ini"
    latin.write_bytes(VALID.encode() + b"# caf\xe9\n")
    with pytest.raises(ValueError, match="not UTF-8 text"):
        read_config_file(str(latin))
