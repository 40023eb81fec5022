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
        ("levels = 3 4 5 6 7", "levels = 3 4 5 6 7\nlevel = 3", r"\[pyramid_levels\] has unknown keys level"),
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
