"""`python -m agetf.train`: flag validation, and the command line end to end (train, --load)."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from agetf import train
from agetf.data import input_pipeline
from agetf.modeling.model_config import ModelConfig
from agetf.training import checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--img_dim=32", "--alpha=0.35", "--weights=none", "--batch_size=16",
        "--steps_per_epoch=3", "--epochs=2", "--steps_per_loop=3", "--batchnorm_momentum=0.9",
        "--summary_images=2", "--mixed_precision=float32", "--strategy=default", "--predict_gender"]


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
    # Numbers outside the range where they mean anything.
    ("--checkpoint_every_steps=-1",
     "--checkpoint_every_steps=-1 must be >= 0 (0: at epoch ends only)"),
    ("--epochs=0", "--epochs=0 must be >= 1"),
    ("--steps_per_epoch=-1", "--steps_per_epoch=-1 must be >= 0"),
    ("--validation_steps=-1", "--validation_steps=-1 must be >= 0"),
    ("--early_stopping_patience=-1", "--early_stopping_patience=-1 must be >= 0 (0: off)"),
    ("--summary_images=-2", "--summary_images=-2 must be >= 0"),
    ("--print_predictions=-1", "--print_predictions=-1 must be >= 0"),
    ("--steps_per_loop=0", "--steps_per_loop=0 must be >= 1"),
    ("--shuffle_buffer=0", "--shuffle_buffer=0 must be >= 1"),
    ("--head_epochs=-1", "--head_epochs=-1 must be >= 0"),
    ("--fine_tune_epochs=-1", "--fine_tune_epochs=-1 must be >= 0"),
    (("--fine_tuning", "--head_epochs=0", "--fine_tune_epochs=0"), "train nothing"),
    ("--collective_timeout=-1", "--collective_timeout=-1 must be >= 0 seconds"),
    ("--plateau_patience=-1", "--plateau_patience=-1 must be >= 0"),
    ("--plateau_cooldown=-1", "--plateau_cooldown=-1 must be >= 0"),
    ("--plateau_min_lr=-1e-6", "--plateau_min_lr=-1e-06 must be >= 0"),
    ("--plateau_factor=1.5", "--plateau_factor=1.5 must be in (0, 1), e.g. --plateau_factor=0.2"),
    ("--clr_half_cycle_steps=-1", "--clr_half_cycle_steps=-1 must be >= 0"),
    ("--clr_half_cycle_epochs=0", "--clr_half_cycle_epochs=0 must be > 0"),
    ("--clr_base_lr=0", "--clr_base_lr=0 must be > 0"),
    ("--clr_max_lr=1e-5", "--clr_max_lr=1e-05 must be >= --clr_base_lr=0.0001"),
    ("--clr_gamma=0", "--clr_gamma=0 must be in (0, 1]"),
    ("--warmup_epochs=-1", "--warmup_epochs=-1 must be >= 0"),
    ("--cosine_min_lr=-1", "--cosine_min_lr=-1 must be >= 0"),
    ("--lr_find_steps=1", "--lr_find_steps=1 must be 0 (use --lr_find_epochs) or >= 2"),
    ("--lr_find_steps=-5", "--lr_find_steps=-5 must be 0"),
    ("--lr_find_epochs=0", "--lr_find_epochs=0 must be > 0"),
    ("--lr_find_min=0", "--lr_find_min=0 must be > 0"),
    ("--lr_find_max=1e-12", "--lr_find_max=1e-12 must be above --lr_find_min=1e-10"),
    ("--lr=0", "--lr=0 must be > 0, or 'auto'"),
    ("--lr=nan", "--lr=nan must be > 0"),
    ("--fine_tune_lr=-1e-4", "--fine_tune_lr=-0.0001 must be > 0"),
    ("--momentum=1", "--momentum=1 must be in [0, 1)"),
    ("--dropout=1", "--dropout=1 must be in [0, 1)"),
    ("--batchnorm_momentum=0", "--batchnorm_momentum=0 must be in (0, 1)"),
    ("--alpha=0", "--alpha=0 must be > 0"),
    ("--age_deviation=0", "--age_deviation=0 must be > 0"),
    # Names that must match the heads or the strategy.
    ("--best_metric=val_gender_accuracy", "--best_metric=val_gender_accuracy is not reported for "
                                          "these heads; use one of val_loss"),
    ("--loss_weights=gendr=2", "--loss_weights names gendr, which is no head; use one of "
                               "age_histogram, age_range, age, gender"),
    ("--tpu=grpc://10.0.0.2:8470", "--tpu=grpc://10.0.0.2:8470 applies to --strategy=tpu only"),
])
def test_bad_flag_values_are_refused_with_the_fix(
        parse_train_flags, data_dir, tmp_path, bad_flag, message):
    bad_flags = (bad_flag,) if isinstance(bad_flag, str) else bad_flag
    parse_train_flags(f"--data_dir={data_dir}", f"--model_dir={tmp_path}", *bad_flags)
    with pytest.raises(ValueError) as error:
        train.build_config()
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_value_absl_refuses_is_one_line_too(parse_train_flags, capsys):
    # parse_train_flags only puts the global flags back afterwards; parse_flags changes them.
    with pytest.raises(SystemExit) as exit_:
        train.parse_flags(["agetf.train", "--data_dir=d", "--model_dir=m", "--type=ordinal"])
    assert exit_.value.code == ("agetf.train: error: flag --type=ordinal: value should be one of "
                                "<classification|regression>")
    assert capsys.readouterr().err == ""  # not absl's FATAL message and --helpshort hint


def test_loss_weights_of_heads_not_trained_are_skipped_with_one_warning(parse_train_flags, data_dir,
                                                                       tmp_path, caplog):
    # The demo's flagfile weights age_histogram; a user switches to regression on top of it.
    parse_train_flags(f"--flagfile={os.path.join(REPO, 'flags', 'demo.flags')}",
                      f"--data_dir={data_dir}", f"--model_dir={tmp_path}", "--type=regression",
                      "--loss_weights=age_histogram=5,gender=0.5,age_range=2")
    assert train.build_config().loss_weights == {"gender": 0.5}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["--loss_weights: skipping age_histogram=5, age_range=2, for heads this "
                        "run does not train (it trains age, gender)"]


@pytest.mark.slow
def test_short_overrides_on_the_demo_flagfile_give_a_run_not_an_error(data_dir, tmp_path):
    # demo.flags has --loss_weights=age_histogram=5 and a 1-epoch cosine warm-up.
    result = run_cli(f"--flagfile={os.path.join(REPO, 'flags', 'demo.flags')}",
                     f"--data_dir={data_dir}", f"--model_dir={tmp_path / 'run'}",
                     "--type=regression", "--epochs=1", "--img_dim=32", "--batch_size=16",
                     "--steps_per_epoch=3", "--steps_per_loop=3", "--summary_images=0",
                     "--print_predictions=0", "--noexport", "--mixed_precision=float32",
                     "--strategy=default")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Epoch 1/1" in result.stdout and "Run written to" in result.stdout
    skipped = [line for line in result.stderr.splitlines() if "--loss_weights: skipping" in line]
    warmup = [line for line in result.stderr.splitlines() if "cosine warm-up" in line]
    assert len(skipped) == 1 and "age_histogram=5" in skipped[0], result.stderr[-3000:]
    assert len(warmup) == 1 and "--epochs=1, 3 steps" in warmup[0], result.stderr[-3000:]


def test_gender_only_is_a_valid_run(parse_train_flags, data_dir, tmp_path):
    parse_train_flags(f"--data_dir={data_dir}", f"--model_dir={tmp_path}", "--heads=gender",
                      "--best_metric=val_gender_accuracy", "--export_tflite")
    assert train.build_config().model.heads == ("gender",)


def test_heads_in_another_order_are_the_same_model(parse_train_flags, data_dir, tmp_path):
    parse_train_flags(f"--data_dir={data_dir}", f"--model_dir={tmp_path}",
                      "--heads=gender,age_histogram")
    reordered = train.build_config().model
    parse_train_flags(f"--data_dir={data_dir}", f"--model_dir={tmp_path}", "--predict_gender")
    assert reordered.heads == train.build_config().model.heads == ("age_histogram", "gender")
    # A model_dir written before the heads were put in order still matches.
    definition = dict(checkpoints.run_definition(reordered), heads=["gender", "age_histogram"])
    (tmp_path / "run.json").write_text(json.dumps(definition))
    checkpoints.check_run_definition(str(tmp_path), reordered)
    with pytest.raises(ValueError, match="different model"):
        checkpoints.check_run_definition(str(tmp_path),
                                         dataclasses.replace(reordered, heads=("age",)))


@pytest.mark.parametrize("recipe", sorted(os.listdir(os.path.join(REPO, "flags"))))
def test_every_recipe_passes_validation(parse_train_flags, monkeypatch, recipe):
    # The recipes point at data that is not here (tfrecords/utkface); everything else is checked.
    monkeypatch.setattr(input_pipeline, "list_shards", lambda data_dir, split: [])
    parse_train_flags(f"--flagfile={os.path.join(REPO, 'flags', recipe)}")
    config = train.build_config()
    assert config.model_dir == f"runs/{recipe.removesuffix('.flags')}"


def test_missing_or_empty_data_dir_is_refused(parse_train_flags, tmp_path):
    parse_train_flags(f"--data_dir={tmp_path / 'nowhere'}", f"--model_dir={tmp_path / 'run'}")
    with pytest.raises(ValueError, match="does not exist; convert a dataset"):
        train.build_config()
        train.check_data_dir()
    (tmp_path / "empty").mkdir()
    parse_train_flags(f"--data_dir={tmp_path / 'empty'}", f"--model_dir={tmp_path / 'run'}")
    with pytest.raises(ValueError, match="no train shards"):
        train.build_config()
        train.check_data_dir()


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
    result = run_cli(f"--data_dir={data_dir}", f"--model_dir={tmp_path}", "--epochs=0")
    assert result.returncode != 0
    # Checked before TensorFlow starts: its start-up lines do not bury the one line.
    assert result.stderr.strip().splitlines() == ["agetf.train: error: --epochs=0 must be >= 1"]
    assert not os.listdir(tmp_path)  # nothing written


def test_weights_default_to_imagenet_as_in_keras_applications(parse_train_flags, data_dir,
                                                              tmp_path):
    parse_train_flags(f"--data_dir={data_dir}", f"--model_dir={tmp_path}")
    assert train.build_config().model.weights == "imagenet"
    assert ModelConfig().weights == "imagenet"


# agetf.train with the ImageNet weights host unreachable, whatever this machine's network.
_OFFLINE = """
import runpy, sys
from agetf.modeling import model
model._can_reach_weights_host = lambda: False
sys.argv[0] = "agetf.train"
runpy.run_module("agetf.train", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
def test_default_imagenet_weights_offline_is_one_line_naming_the_fix(data_dir, tmp_path):
    tiny = [flag for flag in TINY if flag != "--weights=none"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO,
               KERAS_HOME=str(tmp_path / "keras"))  # an empty cache
    result = subprocess.run([sys.executable, "-c", _OFFLINE, f"--data_dir={data_dir}",
                             f"--model_dir={tmp_path / 'run'}", *tiny], capture_output=True,
                            text=True, timeout=300, cwd=REPO, env=env)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("agetf.train:")]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], result.stderr
    assert errors[0].startswith("agetf.train: error: ImageNet weights ")
    assert "--weights=none" in errors[0] and "Traceback" not in result.stderr


def test_absl_verbosity_is_warnings_unless_the_user_sets_it(parse_train_flags, data_dir, tmp_path):
    from absl import logging

    parse_train_flags(f"--data_dir={data_dir}", f"--model_dir={tmp_path}")
    train.configure_logging()
    assert logging.get_verbosity() == logging.WARNING  # TensorFlow's INFO lines stay out
    parse_train_flags(f"--data_dir={data_dir}", f"--model_dir={tmp_path}", "--verbosity=1")
    train.configure_logging()
    assert logging.get_verbosity() == 1


@pytest.mark.slow
def test_verbosity_and_log_dir_give_a_log_file_and_no_redrawn_bars(data_dir, tmp_path):
    logs = tmp_path / "logs"
    result = run_cli(f"--data_dir={data_dir}", f"--model_dir={tmp_path / 'run'}", *TINY,
                     "--epochs=1", "--noexport", "--print_predictions=0", "--verbosity=0",
                     f"--log_dir={logs}", "--loss_weights=age_range=2")
    assert result.returncode == 0, result.stderr[-3000:]
    log = (logs / "agetf.train.INFO").read_text()  # absl's link to the newest log file
    info = [line for line in log.splitlines() if line.startswith("I")]
    assert any("] Configuration: {" in line for line in info), log[-3000:]
    assert any(line.endswith("] Epoch 1/1") for line in info), log[-3000:]
    warning = "--loss_weights: skipping age_range=2"
    assert warning in log and warning in result.stderr  # warnings reach the terminal too
    assert "] Epoch 1/1" not in result.stderr  # INFO goes to the file only
    # The output is the same as without the flags, and off a terminal nothing is redrawn.
    assert "Epoch 1/1" in result.stdout and "Run written to" in result.stdout
    assert "\r" not in result.stdout + result.stderr + log


@pytest.mark.slow
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
    assert "Epoch 2/2" in result.stdout and "img/s:" in result.stdout  # the progress bar
    saved_model_time = (model_dir / "saved_model" / "saved_model.pb").stat().st_mtime_ns

    # --load evaluates the saved model again without training, here under the ages 21-60
    # protocol, and exports to a chosen folder, with the TFLite models too.
    exported = tmp_path / "exported"
    loaded = run_cli(f"--data_dir={data_dir}", f"--model_dir={model_dir}", *TINY, "--load",
                     "--print_predictions=3", "--eval_protocol=ages_21_60",
                     f"--export_dir={exported}", "--export_tflite")
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.count("Predicting for image") == 3
    assert "Epoch" not in loaded.stdout
    again = json.loads((model_dir / "evaluation_ages_21_60.json").read_text())
    assert again["protocol"] == "ages_21_60" and 0 < again["num_images"] < report["num_images"]
    assert json.loads((model_dir / "evaluation.json").read_text()) == report  # kept
    # Decades wholly inside 21-60 hold the same images, so the same model gives the same numbers.
    # (The constant predictor's columns differ: its median is of training ages 21-60.)
    inside = {"30-39", "40-49", "50-59"}
    model_columns = ("count", "mae", "cs5", "gender_accuracy")
    rows = {r["group"]: [r[k] for k in model_columns] for r in report["by_age_decade"]
            if r["group"] in inside}
    assert rows
    for row in again["by_age_decade"]:
        if row["group"] in inside:
            assert [row[k] for k in model_columns] == pytest.approx(rows.pop(row["group"]))
    assert not rows, f"decades missing under ages_21_60: {rows}"
    # The printed summary table is the report's.
    table = {line.split()[0]: line.split()[1:] for line in loaded.stdout.splitlines()
             if len(line.split()) == 3 and line.split()[0] in ("mae", "cs5")}
    assert float(table["mae"][0]) == pytest.approx(again["metrics"]["mae"], abs=5e-4)
    assert float(table["mae"][1]) == pytest.approx(again["constant_baseline"]["mae"], abs=5e-4)
    assert float(table["cs5"][0]) == pytest.approx(again["metrics"]["cs5"], abs=5e-4)
    assert f"Exported SavedModel to {exported}" in loaded.stdout
    assert saved_model_time == (model_dir / "saved_model" / "saved_model.pb").stat().st_mtime_ns
    assert {r["group"] for r in again["by_age_decade"]} <= {"20-29", *inside, "60-69"}
    assert (exported / "saved_model.pb").exists()
    assert not (model_dir / "saved_model.tmp").exists()
    assert sorted(os.listdir(model_dir / "tflite")) == [
        "model_dynamic_int8.tflite", "model_float16.tflite", "model_float32.tflite",
        "model_int8_full.tflite"]

    # --eval_split=validation scores the validation split into its own report (settings such
    # as the test-time flip are chosen there), leaving the test report alone.
    test_report = (model_dir / "evaluation.json").read_text()
    on_validation = run_cli(f"--data_dir={data_dir}", f"--model_dir={model_dir}", *TINY, "--load",
                            "--eval_split=validation", "--test_time_flip", "--print_predictions=0")
    assert on_validation.returncode == 0, on_validation.stderr[-3000:]
    validation = json.loads((model_dir / "evaluation_validation.json").read_text())
    assert validation["split"] == "validation" and validation["test_time_flip"] is True
    assert validation["num_images"] == input_pipeline.num_examples(data_dir, "validation")
    assert (model_dir / "evaluation.json").read_text() == test_report


def test_a_flagfile_line_without_dashes_is_one_line_naming_the_file_and_the_line(tmp_path):
    inner = tmp_path / "inner.flags"
    inner.write_text("# how long\n--epochs=1\nepochs=5\n")
    outer = tmp_path / "outer.flags"  # `--data_dir VALUE` on two lines is a flag, as in absl
    outer.write_text(f"--data_dir\n{tmp_path / 'data'}\n--flagfile={inner}\n"
                     f"--model_dir={tmp_path / 'run'}\n")
    result = run_cli(f"--flagfile={outer}")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"agetf.train: error: {inner} line 3: 'epochs=5' is not a flag; "
                     "write it as --epochs=5"], result.stderr[-3000:]  # no help text before it
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("module, program", [("agetf.convert", "make_tfrecords"),
                                             ("agetf.predict", "agetf.predict")])
@pytest.mark.slow
def test_the_other_entry_points_name_the_flagfile_line_too(tmp_path, module, program):
    flagfile = tmp_path / "bad.flags"
    flagfile.write_text("--batch_size=4\noutput_dir=out\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    result = subprocess.run([sys.executable, "-m", module, f"--flagfile={flagfile}", "face.jpg"],
                            capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"{program}: error: {flagfile} line 2: 'output_dir=out' is not a flag; "
        "write it as --output_dir=out"), result.stderr[-3000:]
    assert "USAGE" not in result.stderr and "flags:" not in result.stderr


def test_flagfiles_absl_reads_as_flags_pass_the_check(tmp_path):
    from agetf.common import flagfiles

    recipes = [os.path.join(REPO, "flags", recipe)
               for recipe in os.listdir(os.path.join(REPO, "flags"))]
    looped = tmp_path / "looped.flags"  # absl skips a flagfile that includes itself
    looped.write_text(f"// a comment\n\n--batch_size\n8\n--noexport\n--flagfile={looped}\n")
    for path in [*recipes, looped]:
        problem = flagfiles.flagfile_problem(["agetf.train", "--flagfile", str(path)], train.FLAGS)
        assert problem is None, path
    # A boolean takes no value from the next line, and the argument list ends at '--'.
    (tmp_path / "bool.flags").write_text("--noexport\nfalse\n")
    bool_flags = f"--flagfile={tmp_path / 'bool.flags'}"
    assert flagfiles.flagfile_problem(["agetf.train", bool_flags], train.FLAGS) == (
        f"{tmp_path / 'bool.flags'} line 2: 'false' is not a flag; write it as --false")
    after_dashes = ["agetf.train", "--", f"--flagfile={tmp_path / 'x'}"]
    assert flagfiles.flagfile_problem(after_dashes, train.FLAGS) is None
    nested = tmp_path / "nested.flags"
    nested.write_text(f"--flagfile={tmp_path / 'missing.flags'}\n")
    assert flagfiles.flagfile_problem(["agetf.train", f"--flagfile={nested}"], train.FLAGS) == (
        f"{nested} line 1: cannot read flagfile {tmp_path / 'missing.flags'} (No such file or "
        "directory); check the --flagfile path")


def test_flag_defaults_build_the_config_dataclasses_defaults(parse_train_flags, data_dir,
                                                             tmp_path):
    """Each default is written once, in its dataclass: a command line that sets nothing but
    the folders builds the same settings as the dataclasses' own defaults."""
    from agetf import config
    from agetf.data.input_config import InputConfig

    parse_train_flags(f"--data_dir={data_dir}", f"--model_dir={tmp_path}")
    built = train.build_config()
    for field, default in [("fine_tune", config.FineTuneConfig()),
                           ("evaluation", config.EvalConfig()),
                           ("export", config.ExportConfig()),
                           ("runtime", config.RuntimeConfig()),
                           ("schedule", config.TrainConfig.schedule)]:
        assert type(getattr(built, field)) is type(default), field
        assert getattr(built, field) == default, field
    # The finder's suggestion is used exactly when no --lr is given: a flag-level choice.
    assert dataclasses.replace(built.lr_finder, use_suggestion=False) == dataclasses.replace(
        config.LRFinderConfig(), use_suggestion=False)
    assert built.input == InputConfig(data_dir=data_dir)
    assert built.model == ModelConfig(heads=built.model.heads)
    for name in ("epochs", "batch_size", "lr", "optimizer", "momentum", "regression_loss",
                 "steps_per_epoch", "validation_steps", "checkpoint_every_steps",
                 "best_metric", "early_stopping_patience", "summary_images"):
        assert getattr(built, name) == getattr(config.TrainConfig, name), name
