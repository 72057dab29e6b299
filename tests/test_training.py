"""The training loop end to end on tiny synthetic data: files, TensorBoard, resume, strategies."""

import dataclasses
import hashlib
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from agetf import augment, distribution, evaluation, input_pipeline, trainer as trainer_lib

ALL_HEADS = ("age_histogram", "age_range", "age", "gender")


def tiny_config(data_dir, model_dir, **overrides):
    """A run small enough for a 2-core CI machine: 32 px, MobileNetV2 x0.35, a few steps."""
    model_fields = {k: overrides.pop(k) for k in ("heads", "img_dim", "backbone") if k in overrides}
    model = trainer_lib.ModelConfig(backbone=model_fields.get("backbone", "MobileNetV2"),
                                    img_dim=model_fields.get("img_dim", 32),
                                    heads=model_fields.get("heads", ALL_HEADS), alpha=0.35,
                                    batchnorm_momentum=0.9)
    settings = dict(model_dir=str(model_dir), model=model,
                    input=input_pipeline.InputConfig(data_dir=data_dir, img_dim=model.img_dim,
                                                     shuffle_buffer=64, seed=1),
                    epochs=2, batch_size=16, lr=1e-3, steps_per_loop=2, steps_per_epoch=3,
                    strategy="default", mixed_precision="float32", summary_images=4,
                    verbose=False)
    settings.update(overrides)
    return trainer_lib.TrainConfig(**settings)


def train(config, strategy=None):
    trainer = trainer_lib.Trainer(config, strategy=strategy)
    trainer_lib.write_run_definition(config.model_dir, config.model)
    history = trainer.fit()
    return trainer, history


def sha1(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


@pytest.fixture(scope="session")
def trained_run(data_dir, tmp_path_factory):
    """Two epochs of all four heads; shared by the tests that only read what a run leaves."""
    model_dir = tmp_path_factory.mktemp("run") / "all_heads"
    config = tiny_config(data_dir, model_dir)
    trainer, history = train(config)
    return config, trainer, history


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


def test_training_fits_a_fixed_batch(data_dir, tmp_path):
    # The loop's gradient path, isolated from data noise: one repeated batch must be learned.
    config = tiny_config(data_dir, tmp_path / "run", heads=("age_histogram", "gender"), lr=3e-3,
                         summary_images=0)
    # The step augments, so a fixed batch stays fixed only without augmentation.
    config = dataclasses.replace(config, input=dataclasses.replace(
        config.input, augment=augment.NO_AUGMENTATION))
    trainer = trainer_lib.Trainer(config)
    batch = next(iter(input_pipeline.build_dataset(config.input, "train", 16, training=True)))
    fixed = trainer.strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors(batch).repeat())
    iterator = iter(fixed)
    first = trainer.train_steps(iterator, 1)
    trainer.train_steps(iterator, 25)
    last = trainer.train_steps(iterator, 1)
    assert last < 0.5 * first


def _scalars(accumulator):
    values = {}
    for tag in accumulator.Tags()["tensors"]:
        if accumulator.SummaryMetadata(tag).plugin_data.plugin_name != "scalars":
            continue
        values[tag] = [float(tf.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors(tag)]
    return values


def test_tensorboard_logs_losses_metrics_lr_speed_and_faces(trained_run):
    config = trained_run[0]
    logs = os.path.join(config.model_dir, "logs")
    train_acc = event_accumulator.EventAccumulator(os.path.join(logs, "train"), size_guidance={"tensors": 0})
    val_acc = event_accumulator.EventAccumulator(os.path.join(logs, "validation"), size_guidance={"tensors": 0})
    train_acc.Reload()
    val_acc.Reload()
    train_scalars, val_scalars = _scalars(train_acc), _scalars(val_acc)
    for tag in ("batch/loss", "learning_rate", "images_per_sec", "step_time_ms", "epoch/loss",
                "epoch/age_histogram_loss", "epoch/mae", "epoch/cs5", "epoch/gender_accuracy",
                "epoch/age_range_accuracy"):
        assert tag in train_scalars and train_scalars[tag], tag
        assert np.all(np.isfinite(train_scalars[tag])), tag
    for tag in ("epoch/loss", "epoch/mae", "epoch/gender_accuracy"):
        assert len(val_scalars[tag]) == 2 and np.all(np.isfinite(val_scalars[tag])), tag
    assert val_acc.SummaryMetadata("faces").plugin_data.plugin_name == "images"
    assert train_acc.PluginTagToContent("hparams")  # the run's hyperparameters


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


def test_mid_epoch_checkpoint_resumes_at_the_same_step(data_dir, tmp_path):
    config = tiny_config(data_dir, tmp_path / "run", heads=("age",), summary_images=0)
    first = trainer_lib.Trainer(config)
    first.train_steps(iter(first.train_data), 2)
    first.save_checkpoint()
    weights = [w.numpy() for w in first.model.weights]
    second = trainer_lib.Trainer(config)
    assert second.resumed
    assert (int(second.epoch.numpy()), int(second.step_in_epoch.numpy()), int(second.global_step.numpy())) == (0, 2, 2)
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


@pytest.mark.parametrize("heads", [("age_range", "gender"), ("age",), ("gender",)])
def test_each_head_combination_trains_resumes_and_evaluates(data_dir, tmp_path, heads):
    config = tiny_config(data_dir, tmp_path / "run", heads=heads, epochs=1, summary_images=2)
    trainer, history = train(config)
    assert np.isfinite(history["val_loss"][0])
    expected = {"gender": "val_gender_accuracy", "age": "val_mae", "age_range": "val_age_range_accuracy"}
    for head in heads:
        assert expected[head] in history
    # A rerun with one more epoch resumes instead of starting over.
    resumed, history = train(tiny_config(data_dir, tmp_path / "run", heads=heads, epochs=2,
                                         summary_images=2))
    assert resumed.resumed and history["epoch"] == [1, 2]
    model = keras.saving.load_model(os.path.join(config.model_dir, "best.keras"), safe_mode=True)
    report, lines = evaluation.evaluate(model, config.input, "test", batch_size=16,
                                        print_predictions=1)
    assert report["num_images"] == input_pipeline.num_examples(data_dir, "test")
    wanted = {"gender": "gender_accuracy", "age": "mae", "age_range": "age_range_accuracy"}
    assert {wanted[h] for h in heads} <= set(report["metrics"])
    assert lines[0].startswith("Predicting for image ")


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


def test_mirrored_on_two_cpus_keeps_replicas_identical(data_dir, tmp_path):
    strategy = distribution.make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    config = tiny_config(data_dir, tmp_path / "run", heads=("age_histogram", "gender"), epochs=1,
                         summary_images=2)
    trainer, history = train(config, strategy=strategy)
    assert np.isfinite(history["loss"][0]) and np.isfinite(history["val_loss"][0])
    for variable in trainer.model.trainable_variables:
        mirrored = variable.value  # the tf.distribute variable behind the Keras one
        values = [v.numpy() for v in strategy.experimental_local_results(mirrored)]
        assert len(values) == 2
        np.testing.assert_array_equal(values[0], values[1])


def test_batch_that_does_not_divide_across_replicas_is_refused(data_dir, tmp_path):
    strategy = distribution.make_strategy("mirrored")
    config = tiny_config(data_dir, tmp_path / "run", batch_size=15)
    with pytest.raises(ValueError, match="does not divide across 2 replicas"):
        trainer_lib.Trainer(config, strategy=strategy)


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
