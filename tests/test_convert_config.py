"""The conversion's one config (agetf.data.convert_config.ConvertConfig): bad values fail when
it is made, in one line naming the flag, and each flag of agetf.convert defaults to its field."""

import os
import subprocess
import sys

import pytest

from agetf.data.convert_config import (
    MIB,
    ConversionError,
    ConvertConfig,
    format_split_ratios,
    parse_split_ratios,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("settings, message", [
    ({"split_ratios": (0.5, 0.5)}, "split ratios"),
    ({"split_ratios": (float("nan"), 0.5, 0.5)}, "split ratios"),
    ({"min_shards": 0}, "--min_shards"),
    ({"num_shards": 0}, "--num_shards"),
    ({"shard_bytes": 0}, "--shard_mb must be > 0, got 0"),
    ({"age_deviation": float("nan")}, "--age_deviation"),
    ({"dataset_name": "_faces"}, "--dataset_name"),
    ({"workers": -1}, "--workers"),
])
def test_a_bad_value_fails_when_the_config_is_made(settings, message):
    with pytest.raises(ConversionError, match=message) as error:
        ConvertConfig(input_dirs=["in"], output_dir="out", **settings)
    assert "\n" not in str(error.value)


def test_folders_are_kept_as_strings_and_the_config_is_frozen(tmp_path):
    config = ConvertConfig(input_dirs=[tmp_path / "a"], output_dir=tmp_path / "out")
    assert config.input_dirs == (str(tmp_path / "a"),)
    assert config.output_dir == str(tmp_path / "out")
    with pytest.raises(AttributeError):
        config.min_shards = 1


def test_split_ratios_read_back_from_their_text():
    assert parse_split_ratios(format_split_ratios(ConvertConfig.split_ratios)) == (0.8, 0.1, 0.1)


def test_each_flag_defaults_to_its_config_field():
    code = ("from absl import flags\nfrom agetf import convert\nconvert.define_flags()\n"
            "flags.FLAGS(['x', '--input_dir=in', '--output_dir=out'])\n"
            "print(repr(convert.build_config()))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=120, check=True)
    assert result.stdout.strip() == repr(ConvertConfig(input_dirs=["in"], output_dir="out"))
    assert ConvertConfig.shard_bytes % MIB == 0  # --shard_mb holds it whole
