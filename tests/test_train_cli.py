"""`python -m agetf.train`: flag validation, and the command line end to end (train, --load)."""

import json
import os
import subprocess
import sys

import pytest

from agetf import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--img_dim=32", "--alpha=0.35", "--batch_size=16", "--steps_per_epoch=3", "--epochs=2",
        "--steps_per_loop=3", "--batchnorm_momentum=0.9", "--summary_images=2",
        "--mixed_precision=float32", "--strategy=default", "--predict_gender"]


def run_cli(*args, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "agetf.train", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=env)



@pytest.mark.parametrize("bad_flag,message", [
    ("--base_model=VGG16", "--base_model=VGG16 is unknown; use one of MobileNetV2, ResNet50"),
    ("--img_dim=16", "--img_dim=16 is below MobileNetV2's minimum of 32"),
    ("--lr_scheduler=step", "--lr_scheduler=step is unknown"),
    ("--strategy=parameter_server", "--strategy must be one of"),
    ("--mixed_precision=float8", "--mixed_precision=float8 is unknown"),
    ("--lr=fast", "--lr=fast is neither a number nor 'auto'"),
    ("--loss_weights=gender", "--loss_weights item 'gender' is not HEAD=NUMBER"),
    ("--heads=age,face", "heads must be a non-empty list"),
    ("--batch_size=0", "--batch_size=0 must be >= 1"),
])
def test_bad_flag_values_are_refused_with_the_fix(parse_train_flags, data_dir, tmp_path, bad_flag, message):
    parse_train_flags(f"--data_dir={data_dir}", f"--model_dir={tmp_path}", bad_flag)
    with pytest.raises(ValueError) as error:
        train.build_config()
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_or_empty_data_dir_is_refused(parse_train_flags, tmp_path):
    parse_train_flags(f"--data_dir={tmp_path / 'nowhere'}", f"--model_dir={tmp_path / 'run'}")
    with pytest.raises(ValueError, match="does not exist; convert a dataset"):
        train.build_config()
    (tmp_path / "empty").mkdir()
    parse_train_flags(f"--data_dir={tmp_path / 'empty'}", f"--model_dir={tmp_path / 'run'}")
    with pytest.raises(ValueError, match="no train shards"):
        train.build_config()


def test_older_project_flags_map_to_heads(parse_train_flags, data_dir, tmp_path):
    parse_train_flags(f"--data_dir={data_dir}", f"--model_dir={tmp_path}", "--type=classification",
                "--range_mode", "--predict_gender")
    assert train.build_config().model.heads == ("age_range", "gender")
    parse_train_flags(f"--data_dir={data_dir}", f"--model_dir={tmp_path}", "--type=regression",
                "--nopredict_gender")
    assert train.build_config().model.heads == ("age",)
    # absl booleans: --nofine_tuning is False (the older project's type=bool made "False" true).
    parse_train_flags(f"--data_dir={data_dir}", f"--model_dir={tmp_path}", "--nofine_tuning")
    assert train.build_config().fine_tune.enabled is False


def test_command_line_reports_one_line_and_exits_non_zero(data_dir, tmp_path):
    result = run_cli(f"--data_dir={data_dir}", f"--model_dir={tmp_path}", "--base_model=VGG16")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "agetf.train: error: --base_model=VGG16 is unknown; use one of MobileNetV2, ResNet50")
    assert not os.listdir(tmp_path)  # nothing written


def test_train_then_load_on_the_command_line(data_dir, tmp_path):
    model_dir = tmp_path / "run"
    result = run_cli(f"--data_dir={data_dir}", f"--model_dir={model_dir}", *TINY,
                     "--print_predictions=2")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("best.keras", "final.keras", "flags.txt", "history.json", "evaluation.json",
                 "saved_model/saved_model.pb", "plots/training.png"):
        assert (model_dir / name).exists(), name
    assert "--img_dim=32" in (model_dir / "flags.txt").read_text()
    assert "Predicting for image" in result.stdout and "Predicted gender:" in result.stdout
    report = json.loads((model_dir / "evaluation.json").read_text())
    assert report["split"] == "test" and report["num_images"] > 0
    assert {"mae", "cs5", "gender_accuracy"} <= set(report["metrics"])
    assert report["by_age_decade"] and report["constant_baseline"]["mae"] > 0

    # --load evaluates the saved model again without training; same numbers.
    loaded = run_cli(f"--data_dir={data_dir}", f"--model_dir={model_dir}", *TINY, "--load",
                     "--print_predictions=3")
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.count("Predicting for image") == 3
    again = json.loads((model_dir / "evaluation.json").read_text())
    assert again["metrics"] == pytest.approx(report["metrics"])
    assert "Epoch" not in loaded.stdout
