"""agetf.config: typed, frozen settings that check themselves once, without TensorFlow."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from agetf import UsageError, config
from agetf.data.input_config import InputConfig
from agetf.modeling.model_config import ModelConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_configs_and_the_flags_check_import_no_tensorflow():
    # A bad flag must cost no TensorFlow start-up: building the config imports none.
    code = ("import sys\n"
            "from agetf import train\n"
            "train.FLAGS(['agetf.train', '--data_dir=d', '--model_dir=m', '--heads=age,gender',\n"
            "             '--lr_scheduler=cosine', '--warmup_epochs=1'])\n"
            "run = train.build_config()\n"
            "assert run.schedule == train.config.CosineSchedule(warmup_epochs=1), run.schedule\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_config_is_frozen_and_replace_checks_again():
    model = ModelConfig(img_dim=64, heads=("age",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.img_dim = 16
    with pytest.raises(UsageError, match="--img_dim=16 is below MobileNetV2's minimum of 32"):
        dataclasses.replace(model, img_dim=16)


@pytest.mark.parametrize("make, message", [
    (lambda: config.TrainConfig(model_dir="m", input=InputConfig("d", img_dim=64),
                                model=ModelConfig(img_dim=96)),
     "the input's img_dim (64) differs from the model's (96)"),
    (lambda: config.TrainConfig(model_dir="m", input=None, model=ModelConfig(
        heads=("age",)), schedule=config.PlateauSchedule(monitor="val_cs6")),
     "--plateau_monitor=val_cs6 is not reported for these heads; use one of loss, age_loss"),
    (lambda: config.RuntimeConfig(strategy="parameter_server"), "--strategy must be one of"),
    (lambda: config.EvalConfig(split="train"), "--eval_split=train is unknown"),
    (lambda: config.FineTuneConfig(batchnorm="sometimes"),
     "--fine_tune_batchnorm=sometimes is unknown; use one of frozen, train"),
])
def test_cross_field_rules_are_one_line_usage_errors(make, message):
    with pytest.raises(UsageError) as error:
        make()
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_logged_configuration_names_its_schedule():
    from agetf.training import distributed_trainer as trainer

    run = config.TrainConfig(model_dir="m", input=InputConfig("d", img_dim=128),
                             schedule=config.CyclicSchedule(max_lr=0.01))
    logged = trainer.config_to_json(run)
    assert logged["schedule"] == {"name": "cyclic_lr", **dataclasses.asdict(run.schedule)}
    assert json.loads(json.dumps(logged)) == logged
    assert logged["runtime"]["steps_per_loop"] == 10 and logged["model"]["heads"] == [
        "age_histogram"]
