"""Hostile input: broken shards, bad flagfiles and flag values, unwritable or mismatched model_dirs,
and model loading that cannot run code from a file.
"""

import ast
import glob
import os
import shutil
import subprocess
import sys

import pytest

from agetf import input_pipeline, train, trainer as trainer_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def damaged_copy(data_dir, tmp_path, how):
    directory = str(tmp_path / "damaged")
    shutil.copytree(data_dir, directory)
    path = input_pipeline.list_shards(directory, "train")[1]
    data = bytearray(open(path, "rb").read())
    if how == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF  # a flipped bit inside a record: its checksum fails
    open(path, "wb").write(bytes(data))
    return directory, path


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_a_broken_shard_is_named_in_a_one_line_error(data_dir, tmp_path, how):
    directory, path = damaged_copy(data_dir, tmp_path, how)
    assert [p for p, _ in input_pipeline.find_corrupt_shards(
        input_pipeline.list_shards(directory, "train"))] == [path]
    message = str(input_pipeline.corrupt_data_error(directory))
    assert path in message and "--skip_corrupt_records" in message and "\n" not in message


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "agetf.train", *args], capture_output=True,
                          text=True, timeout=120, cwd=REPO, env=env)


@pytest.mark.parametrize("make_args,expected", [
    (lambda d, tmp: [f"--flagfile={tmp / 'missing.flags'}"], "missing.flags"),
    (lambda d, tmp: [f"--data_dir={d}", f"--model_dir={tmp / 'run'}", "--img_dim=big"],
     "--img_dim"),
    (lambda d, tmp: [f"--flagfile={tmp / 'bad.flags'}"], "img_dim"),
])
def test_bad_flagfiles_and_flag_values_fail_in_one_line_before_writing(data_dir, tmp_path,
                                                                       make_args, expected):
    (tmp_path / "bad.flags").write_text(f"--data_dir={data_dir}\n--img_dim=12.5.3\n")
    result = run_cli(*make_args(data_dir, tmp_path))
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr and expected in errors[0], result.stderr
    assert not (tmp_path / "run").exists()


def test_a_model_dir_that_cannot_be_written_is_refused(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(train.UsageError, match="cannot be created") as error:
        train.ensure_writable_dir(str(blocker / "run"))
    assert "\n" not in str(error.value)
    assert blocker.read_text() == "not a folder"


def test_resuming_with_another_img_dim_is_refused_and_nothing_is_overwritten(tmp_path):
    model_dir = str(tmp_path / "run")
    os.makedirs(model_dir)
    trainer_lib.write_run_definition(model_dir, trainer_lib.ModelConfig(img_dim=32, alpha=0.35))
    before = open(os.path.join(model_dir, "run.json")).read()
    with pytest.raises(ValueError, match="img_dim: 32 in model_dir, 64 now") as error:
        trainer_lib.check_run_definition(model_dir, trainer_lib.ModelConfig(img_dim=64, alpha=0.35))
    assert "\n" not in str(error.value)
    assert open(os.path.join(model_dir, "run.json")).read() == before


def _calls(tree, name):
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and (getattr(node.func, "attr", None) == name or getattr(node.func, "id", None) == name)]


def test_models_load_in_keras_safe_mode_and_nothing_unpickles():
    sources = glob.glob(os.path.join(REPO, "agetf", "*.py")) + glob.glob(os.path.join(REPO, "scripts", "*"))
    loads = 0
    for path in sources:
        text = open(path, encoding="utf-8").read()
        if not path.endswith(".py") and "python" not in text.split("\n", 1)[0]:
            continue  # a shell script
        tree = ast.parse(text, path)
        for call in _calls(tree, "load_model"):
            loads += 1
            safe = [k for k in call.keywords if k.arg == "safe_mode"]
            assert safe and getattr(safe[0].value, "value", None) is True, f"{path}:{call.lineno}"
        assert not _calls(tree, "load") or "pickle" not in text, path
        assert "import pickle" not in text and "allow_pickle=True" not in text, path
    assert loads >= 1
