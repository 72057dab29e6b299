"""The training loop end to end on tiny synthetic data: files, TensorBoard, resume, strategies."""

import dataclasses
import json
import os
import re
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata

from agetf import config as config_lib
from agetf.config import FineTuneConfig
from agetf.data import input_pipeline, labels
from agetf.data.input_config import NO_AUGMENTATION
from agetf.evaluation import evaluator
from agetf.training import distributed_trainer as trainer_lib
from agetf.training import distribution

from tiny_runs import calibrate_batchnorm, scalar_values, sha1, tiny_config, train  # noqa: E501


@pytest.fixture(scope="session")
def trained_run(data_dir, tmp_path_factory):
    """Two epochs of all four heads; shared by the tests that only read what a run leaves."""
    model_dir = tmp_path_factory.mktemp("run") / "all_heads"
    config = tiny_config(data_dir, model_dir)
    trainer, history = train(config)
    return config, trainer, history


@pytest.mark.slow
def test_one_step_per_call_trains_as_the_loop_of_several_does(data_dir, tmp_path):
    """With --steps_per_loop=1 a host call runs a function without the tf.range loop; three
    such calls must take the same steps as one call of three (the loop): same weights,
    counters and metrics. SGD without momentum, so the state to rewind is the weights and
    the counters; no dropout, and the step's augmentation is seeded by the global step."""
    config = tiny_config(data_dir, tmp_path / "run", heads=("age_histogram", "gender"),
                         optimizer="sgd", lr=0.05, momentum=0.0, summary_images=0,
                         steps_per_loop=1)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, dropout=0.0))
    trainer = trainer_lib.Trainer(config)
    batches = list(input_pipeline.build_dataset(config.input, "train", config.batch_size,
                                                training=True).take(3))
    stacked = tf.nest.map_structure(lambda *parts: tf.stack(parts), *batches)
    data = trainer.strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(stacked))
    initial = trainer.model.get_weights()
    results = []
    for calls in ([1, 1, 1], [3]):
        trainer.model.set_weights(initial)
        trainer.global_step.assign(0)
        trainer.step_in_epoch.assign(0)
        trainer.train_metrics.reset()
        iterator = iter(data)
        losses = [trainer.train_steps(iterator, n) for n in calls]
        results.append((losses[-1], trainer.model.get_weights(),
                        int(trainer.global_step.numpy()), int(trainer.step_in_epoch.numpy()),
                        trainer.train_metrics.results()))
    (loss_one, weights_one, step_one, in_epoch_one, metrics_one), (
        loss_loop, weights_loop, step_loop, in_epoch_loop, metrics_loop) = results
    compiled = trainer._train_loop.compiled  # each path was traced once and taken
    assert [compiled[name].experimental_get_tracing_count()
            for name in ("one_step", "loop")] == [1, 1]
    assert step_one == step_loop == in_epoch_one == in_epoch_loop == 3
    assert loss_one == pytest.approx(loss_loop, rel=1e-5)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(weights_one, initial))
    assert moved > 1e-4, "the steps must move the weights"
    for one, loop in zip(weights_one, weights_loop):
        np.testing.assert_allclose(one, loop, rtol=1e-4, atol=1e-6)
    assert metrics_one.keys() == metrics_loop.keys()
    for name, value in metrics_one.items():
        assert value == pytest.approx(metrics_loop[name], rel=1e-4, abs=1e-6), name


@pytest.mark.slow
def test_run_leaves_its_files(trained_run):
    config, trainer, history = trained_run
    model_dir = config.model_dir
    for name in ("best.keras", "final.keras", "history.json", "history.csv", "run.json",
                 "plots/training.png"):
        assert os.path.exists(os.path.join(model_dir, name)), name
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    assert history["epoch"] == [1, 2]
    for key in ("loss", "val_loss", "mae", "val_mae", "cs5", "val_age_range_accuracy",
                "val_gender_accuracy", "age_histogram_mae", "age_mae", "lr"):
        assert len(history[key]) == 2 and np.all(np.isfinite(history[key])), key
    saved = json.load(open(os.path.join(model_dir, "history.json")))
    assert saved["val_loss"] == history["val_loss"]
    assert int(trainer.global_step.numpy()) == 2 * config.steps_per_epoch
    # No temporary files survive a clean run.
    assert not [f for f in os.listdir(model_dir) if ".tmp" in f]


@pytest.mark.slow
def test_training_fits_a_fixed_batch(data_dir, tmp_path):
    # The loop's gradient path, isolated from data noise: one repeated batch must be learned.
    config = tiny_config(data_dir, tmp_path / "run", heads=("age_histogram", "gender"), lr=3e-3,
                         summary_images=0)
    # The step augments, so a fixed batch stays fixed only without augmentation.
    config = dataclasses.replace(config, input=dataclasses.replace(
        config.input, augment=NO_AUGMENTATION))
    trainer = trainer_lib.Trainer(config)
    batch = next(iter(input_pipeline.build_dataset(config.input, "train", 16, training=True)))
    fixed = trainer.strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors(batch).repeat())
    iterator = iter(fixed)
    first = trainer.train_steps(iterator, 1)
    trainer.train_steps(iterator, 25)
    last = trainer.train_steps(iterator, 1)
    assert last < 0.5 * first


def test_tensorboard_logs_losses_metrics_lr_speed_and_faces(trained_run):
    config = trained_run[0]
    logs = os.path.join(config.model_dir, "logs")
    train_acc = event_accumulator.EventAccumulator(os.path.join(logs, "train"),
                                                   size_guidance={"tensors": 0})
    val_acc = event_accumulator.EventAccumulator(os.path.join(logs, "validation"),
                                                 size_guidance={"tensors": 0})
    train_acc.Reload()
    val_acc.Reload()
    train_scalars, val_scalars = scalar_values(train_acc), scalar_values(val_acc)
    for tag in ("batch/loss", "learning_rate", "images_per_sec", "step_time_ms", "epoch/loss",
                "epoch/age_histogram_loss", "epoch/mae", "epoch/cs5", "epoch/gender_accuracy",
                "epoch/age_range_accuracy"):
        assert tag in train_scalars and train_scalars[tag], tag
        assert np.all(np.isfinite(train_scalars[tag])), tag
    history = trained_run[2]
    per_head_losses = [f"epoch/{head}_loss" for head in config.model.heads]
    for tag in ["epoch/loss", "epoch/mae", "epoch/cs5", "epoch/gender_accuracy",
                "epoch/age_range_accuracy"] + per_head_losses:
        assert len(val_scalars[tag]) == 2 and np.all(np.isfinite(val_scalars[tag])), tag
        # The same numbers as history.json's val_ columns (float32 in the event file).
        np.testing.assert_allclose(val_scalars[tag], history["val_" + tag.removeprefix("epoch/")],
                                   rtol=1e-6, err_msg=tag)
    for tag in per_head_losses:
        assert len(train_scalars[tag]) == 2, tag
        np.testing.assert_allclose(train_scalars[tag], history[tag.removeprefix("epoch/")],
                                   rtol=1e-6, err_msg=tag)
    for tag in ("epoch/cs5", "epoch/age_range_accuracy", "epoch/gender_accuracy"):
        assert all(0.0 <= v <= 1.0 for v in val_scalars[tag]), tag

    # One grid of validation faces per epoch, at each epoch's last step.
    assert val_acc.SummaryMetadata("faces").plugin_data.plugin_name == "images"
    faces = val_acc.Tensors("faces")
    assert [event.step for event in faces] == [config.steps_per_epoch, 2 * config.steps_per_epoch]

    # The run's actual hyperparameters, not just some hparams data.
    (content,) = train_acc.PluginTagToContent("hparams").values()
    session = hparams_metadata.parse_session_start_info_plugin_data(content)
    hparams = {name: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
               for name, value in session.hparams.items()}
    assert hparams["backbone"] == "MobileNetV2"
    assert hparams["heads"] == ",".join(config.model.heads)
    assert hparams["lr"] == pytest.approx(config.lr)
    assert hparams["img_dim"] == config.model.img_dim
    assert hparams["batch_size"] == config.batch_size
    assert hparams["alpha"] == pytest.approx(0.35)
    assert hparams["epochs"] == 2


def assert_best_keras_is_the_best_epoch(model_dir, history, best_model, metric="val_loss"):
    """best.keras (loaded as `best_model`) holds the weights of the epoch with the best
    `metric` in history, and of no other epoch; each epoch's checkpoint has that epoch's.
    Restores the checkpoints into `best_model`, so call it last."""
    best_epoch = int(np.nanargmin(history[metric])) + 1
    best_weights = [w.numpy() for w in best_model.weights]
    state = tf.train.get_checkpoint_state(os.path.join(model_dir, "checkpoints"))
    by_epoch = {int(tf.train.load_variable(path, "epoch/.ATTRIBUTES/VARIABLE_VALUE")): path
                for path in state.all_model_checkpoint_paths}
    assert sorted(by_epoch) == history["epoch"]
    for epoch, path in by_epoch.items():
        tf.train.Checkpoint(model=best_model).restore(path).expect_partial() \
            .assert_existing_objects_matched()
        same = all(np.array_equal(a, b.numpy()) for a, b in zip(best_weights, best_model.weights))
        assert same == (epoch == best_epoch), (epoch, best_epoch, history[metric])


def test_best_keras_holds_the_weights_of_the_best_validation_epoch(trained_run):
    config, _, history = trained_run
    assert config.best_metric == "val_loss"
    best = keras.saving.load_model(os.path.join(config.model_dir, "best.keras"), safe_mode=True)
    assert_best_keras_is_the_best_epoch(config.model_dir, history, best)


@pytest.mark.slow
def test_rerun_with_more_epochs_resumes(trained_run, tmp_path):
    config = trained_run[0]
    model_dir = tmp_path / "resumed"
    shutil.copytree(config.model_dir, model_dir)
    more = tiny_config(config.input.data_dir, model_dir, epochs=3)
    trainer, history = train(more)
    assert trainer.resumed
    assert history["epoch"] == [1, 2, 3]
    assert int(trainer.global_step.numpy()) == 3 * more.steps_per_epoch
    # The first two epochs are the original run's, untouched.
    assert history["val_loss"][:2] == trained_run[2]["val_loss"]


@pytest.mark.slow
def test_mid_epoch_checkpoint_resumes_at_the_same_step(data_dir, tmp_path):
    config = tiny_config(data_dir, tmp_path / "run", heads=("age",), summary_images=0)
    first = trainer_lib.Trainer(config)
    first.train_steps(iter(first.train_data), 2)
    first.save_checkpoint()
    weights = [w.numpy() for w in first.model.weights]
    second = trainer_lib.Trainer(config)
    assert second.resumed
    assert (int(second.epoch.numpy()), int(second.step_in_epoch.numpy()),
            int(second.global_step.numpy())) == (0, 2, 2)
    for before, after in zip(weights, second.model.weights):
        np.testing.assert_array_equal(before, after.numpy())
    # Finishing the run continues from step 2, not from zero.
    history = second.fit()
    assert history["epoch"] == [1, 2] and int(second.global_step.numpy()) == 6


def test_refuses_a_model_dir_of_another_model(trained_run):
    config = trained_run[0]
    other = tiny_config(config.input.data_dir, config.model_dir, img_dim=48)
    with pytest.raises(ValueError, match="img_dim: 32 in model_dir, 48 now"):
        trainer_lib.Trainer(other)


@pytest.mark.slow
@pytest.mark.parametrize("heads", [("age_range", "gender"), ("age",), ("gender",)])
def test_each_head_combination_trains_resumes_and_evaluates(data_dir, tmp_path, heads):
    config = tiny_config(data_dir, tmp_path / "run", heads=heads, epochs=1, summary_images=2)
    trainer, history = train(config)
    assert np.isfinite(history["val_loss"][0])
    expected = {"gender": "val_gender_accuracy", "age": "val_mae",
                "age_range": "val_age_range_accuracy"}
    for head in heads:
        assert expected[head] in history
    # A rerun with one more epoch resumes instead of starting over.
    resumed, history = train(tiny_config(data_dir, tmp_path / "run", heads=heads, epochs=2,
                                         summary_images=2))
    assert resumed.resumed and history["epoch"] == [1, 2]
    model = keras.saving.load_model(os.path.join(config.model_dir, "best.keras"), safe_mode=True)
    report, lines = evaluator.evaluate(model, config.input, "test", batch_size=16,
                                        print_predictions=1)
    assert report["num_images"] == input_pipeline.num_examples(data_dir, "test")
    wanted = {"gender": "gender_accuracy", "age": "mae", "age_range": "age_range_accuracy"}
    assert {wanted[h] for h in heads} <= set(report["metrics"])
    assert_prediction_lines(lines, heads)
    assert_summary_table(report, heads)
    # Across the resume too; for gender alone the first epoch's val_loss was the lower one.
    assert_best_keras_is_the_best_epoch(config.model_dir, history, model)


def assert_prediction_lines(lines, heads):
    """The older project's lines for one image: name, age, range (range mode), gender."""
    has_age = any(h in heads for h in ("age_histogram", "age_range", "age"))
    assert len(lines) == 1 + has_age + ("age_range" in heads) + ("gender" in heads), lines
    assert re.fullmatch(r"Predicting for image \S+\.jpg", lines[0]), lines[0]
    file_labels = os.path.basename(lines[0].split()[-1]).split("_")  # UTKFace: age_gender_...
    rest = lines[1:]
    if has_age:
        match = re.fullmatch(r"Predicted age: (\d+\.\d), true age: (\d+)", rest.pop(0))
        assert match, lines
        true_age = int(match.group(2))
        assert true_age == int(file_labels[0])
    if "age_range" in heads:
        names = "|".join(re.escape(name) for name in labels.AGE_RANGE_NAMES)
        match = re.fullmatch(rf"Predicted range: ({names}), true range: ({names})", rest.pop(0))
        assert match, lines
        assert match.group(2) == labels.AGE_RANGE_NAMES[int(labels.age_range(true_age))]
    if "gender" in heads:
        match = re.fullmatch(r"Predicted gender: (male|female), true gender: (male|female)",
                             rest.pop(0))
        assert match, lines
        assert match.group(2) == labels.GENDER_NAMES[int(file_labels[1])]


def assert_summary_table(report, heads):
    """The printed table's rows carry the report's numbers: metric, model, constant predictor."""
    rows = {line.split()[0]: line.split()[1:] for line in
            evaluator.format_report(report).splitlines()[2:] if len(line.split()) == 3}
    names = (["mae", "cs5"] if any(h != "gender" for h in heads) else []) + [
        {"age_range": "age_range_accuracy", "gender": "gender_accuracy"}[h]
        for h in heads if h in ("age_range", "gender")]
    assert [name for name in rows if name in names] == names, rows
    for name in names:
        model, constant = map(float, rows[name])
        assert model == pytest.approx(report["metrics"][name], abs=5e-4), name
        assert constant == pytest.approx(report["constant_baseline"][name], abs=5e-4), name
    if "mae" not in names:
        assert "mae" not in rows and "cs5" not in rows


@pytest.mark.slow
def test_xla_compiled_steps_train(data_dir, tmp_path):
    config = tiny_config(data_dir, tmp_path / "run", heads=("age_histogram", "gender"),
                         jit_compile=True, summary_images=0)
    trainer = trainer_lib.Trainer(config)
    iterator = iter(trainer.train_data)
    before = [w.numpy() for w in trainer.model.trainable_weights]
    loss = trainer.train_steps(iterator, 2)
    assert np.isfinite(loss)
    after = [w.numpy() for w in trainer.model.trainable_weights]
    assert any(not np.array_equal(b, a) for b, a in zip(before, after))


@pytest.mark.slow
def test_mirrored_on_two_cpus_keeps_replicas_identical_and_resumes_a_cycle(data_dir, tmp_path):
    from agetf.training import schedules

    strategy = distribution.make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    config = tiny_config(data_dir, tmp_path / "run", heads=("age_histogram", "gender"), epochs=1,
                         summary_images=2,
                         schedule=config_lib.CyclicSchedule(base_lr=1e-4, max_lr=1e-2,
                                                            half_cycle_steps=2))
    trainer, history = train(config, strategy=strategy)
    assert np.isfinite(history["loss"][0]) and np.isfinite(history["val_loss"][0])
    for variable in trainer.model.trainable_variables:
        mirrored = variable.value  # the tf.distribute variable behind the Keras one
        values = [v.numpy() for v in strategy.experimental_local_results(mirrored)]
        assert len(values) == 2
        np.testing.assert_array_equal(values[0], values[1])
    # The cycle's position is in the checkpoint: resumed on two replicas after 3 steps, the
    # next step's LR is the cycle's at step 3 (half-way down), not its start.
    cycle = schedules.Cyclic(base_lr=1e-4, max_lr=1e-2, step_size=2)
    at_step_3 = float(cycle.learning_rate(3))
    np.testing.assert_allclose([at_step_3, float(cycle.learning_rate(0))], [5.05e-3, 1e-4])
    np.testing.assert_allclose(history["lr"], [at_step_3], rtol=1e-6)
    resumed = trainer_lib.Trainer(config, strategy=strategy)
    assert resumed.resumed and int(resumed.global_step.numpy()) == 3
    np.testing.assert_allclose(resumed.learning_rate(), at_step_3, rtol=1e-6)


@pytest.mark.slow
def test_one_device_and_two_replicas_take_the_same_step_on_the_same_global_batch(data_dir,
                                                                                  tmp_path):
    """The loss is averaged over the global batch, not each replica's half: in stage 1 of
    fine-tuning (BatchNorm in inference mode), without dropout or augmentation, the step is
    the same function of the batch on one device and on two, so loss and update agree. SGD,
    since Adam's first step hardly depends on the gradient's scale."""
    batch = None
    results = {}
    for name in ("default", "mirrored"):
        config = tiny_config(data_dir, tmp_path / name, heads=("age_histogram", "gender"),
                             optimizer="sgd", lr=0.5, momentum=0.0,
                             fine_tune=FineTuneConfig(enabled=True, head_epochs=1,
                                                                  fine_tune_epochs=1))
        config = dataclasses.replace(
            config, model=dataclasses.replace(config.model, dropout=0.0),
            input=dataclasses.replace(config.input, augment=NO_AUGMENTATION))
        strategy = distribution.make_strategy(name)
        trainer = trainer_lib.Trainer(config, strategy=strategy)
        assert trainer.stage == "frozen_backbone"
        if batch is None:
            batch = next(iter(input_pipeline.build_dataset(config.input, "train",
                                                           config.batch_size, training=True)))
            # Untrained BatchNorm in inference mode gives ~0 features, so no kernel gradient;
            # a frozen BatchNorm ignores training=True, so it is unfrozen to calibrate it.
            backbone = trainer.model.get_layer("backbone")
            backbone.trainable = True
            calibrate_batchnorm(trainer.model, np.random.default_rng(2).uniform(
                0, 255, (16, 32, 32, 3)).astype("float32"))
            backbone.trainable = False
            initial = trainer.model.get_weights()
        else:
            trainer.model.set_weights(initial)
        before = [v.numpy() for v in trainer.model.trainable_variables]
        data = strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensors(batch).repeat())
        loss = trainer.train_steps(iter(data), 1)
        after = [v.numpy() for v in trainer.model.trainable_variables]
        results[name] = loss, [a - b for a, b in zip(after, before)]
    (loss_one, step_one), (loss_two, step_two) = results["default"], results["mirrored"]
    assert loss_two == pytest.approx(loss_one, rel=1e-5)
    assert len(step_one) == len(step_two) == 4  # the two heads' kernels and biases
    assert min(float(np.abs(d).max()) for d in step_one) > 1e-4, "the step must move each head"
    for one, two in zip(step_one, step_two):
        np.testing.assert_allclose(two, one, rtol=1e-3, atol=1e-6)


def test_batch_that_does_not_divide_across_replicas_is_refused(data_dir, tmp_path):
    strategy = distribution.make_strategy("mirrored")
    config = tiny_config(data_dir, tmp_path / "run", batch_size=15)
    with pytest.raises(ValueError, match="does not divide across 2 replicas"):
        trainer_lib.Trainer(config, strategy=strategy)


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_state(trained_run, tmp_path):
    config = trained_run[0]
    model_dir = tmp_path / "nan"
    shutil.copytree(config.model_dir, model_dir)
    best_before = sha1(model_dir / "best.keras")
    latest_before = tf.train.latest_checkpoint(str(model_dir / "checkpoints"))
    exploding = tiny_config(config.input.data_dir, model_dir, epochs=3, lr=1e30)
    with pytest.raises(trainer_lib.NonFiniteLossError, match=r"at epoch 3, step \d"):
        train(exploding)
    assert sha1(model_dir / "best.keras") == best_before
    assert tf.train.latest_checkpoint(str(model_dir / "checkpoints")) == latest_before


def test_resuming_with_another_optimizer_is_refused(trained_run, tmp_path):
    config = trained_run[0]
    model_dir = tmp_path / "sgd"
    shutil.copytree(config.model_dir, model_dir)
    with pytest.raises(ValueError, match="does not fit this run.*flags.txt"):
        trainer_lib.Trainer(tiny_config(config.input.data_dir, model_dir, optimizer="sgd"))


@pytest.mark.slow
def test_a_run_from_python_needs_no_flags_and_returns_its_report(data_dir, tmp_path):
    """docs/training.md's notebook use: train_lib.run(config) trains, evaluates and reports."""
    from agetf.training import train_lib

    run = tiny_config(data_dir, tmp_path / "run", heads=("age_histogram", "gender"), epochs=1,
                      summary_images=0, export=config_lib.ExportConfig(saved_model=False),
                      evaluation=config_lib.EvalConfig(print_predictions=0))
    report = train_lib.run(run)
    metrics = report["metrics"]
    assert np.isfinite(metrics["mae"]) and 0.0 <= metrics["gender_accuracy"] <= 1.0
    assert report["history"]["epoch"] == [1] and np.isfinite(report["history"]["val_loss"][0])
    saved = json.load(open(tmp_path / "run" / "evaluation.json"))
    assert saved["metrics"]["mae"] == metrics["mae"]
    # best.keras, as --load evaluates it
    assert train_lib.evaluate(run)["metrics"]["mae"] == pytest.approx(metrics["mae"])
    with pytest.raises(config_lib.UsageError, match="--img_dim=16 is below"):
        config_lib.ModelConfig(img_dim=16)
