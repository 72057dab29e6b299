"""What pip installs: the console commands, the version, the licence."""

import importlib
import importlib.metadata
import os
import subprocess
import sys

import agetf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = {"agetf-train": "agetf.train", "agetf-convert": "agetf.convert",
            "agetf-predict": "agetf.predict", "agetf-data-service": "agetf.data_service"}


def test_each_console_command_runs_its_modules_entry_point():
    points = {p.name: p for p in importlib.metadata.entry_points(group="console_scripts")
              if p.dist is not None and p.dist.name == "agetf"}
    assert set(points) == set(COMMANDS)
    for name, module in COMMANDS.items():
        assert points[name].module == module, name
        target = getattr(importlib.import_module(module), points[name].attr)
        assert callable(target), name
        # python -m MODULE calls the same function: its __main__ block names it.
        with open(importlib.import_module(module).__file__) as f:
            assert f"    {points[name].attr}()" in f.read().split('if __name__ == "__main__":')[1]


def test_a_console_command_gives_the_modules_one_line_error(tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "agetf-convert")
    result = subprocess.run([script, "--input_dir", str(tmp_path / "missing"), "--output_dir",
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"make_tfrecords: error: input directory {tmp_path / 'missing'} does not exist; "
        "check --input_dir")


def test_the_version_is_one_and_the_licence_ships():
    assert importlib.metadata.version("agetf") == agetf.__version__
    with open(os.path.join(REPO, "LICENSE")) as f:
        assert "Apache License" in f.read(200)
