"""Issue 4 in the real training loop: schedules, the LR finder, fine-tuning stages, loss-scale
skips, the training monitor's files and early stopping, on tiny synthetic data.

TF tracing dominates the cost, so each test builds as few Trainers as it can and most
assertions ride on one or two short runs.
"""

import csv
import dataclasses
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from agetf import config as agetf_config
from agetf import train as train_cli
from agetf.common import head_names
from agetf.config import FineTuneConfig, Stage, TrainConfig
from agetf.training import distributed_trainer as trainer_lib
from agetf.training import distribution, lr_finder, schedules, stages, train_lib

from tiny_runs import scalar_values, sha1, tiny_config


class Killed(Exception):
    """Stands in for a SIGKILL at a chosen point of `Trainer.fit`."""


def assert_monitor_files(model_dir, heads, epochs):
    """history.json, history.csv and plots/training.png hold every epoch and each head's metrics."""
    history = json.load(open(os.path.join(model_dir, "history.json")))
    with open(os.path.join(model_dir, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    assert history["epoch"] == list(range(1, epochs + 1))
    assert len(rows) == epochs
    for name in head_names.metric_names(heads):
        for key in (name, "val_" + name):
            assert len(history[key]) == epochs, key
            assert key in rows[0], key
    with open(os.path.join(model_dir, "plots", "training.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def constant_validation(trainer, value=1.0):
    """Replaces validation by fixed numbers, so no metric ever improves after epoch 1."""
    fixed = {"val_" + name: value for name in head_names.metric_names(trainer.config.model.heads)}
    trainer.evaluate = lambda split="validation": dict(fixed)


def fixed_batch_iterator(trainer):
    """One training batch repeated forever, distributed like the trainer's own data."""
    config = trainer.config
    batch = next(iter(trainer_lib.input_pipeline.build_dataset(
        config.input, "train", config.batch_size, training=True)))
    return iter(trainer.strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors(batch).repeat()))


def optimizer_lr(trainer):
    """The learning rate the optimizer last used (read from one replica under a strategy)."""
    variable = trainer.optimizer.learning_rate.value
    return float(trainer.strategy.experimental_local_results(variable)[0].numpy())


def values(variables):
    return {v.path: np.array(v.numpy()) for v in variables}


def paths(variables):
    return {v.path for v in variables}


# -- schedules in the loop ---------------------------------------------------------------


@pytest.mark.slow
def test_cyclic_lr_changes_every_step_and_continues_after_resume(data_dir, tmp_path):
    schedule = agetf_config.CyclicSchedule(base_lr=1e-4, max_lr=1e-2, half_cycle_steps=2)
    config = tiny_config(data_dir, tmp_path / "run", heads=("age",), schedule=schedule,
                         steps_per_loop=1, summary_images=0)
    formula = schedules.Cyclic(base_lr=1e-4, max_lr=1e-2, step_size=2)
    first = trainer_lib.Trainer(config)
    iterator = iter(first.train_data)
    seen = []
    for _ in range(3):
        first.train_steps(iterator, 1)
        seen.append(optimizer_lr(first))
    expected = [float(formula.learning_rate(step)) for step in range(4)]
    np.testing.assert_allclose(seen, expected[:3], rtol=1e-6)
    assert len(set(seen)) == 3  # base, half-way, max: a new value every step
    first.save_checkpoint()

    second = trainer_lib.Trainer(config)
    assert second.resumed and int(second.global_step.numpy()) == 3
    second.train_steps(iter(second.train_data), 1)
    # The fourth step is at cycle position 3, not back at position 0.
    np.testing.assert_allclose(optimizer_lr(second), expected[3], rtol=1e-6)


@pytest.mark.slow
def test_plateau_state_and_early_stopping_survive_a_resume(data_dir, tmp_path, capsys):
    # Validation is pinned to one value, so after epoch 1 nothing ever improves.
    config = tiny_config(data_dir, tmp_path / "run", heads=("age",), epochs=3, lr=1e-3,
                         schedule=agetf_config.PlateauSchedule(patience=3, factor=0.5),
                         steps_per_epoch=2, summary_images=0)
    assert config.early_stopping_patience == 0  # off by default
    first = trainer_lib.Trainer(config)
    constant_validation(first)
    history = first.fit()
    # Two epochs without improvement: below both patiences, so no reduction and no stop.
    assert history["epoch"] == [1, 2, 3]
    np.testing.assert_allclose(history["lr"], [1e-3] * 3, rtol=1e-6)
    assert int(first.schedule.wait.numpy()) == 2
    assert_monitor_files(config.model_dir, ("age",), epochs=3)

    longer = dataclasses.replace(config, epochs=6, early_stopping_patience=3, verbose=True)
    second = trainer_lib.Trainer(longer)
    assert int(second.schedule.wait.numpy()) == 2  # restored, not reset to 0
    assert float(second.schedule.best.numpy()) == 1.0
    constant_validation(second)
    capsys.readouterr()
    history = second.fit()
    out = capsys.readouterr().out
    # Epoch 4 is the third without improvement: the plateau halves the LR and training
    # stops early, both counting the epochs from before the restart.
    assert history["epoch"] == [1, 2, 3, 4]
    assert "ReduceLROnPlateau: val_loss did not improve" in out and "lr 0.001 -> 0.0005" in out
    assert "Early stopping: val_loss has not improved for 3 epochs" in out
    np.testing.assert_allclose(float(second.schedule.lr.numpy()), 5e-4)
    second.train_steps(iter(second.train_data), 1)
    np.testing.assert_allclose(optimizer_lr(second), 5e-4, rtol=1e-6)
    assert_monitor_files(config.model_dir, ("age",), epochs=4)


def test_plateau_monitor_that_is_not_reported_fails_at_start(data_dir, tmp_path):
    with pytest.raises(ValueError,
                       match="--plateau_monitor=val_gender_accuracy is not reported") as error:
        tiny_config(data_dir, tmp_path / "run", heads=("age",),
                    schedule=agetf_config.PlateauSchedule(monitor="val_gender_accuracy"))
    assert "val_mae" in str(error.value) and "\n" not in str(error.value)


def cosine_config(**fields):
    return TrainConfig(model_dir="unused", input=None,
                                   schedule=agetf_config.CosineSchedule(warmup_epochs=1,
                                                                        min_lr=0.0),
                                   **fields)


@pytest.mark.parametrize("fields, stage, asked, length", [
    (dict(epochs=1), Stage.TRAIN, "--warmup_epochs=1, 10 steps", "--epochs=1, 10 steps"),
    (dict(fine_tune=FineTuneConfig(enabled=True, head_epochs=1, fine_tune_epochs=3)),
     Stage.FROZEN_BACKBONE, "--warmup_epochs=1, 10 steps", "--head_epochs=1, 10 steps"),
])
def test_a_cosine_warmup_as_long_as_a_stage_is_halved_with_a_warning(fields, stage, asked,
                                                                      length):
    config = cosine_config(**fields)
    shortened, warning = stages.stage_schedule(config, stage, steps_per_epoch=10)
    assert warning == (f"the cosine warm-up ({asked}) is as long as stage {stage.value} "
                       f"({length}); warming up for 5 steps instead, half the stage")
    schedule = schedules.make_schedule(shortened, lr=1.0, steps_per_epoch=10, total_steps=10)
    assert schedule.warmup_steps == 5
    assert stages.check_schedules(config, steps_per_epoch=10) == [warning]  # not an error


def test_a_cosine_warmup_shorter_than_its_stage_is_kept():
    config = cosine_config(epochs=2)
    assert stages.stage_schedule(config, Stage.TRAIN, 10) == (config.schedule, None)
    assert stages.check_schedules(config, steps_per_epoch=10) == []
    # Stage 1 has 2 epochs: no warning for it; stage 2 (1 epoch) is halved.
    config = cosine_config(fine_tune=FineTuneConfig(enabled=True, head_epochs=2,
                                                                fine_tune_epochs=1))
    [warning] = stages.check_schedules(config, steps_per_epoch=10)
    assert "stage fine_tune (--fine_tune_epochs=1, 10 steps)" in warning
    # A stage of 0 epochs is never entered, so its schedule is not checked.
    config = cosine_config(fine_tune=FineTuneConfig(enabled=True, head_epochs=0,
                                                                fine_tune_epochs=2))
    assert stages.training_stages(config) == (Stage.FINE_TUNE,)
    assert stages.check_schedules(config, steps_per_epoch=10) == []


def test_the_trainer_warns_of_a_shortened_warmup_when_it_trains(data_dir, tmp_path, capsys):
    # Stage 1 (2 epochs) is long enough; stage 2 (1 epoch of 3 steps) warms up for 1 step.
    config = tiny_config(data_dir, tmp_path / "run", heads=("age",),
                         schedule=agetf_config.CosineSchedule(warmup_epochs=1), epochs=3,
                         fine_tune=FineTuneConfig(enabled=True, head_epochs=2,
                                                              fine_tune_epochs=1))
    trainer = trainer_lib.Trainer(config)
    assert [w.split(";")[0] for w in trainer.schedule_warnings] == [
        "the cosine warm-up (--warmup_epochs=1, 3 steps) is as long as stage fine_tune "
        "(--fine_tune_epochs=1, 3 steps)"]
    assert capsys.readouterr().err == ""  # said when training starts, not when built
    trainer.enter_stage(Stage.FINE_TUNE)
    assert trainer.schedule.warmup_steps == 1 and trainer.schedule.total_steps == 3


# -- fine-tuning -------------------------------------------------------------------------

HEAD_VARIABLES = {"age_histogram/kernel", "age_histogram/bias", "gender/kernel", "gender/bias"}
# MobileNetV2's default unfreeze point, block_16_, and everything after it (Conv_1); its
# convolutions have no biases, and BatchNormalization layers stay frozen.
UNFROZEN_BACKBONE = {"block_16_expand/kernel", "block_16_depthwise/kernel",
                     "block_16_project/kernel", "Conv_1/kernel"}


def backbone_variables(trainer):
    return trainer.model.get_layer("backbone").variables


def assert_only_unfrozen_trained(trainer, before, unfrozen):
    """Frozen backbone variables kept their values; the unfrozen ones got gradients and steps.

    Not "the unfrozen ones moved": with --weights=none and BatchNorm frozen at its initial
    statistics the signal fades through the backbone, gradients at block_16 are about 1e-9,
    and an Adam step at 1e-4 can fall below the weights' float32 resolution (it did, once, in
    CI). A non-zero Adam second moment proves the gradient arrived and the variable is stepped.
    """
    after = values(backbone_variables(trainer))
    for path in set(before) - unfrozen:
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)
    slots = {v.path.split("/", 1)[1]: v.numpy() for v in trainer.optimizer.variables}
    for path in unfrozen:
        assert np.any(slots[path.replace("/", "_") + "_velocity"] > 0), path


@pytest.mark.slow
def test_fine_tuning_stages_and_a_kill_in_stage_two(data_dir, tmp_path):
    fine_tune = FineTuneConfig(enabled=True, head_epochs=1, fine_tune_epochs=1,
                                           fine_tune_lr=1e-4)
    config = tiny_config(data_dir, tmp_path / "run", heads=("age_histogram", "gender"),
                         fine_tune=fine_tune, lr=1e-3, steps_per_epoch=2, steps_per_loop=1,
                         checkpoint_every_steps=1, summary_images=0)
    first = trainer_lib.Trainer(config)
    assert first.stage is Stage.FROZEN_BACKBONE
    assert paths(first.model.trainable_variables) == HEAD_VARIABLES
    stage_one_optimizer = first.optimizer
    backbone_before = values(backbone_variables(first))
    heads_before = values(first.model.trainable_variables)
    seen = {}
    real_train_steps = first.train_steps

    def train_steps_then_die(iterator, num_steps):
        if first.stage == "fine_tune":
            if not seen:  # stage 1 is over and stage 2 has not stepped yet
                seen.update(backbone=values(backbone_variables(first)),
                            heads=values(v for v in first.model.variables
                                         if v.path in HEAD_VARIABLES),
                            trainable=paths(first.model.trainable_variables),
                            optimizer=first.optimizer,
                            iterations=int(first.optimizer.iterations.numpy()),
                            lr=optimizer_lr(first))
            elif int(first.step_in_epoch.numpy()) >= 1:
                raise Killed  # after one stage-2 step, and its checkpoint
        return real_train_steps(iterator, num_steps)

    first.train_steps = train_steps_then_die
    with pytest.raises(Killed):
        first.fit()

    # Stage 1 moved the heads and nothing in the backbone, BatchNorm statistics included.
    for path, value in backbone_before.items():
        np.testing.assert_array_equal(seen["backbone"][path], value, err_msg=path)
    for path in HEAD_VARIABLES:
        assert not np.array_equal(seen["heads"][path], heads_before[path]), path
    # Stage 2: the top of the backbone and the heads, with a fresh optimizer at fine_tune_lr.
    assert seen["trainable"] == HEAD_VARIABLES | UNFROZEN_BACKBONE
    assert seen["optimizer"] is not stage_one_optimizer and seen["iterations"] == 0
    np.testing.assert_allclose(seen["lr"], 1e-4, rtol=1e-6)

    # The restarted run is in stage 2, with stage 2's optimizer state, and finishes it.
    second = trainer_lib.Trainer(config)
    assert second.stage == "fine_tune" and int(second.global_step.numpy()) == 3
    assert paths(second.model.trainable_variables) == HEAD_VARIABLES | UNFROZEN_BACKBONE
    assert int(second.optimizer.iterations.numpy()) == 1
    before = values(backbone_variables(second))
    history = second.fit()
    assert history["epoch"] == [1, 2] and int(second.global_step.numpy()) == 4
    np.testing.assert_allclose(history["lr"], [1e-3, 1e-4], rtol=1e-6)
    assert_only_unfrozen_trained(second, before, UNFROZEN_BACKBONE)
    assert_monitor_files(config.model_dir, config.model.heads, epochs=2)

    # Killed right at the stage switch: the epoch-end checkpoint resumes in stage 2 too.
    switch = os.path.join(config.model_dir, "checkpoints", "ckpt-2")
    at_switch = tmp_path / "at_switch"
    shutil.copytree(config.model_dir, at_switch)
    tf.compat.v1.train.update_checkpoint_state(str(at_switch / "checkpoints"), switch.replace(
        config.model_dir, str(at_switch)))
    third = trainer_lib.Trainer(dataclasses.replace(config, model_dir=str(at_switch)))
    assert third.stage == "fine_tune" and int(third.global_step.numpy()) == 2
    assert int(third.optimizer.iterations.numpy()) == 0


@pytest.mark.slow
def test_fine_tuning_under_mirrored_with_a_cosine_schedule_per_stage(data_dir, tmp_path):
    strategy = distribution.make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    fine_tune = FineTuneConfig(enabled=True, head_epochs=1, fine_tune_epochs=1,
                                           fine_tune_lr=1e-4, unfreeze_from="Conv_1")
    config = tiny_config(data_dir, tmp_path / "run", heads=("age_range",), fine_tune=fine_tune,
                         lr=1e-3,
                         schedule=agetf_config.CosineSchedule(warmup_steps=1, min_lr=1e-5),
                         steps_per_epoch=3, steps_per_loop=3, summary_images=0)
    trainer = trainer_lib.Trainer(config, strategy=strategy)
    before = values(backbone_variables(trainer))
    history = trainer.fit()
    assert trainer.stage == "fine_tune" and history["epoch"] == [1, 2]
    assert np.all(np.isfinite(history["loss"])) and np.all(np.isfinite(history["val_loss"]))
    # Each stage decays its own cosine to cosine_min_lr; stage 2's last step ran at half of
    # fine_tune_lr (cosine at mid-decay), so it restarted from fine_tune_lr.
    np.testing.assert_allclose(history["lr"], [1e-5, 1e-5], rtol=1e-5)
    np.testing.assert_allclose(optimizer_lr(trainer), 1e-5 + (1e-4 - 1e-5) / 2,
                               rtol=1e-5)
    assert_only_unfrozen_trained(trainer, before, {"Conv_1/kernel"})
    for variable in trainer.model.trainable_variables:
        replicas = [v.numpy() for v in strategy.experimental_local_results(variable.value)]
        np.testing.assert_array_equal(replicas[0], replicas[1])
    assert_monitor_files(config.model_dir, config.model.heads, epochs=2)


def fake_training(trainer):
    """Makes `trainer.train_steps` only count steps: the loop's stage and stop logic runs without
    a model step traced (validation is faked by constant_validation). Returns the calls."""
    calls = []

    def count_steps(iterator, num_steps):
        calls.append(trainer.stage)
        trainer.global_step.assign_add(num_steps)
        trainer.step_in_epoch.assign_add(num_steps)
        return 1.0

    trainer.train_steps = count_steps
    constant_validation(trainer)
    return calls


@pytest.mark.slow
def test_early_stopping_ends_each_stage_and_a_stopped_run_stays_stopped(data_dir, tmp_path,
                                                                        capsys):
    fine_tune = FineTuneConfig(enabled=True, head_epochs=4, fine_tune_epochs=3,
                                           unfreeze_from="")
    config = tiny_config(data_dir, tmp_path / "run", heads=("age",), fine_tune=fine_tune,
                         early_stopping_patience=1, steps_per_epoch=2, summary_images=0,
                         verbose=True)
    first = trainer_lib.Trainer(config)
    calls = fake_training(first)
    capsys.readouterr()
    history = first.fit()
    out = capsys.readouterr().out
    # Validation never improves after a stage's first epoch, and the patience is 1 epoch:
    # stage 1 stops after epoch 2 of 4, stage 2 starts at once and counts afresh (a count
    # carried over would stop it after epoch 3), then stops the run after its own epoch 2.
    assert history["epoch"] == [1, 2, 3, 4]
    assert calls == ["frozen_backbone", "frozen_backbone", "fine_tune", "fine_tune"]
    assert int(first.fine_tune_start_epoch.numpy()) == 2 and first.total_epochs == 5
    assert ("Early stopping: val_loss has not improved for 1 epochs in stage frozen_backbone (best "
            "1): stage frozen_backbone ends; stage fine_tune begins with a fresh patience "
            "count") in out
    assert ("Stage fine_tune: unfreezing the whole backbone (--unfreeze_from=''), BatchNorm "
            "layers kept frozen") in out
    assert "in stage fine_tune (best 1): the run ends" in out
    assert {"Conv1/kernel", "Conv_1/kernel"} <= paths(first.model.trainable_variables)

    # The same command again: stage 2 restored from the checkpoint, and nothing trained.
    second = trainer_lib.Trainer(config)
    calls = fake_training(second)
    assert second.stage == "fine_tune" and int(second.fine_tune_start_epoch.numpy()) == 2
    capsys.readouterr()
    history = second.fit()
    assert calls == [] and history["epoch"] == [1, 2, 3, 4]
    assert int(second.global_step.numpy()) == 8
    assert ("Nothing to train: early stopping ended this run after epoch 4: val_loss has not "
            "improved for 1 epochs in stage fine_tune") in capsys.readouterr().out


def test_heads_only_run_ends_in_stage_one_and_a_rerun_enters_no_empty_stage(data_dir, tmp_path):
    # --fine_tuning --fine_tune_epochs=0: the older project's stage 1 alone. A cosine warm-up
    # longer than an empty stage 2 must not stop the run at its end, nor its rerun.
    fine_tune = FineTuneConfig(enabled=True, head_epochs=2, fine_tune_epochs=0)
    config = tiny_config(data_dir, tmp_path / "run", heads=("age",), fine_tune=fine_tune,
                         schedule=agetf_config.CosineSchedule(warmup_epochs=1),
                         steps_per_epoch=2, summary_images=0)
    first = trainer_lib.Trainer(config)
    calls = fake_training(first)
    history = first.fit()
    assert calls == ["frozen_backbone", "frozen_backbone"] and history["epoch"] == [1, 2]
    assert first.stage == "frozen_backbone" and first.total_epochs == 2

    second = trainer_lib.Trainer(config)
    calls = fake_training(second)
    assert second.stage == "frozen_backbone" and second.resumed
    assert second.fit()["epoch"] == [1, 2] and calls == []

    # More --fine_tune_epochs continue it into stage 2, from a checkpoint whose optimizer
    # trained the heads alone: the weights come back, the optimizer starts fresh.
    longer = dataclasses.replace(config, fine_tune=dataclasses.replace(fine_tune,
                                                                       fine_tune_epochs=1))
    third = trainer_lib.Trainer(longer)
    assert third.stage == "fine_tune" and third.resumed
    assert int(third.global_step.numpy()) == 4 == int(third.stage_start_step.numpy())
    for saved, restored in zip(first.model.weights, third.model.weights):
        np.testing.assert_array_equal(saved.numpy(), restored.numpy())
    calls = fake_training(third)
    assert third.fit()["epoch"] == [1, 2, 3] and calls == ["fine_tune"]


@pytest.mark.parametrize("unfreeze_from, schedule, expected", [
    (None, schedules.Constant(1e-4),
     "unfreezing the backbone from its first layer named block_16_* (the default), BatchNorm "
     "layers kept frozen; fresh optimizer; lr 0.0001 (constant)"),
    ("Conv_1", schedules.Constant(1e-4), "from its first layer named Conv_1*, BatchNorm"),
    ("", schedules.Constant(1e-4), "unfreezing the whole backbone (--unfreeze_from='')"),
    ("", schedules.Cyclic(base_lr=1e-4, max_lr=0.1),
     "lr cycling 0.0001..0.1 (cyclic_lr ignores --fine_tune_lr)"),
])
def test_stage_two_log_says_what_is_unfrozen_and_the_lr(unfreeze_from, schedule, expected):
    config = _fine_tune_config(unfreeze_from, schedule)
    line = stages.describe_fine_tune_stage(config, schedule)
    assert line.startswith("Stage fine_tune: ") and expected in line
    if isinstance(schedule, schedules.Cyclic):
        assert "0.0001 (" not in line  # no --fine_tune_lr where it is not used


def test_stage_two_log_says_when_batchnorm_trains():
    config = _fine_tune_config("", schedules.Constant(1e-4), batchnorm="train")
    line = stages.describe_fine_tune_stage(config, schedules.Constant(1e-4))
    assert ("unfreezing the whole backbone (--unfreeze_from=''), its BatchNorm layers training "
            "(--fine_tune_batchnorm=train); fresh optimizer") in line


def _fine_tune_config(unfreeze_from, schedule, batchnorm="frozen"):
    return TrainConfig(
        model_dir="unused", input=None,
        schedule=(agetf_config.CyclicSchedule() if isinstance(schedule, schedules.Cyclic)
                  else agetf_config.ConstantSchedule()),
        fine_tune=FineTuneConfig(enabled=True, unfreeze_from=unfreeze_from,
                                             batchnorm=batchnorm))


# -- mixed precision ---------------------------------------------------------------------


@pytest.fixture
def restore_float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.slow
def test_loss_scale_overflow_skips_a_step_without_stopping(data_dir, tmp_path,
                                                           restore_float32_policy):
    config = tiny_config(data_dir, tmp_path / "run", heads=("age",),
                         mixed_precision="mixed_float16",
                         summary_images=0)
    trainer = trainer_lib.Trainer(config)
    assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    # A scale this large overflows the float16 gradients of the backbone, as a too-high
    # dynamic scale does in real runs; the optimizer must skip the step and halve the scale.
    trainer.optimizer.dynamic_scale.assign(2.0 ** 60)
    weights = values(trainer.model.trainable_variables)
    loss = trainer.train_steps(iter(trainer.train_data), 1)  # no NonFiniteLossError
    assert np.isfinite(loss)
    assert float(trainer.optimizer.dynamic_scale.numpy()) == 2.0 ** 59
    for path, value in weights.items():
        np.testing.assert_array_equal(value, values(trainer.model.trainable_variables)[path])


# -- the LR finder, through the train command's code --------------------------------------



@pytest.mark.slow
def test_lr_auto_runs_the_finder_and_trains_with_its_suggestion(
        data_dir, tmp_path, parse_train_flags, monkeypatch, capsys):
    model_dir = tmp_path / "run"
    argv = [f"--data_dir={data_dir}", f"--model_dir={model_dir}", "--img_dim=32",
            "--alpha=0.35", "--weights=none", "--batch_size=16", "--steps_per_epoch=3",
            "--epochs=2", "--steps_per_loop=3", "--batchnorm_momentum=0.9", "--summary_images=0",
            "--mixed_precision=float32", "--strategy=default", "--seed=1",
            "--heads=age_histogram", "--lr=auto", "--lr_find_min=1e-5",
            "--lr_find_max=1", "--lr_find_steps=48",
            "--noaugment"]  # the step augments: a fixed batch stays fixed only without
    parse_train_flags(*argv)
    restored = []
    real_find_lr = lr_finder.find_lr

    def find_lr_checking_restore(trainer, test):
        state = list(trainer.model.variables) + list(trainer.optimizer.variables)
        before = [np.array(v.numpy()) for v in state]
        result = real_find_lr(trainer, test)
        restored.append(all(np.array_equal(b, v.numpy()) for b, v in zip(before, state)))
        return result

    monkeypatch.setattr(lr_finder, "find_lr", find_lr_checking_restore)
    trainer = train_lib.train(train_cli.build_config())
    out = capsys.readouterr().out

    assert restored == [True]  # weights and optimizer put back after the range test
    found = json.load(open(model_dir / "lr_find.json"))
    suggestion = found["suggestion"]
    assert 1e-5 <= suggestion <= 1 and len(found["lrs"]) >= lr_finder.MIN_POINTS_FOR_SUGGESTION
    assert f"suggested learning rate {suggestion:.3g}" in out
    with open(model_dir / "plots" / "lr_find.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # lr_find.json's curve is the one TensorBoard shows, finite, one point a step, and what
    # the settings make of it: a geometric LR ramp and the bias-corrected smoothed loss.
    events = event_accumulator.EventAccumulator(str(model_dir / "logs" / "lr_find"),
                                                size_guidance={"tensors": 0})
    events.Reload()
    scalars = scalar_values(events)
    for tag, key in (("lr_find/learning_rate", "lrs"), ("lr_find/loss", "losses"),
                     ("lr_find/smoothed_loss", "smoothed")):
        assert np.all(np.isfinite(scalars[tag])), tag
        np.testing.assert_allclose(scalars[tag], found[key], rtol=1e-6, err_msg=tag)
    settings = found["settings"]
    ramp = lr_finder.LRRangeTest(settings["min_lr"], settings["max_lr"], settings["num_steps"])
    np.testing.assert_allclose(found["lrs"], [ramp.lr_at(i) for i in range(len(found["lrs"]))],
                               rtol=1e-9)
    np.testing.assert_allclose(found["smoothed"], lr_finder._moving_average(
        found["losses"], settings["beta"]), rtol=1e-9)
    # The suggestion lies on the falling part of the curve, below the LR of the lowest
    # smoothed loss, where the tail that blows up starts.
    assert suggestion < found["lrs"][int(np.argmin(found["smoothed"]))]
    # The run trains at the suggestion, and at that rate the loss falls: on a fixed batch,
    # since three steps an epoch of fresh batches are too noisy to show it. How far it falls
    # depends on where the suggestion lands, which the CPU's rounding moves: in 20 steps, to
    # 0.23-0.44 of the first loss here over seeds 1-7, but once on CI only to 0.94. So it has
    # 40 steps, and only has to fall.
    assert trainer.config.lr == suggestion
    history = json.load(open(model_dir / "history.json"))
    np.testing.assert_allclose(history["lr"], [suggestion] * 2, rtol=1e-6)
    assert_monitor_files(str(model_dir), ("age_histogram",), epochs=2)
    iterator = fixed_batch_iterator(trainer)
    first = trainer.train_steps(iterator, 1)
    trainer.train_steps(iterator, 40)
    last = trainer.train_steps(iterator, 1)
    assert last < first

    # The same command again resumes the finished run with the same LR: the suggestion in
    # lr_find.json, the finder not rerun on the trained weights. (The first run is over: its
    # process would have exited and freed model_dir's run lock; here it is released by hand.)
    trainer.run_lock.release()
    again = train_lib.train(train_cli.build_config())
    out = capsys.readouterr().out
    assert restored == [True]  # no second range test
    assert (f"Resuming with the learning rate the LR finder suggested when this run began, "
            f"{suggestion:.3g}") in out and "LR finder:" not in out
    assert again.resumed and again.config.lr == suggestion
    np.testing.assert_allclose(again.learning_rate(), suggestion, rtol=1e-6)  # its next step's
    assert json.load(open(model_dir / "lr_find.json")) == found

    # Without lr_find.json a resume cannot know its LR: one line that says what to do.
    os.remove(model_dir / "lr_find.json")
    with pytest.raises(train_cli.UsageError,
                       match=r"lr_find.json is missing or unreadable.*--lr=NUMBER") as error:
        train_lib.train(train_cli.build_config())
    assert "\n" not in str(error.value) and restored == [True]


def test_plateau_on_an_accuracy_waits_for_it_to_rise(data_dir, tmp_path, parse_train_flags):
    parse_train_flags(f"--data_dir={data_dir}", f"--model_dir={tmp_path}", "--predict_gender",
                      "--lr_scheduler=reduce_lr_on_plateau",
                      "--plateau_monitor=val_gender_accuracy",
                      "--plateau_patience=1")
    config = train_cli.build_config()
    schedule = schedules.make_schedule(config.schedule, lr=1.0, steps_per_epoch=1, total_steps=1)
    schedule.on_epoch_end(0, {"val_gender_accuracy": 0.6})
    assert schedule.on_epoch_end(1, {"val_gender_accuracy": 0.7}) is None  # a rise: no cut
    assert schedule.on_epoch_end(2, {"val_gender_accuracy": 0.65}) is not None


@pytest.mark.slow
def test_finder_plateau_early_stop_and_nan_stop_under_mirrored(data_dir, tmp_path, capsys):
    strategy = distribution.make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    config = tiny_config(data_dir, tmp_path / "run", heads=("age_histogram",), epochs=5,
                         schedule=agetf_config.PlateauSchedule(patience=1, factor=0.5),
                         early_stopping_patience=2, steps_per_epoch=2, summary_images=0,
                         verbose=True)
    # The LR range test on two replicas records a finite curve inside its range.
    lr_finder.run_lr_finder(config, min_lr=1e-5, max_lr=1.0, steps=12, strategy=strategy)
    found = json.load(open(tmp_path / "run" / "lr_find.json"))
    assert found["lrs"] and np.all(np.isfinite(found["losses"]))
    assert 1e-5 <= min(found["lrs"]) <= max(found["lrs"]) <= 1.0

    trainer = trainer_lib.Trainer(config, strategy=strategy)
    constant_validation(trainer)
    capsys.readouterr()
    history = trainer.fit()
    out = capsys.readouterr().out
    # Epoch 2 is the first without improvement (plateau, patience 1: halve); epoch 3 the
    # second (early stopping, patience 2: stop before epoch 4).
    assert history["epoch"] == [1, 2, 3]
    assert "ReduceLROnPlateau" in out and "Early stopping" in out
    assert float(trainer.schedule.lr.numpy()) < config.lr
    # A non-finite loss under two replicas stops the loop with the epoch and step named, and
    # leaves the last good checkpoint and best.keras as they were.
    model_dir = tmp_path / "run"
    best_before = sha1(model_dir / "best.keras")
    latest_before = tf.train.latest_checkpoint(str(model_dir / "checkpoints"))
    assert latest_before.endswith("ckpt-6")  # the end of epoch 3
    trainer.config = dataclasses.replace(config, early_stopping_patience=0)  # train on
    trainer.schedule.lr.assign(1e30)
    with pytest.raises(trainer_lib.NonFiniteLossError,
                       match=r"non-finite loss .* at epoch 4, step \d.*The last good checkpoint, "
                             r".*ckpt-6, and best.keras are intact"):
        trainer.fit()
    assert sha1(model_dir / "best.keras") == best_before
    assert tf.train.latest_checkpoint(str(model_dir / "checkpoints")) == latest_before
    assert json.load(open(model_dir / "history.json"))["epoch"] == [1, 2, 3]
