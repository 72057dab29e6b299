"""Metrics in human units (heads.MetricSet) and what the run monitor makes of them, in-process.

No training here: known outputs and labels go into a MetricSet, and fake epochs go into a
RunMonitor around a stand-in trainer, so every expected number is written out by hand.
"""

import json
import os
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from agetf.data import input_pipeline, labels
from agetf.modeling import heads
from agetf.training import callbacks, plots, schedules, trainer as trainer_lib


# --- MetricSet: known outputs, known labels, exact numbers -----------------------------

def one_hot_histograms(bins):
    """Histograms whose expectation is exactly each bin (in years)."""
    return tf.one_hot(bins, labels.NUM_AGE_BINS)


def range_probabilities(rows):
    """[{class: probability}] -> [B, 17] range probabilities."""
    out = np.zeros((len(rows), labels.NUM_AGE_RANGES), np.float32)
    for i, row in enumerate(rows):
        for k, p in row.items():
            out[i, k] = p
    return tf.constant(out)


def batch_labels_for(ages, genders):
    ages = np.asarray(ages, np.float32)
    return {"age": tf.constant(ages),
            "age_histogram": labels.age_histogram_tf(ages),
            "age_range": tf.constant(labels.age_range(ages.astype(np.int64)), tf.int32),
            "gender": tf.constant(genders, tf.float32)}


TRUE_AGES = [25, 30, 40, 95]
TRUE_GENDERS = [1, 0, 0, 0]
OUTPUTS = {
    # Expectations 20, 30, 42, 89 years: errors 5, 0, 2, 6 -> MAE 3.25, CS@5 3/4 (5 counts).
    "age_histogram": one_hot_histograms([20, 30, 42, 89]),
    # Midpoints 22.5, 32.5, 0.6*42.5+0.4*47.5 = 44.5, 85 (80+): errors 2.5, 2.5, 4.5, 10
    # -> MAE 4.875, CS@5 3/4; argmax classes 4, 6, 8, 16 against true 5, 6, 8, 16 -> 3/4.
    "age_range": range_probabilities([{4: 1.0}, {6: 1.0}, {8: 0.6, 9: 0.4}, {16: 1.0}]),
    # Regression outputs are years / 100: 25, 35.5, 40, 70 -> errors 0, 5.5, 0, 25: MAE 7.625,
    # CS@5 2/4.
    "age": tf.constant([0.25, 0.355, 0.40, 0.70]),
    # > 0.5 is female: F, M, M (0.5 is not above), F against F, M, M, M -> 3/4.
    "gender": tf.constant([0.9, 0.2, 0.5, 0.6]),
}
EXPECTED = {
    "age_histogram": {"mae": 3.25, "cs5": 0.75},
    "age_range": {"mae": 4.875, "cs5": 0.75},
    "age": {"mae": 7.625, "cs5": 0.5},
}
EXPECTED_RANGE_ACCURACY = 0.75
EXPECTED_GENDER_ACCURACY = 0.75


def run_metric_set(head_names, batches, in_function, loss_weights=None):
    """Feeds (outputs, labels) batches to a MetricSet; returns (results, per-head losses)."""
    metric_set = heads.MetricSet(head_names)

    def update(batch_labels, outputs):
        per_head = heads.per_example_losses(batch_labels, outputs)
        metric_set.update(batch_labels, outputs, per_head, loss_weights)
        return per_head

    step = tf.function(update) if in_function else update
    losses = []
    for outputs, batch_labels in batches:
        losses.append({k: np.asarray(v) for k, v in step(batch_labels, outputs).items()})
    return metric_set.results(), losses


@pytest.mark.parametrize("in_function", [False, True], ids=["eager", "tf_function"])
@pytest.mark.parametrize("age_head", ["age_histogram", "age_range", "age"])
def test_age_metrics_are_in_years_for_each_age_head(age_head, in_function):
    outputs = {age_head: OUTPUTS[age_head], "gender": OUTPUTS["gender"]}
    results, _ = run_metric_set((age_head, "gender"),
                                [(outputs, batch_labels_for(TRUE_AGES, TRUE_GENDERS))], in_function)
    assert results["mae"] == pytest.approx(EXPECTED[age_head]["mae"], abs=1e-5)
    assert results["cs5"] == pytest.approx(EXPECTED[age_head]["cs5"])
    assert results["gender_accuracy"] == pytest.approx(EXPECTED_GENDER_ACCURACY)
    if age_head == "age_range":
        assert results["age_range_accuracy"] == pytest.approx(EXPECTED_RANGE_ACCURACY)
    assert set(results) == set(heads.metric_names((age_head, "gender")))


@pytest.mark.parametrize("in_function", [False, True], ids=["eager", "tf_function"])
def test_every_head_at_once_reads_age_from_the_histogram_and_reports_each_head(in_function):
    batch_labels = batch_labels_for(TRUE_AGES, TRUE_GENDERS)
    results, (losses,) = run_metric_set(heads.HEADS, [(OUTPUTS, batch_labels)], in_function,
                                        loss_weights={"gender": 2.0})
    assert results["mae"] == pytest.approx(EXPECTED["age_histogram"]["mae"], abs=1e-5)
    assert results["cs5"] == pytest.approx(EXPECTED["age_histogram"]["cs5"])
    for head in heads.AGE_HEADS:
        assert results[f"{head}_mae"] == pytest.approx(EXPECTED[head]["mae"], abs=1e-5), head
    assert results["age_range_accuracy"] == pytest.approx(EXPECTED_RANGE_ACCURACY)
    assert results["gender_accuracy"] == pytest.approx(EXPECTED_GENDER_ACCURACY)

    # Losses: per-head means, and the total weighted as asked (gender x2).
    p = np.array([0.9, 0.2, 0.5, 0.6])
    y = np.array(TRUE_GENDERS, np.float64)
    gender_bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    regression_mse = (np.array([0.25, 0.355, 0.40, 0.70]) - np.array(TRUE_AGES) / 100.0) ** 2
    range_ce = -np.log([1e-7, 1.0, 0.6, 1.0])  # true class 5 has probability 0 (clipped)
    np.testing.assert_allclose(losses["gender"], gender_bce, rtol=1e-5)
    np.testing.assert_allclose(losses["age"], regression_mse, rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(losses["age_range"], range_ce, rtol=1e-3, atol=1e-5)
    for head in heads.HEADS:
        assert results[f"{head}_loss"] == pytest.approx(losses[head].mean(), rel=1e-5), head
    total = sum(losses[h] for h in heads.HEADS) + losses["gender"]  # gender weighs 2
    assert results["loss"] == pytest.approx(total.mean(), rel=1e-5)


@pytest.mark.parametrize("in_function", [False, True], ids=["eager", "tf_function"])
def test_means_stream_over_examples_not_batches(in_function):
    # A batch of 4 (errors 5, 0, 2, 6) then a batch of 1 (error 12): MAE 25/5, not (3.25+12)/2.
    first = ({"age_histogram": OUTPUTS["age_histogram"], "gender": OUTPUTS["gender"]},
             batch_labels_for(TRUE_AGES, TRUE_GENDERS))
    second = ({"age_histogram": one_hot_histograms([50]), "gender": tf.constant([0.1])},
              batch_labels_for([62], [1]))
    results, _ = run_metric_set(("age_histogram", "gender"), [first, second], in_function)
    assert results["mae"] == pytest.approx(25 / 5, abs=1e-5)
    assert results["cs5"] == pytest.approx(3 / 5)
    assert results["gender_accuracy"] == pytest.approx(3 / 5)


def test_reset_forgets_earlier_batches():
    metric_set = heads.MetricSet(("age",))
    batch_labels = batch_labels_for(TRUE_AGES, TRUE_GENDERS)
    outputs = {"age": OUTPUTS["age"]}
    metric_set.update(batch_labels, outputs, heads.per_example_losses(batch_labels, outputs))
    metric_set.reset()
    outputs = {"age": tf.constant([0.25, 0.30, 0.40, 0.95])}  # exact: MAE 0, CS@5 1
    metric_set.update(batch_labels, outputs, heads.per_example_losses(batch_labels, outputs))
    results = metric_set.results()
    assert results["mae"] == pytest.approx(0.0, abs=1e-5) and results["cs5"] == 1.0


# --- RunMonitor: best.keras, history, progress bar; a stand-in trainer, fake epochs -------

MONITOR_HEADS = ("age_histogram", "gender")


@pytest.fixture(autouse=True)
def no_training_plot(monkeypatch):
    # matplotlib's savefig costs ~1 s an epoch here; the plot has its own tests (test_plots.py).
    monkeypatch.setattr(plots, "plot_training", lambda history, path: None)


def tiny_keras_model():
    inputs = keras.Input((2,))
    return keras.Model(inputs, keras.layers.Dense(1, name="dense")(inputs))


def fake_trainer(model_dir, best_metric="val_loss", verbose=False, steps_per_epoch=4,
                 batch_size=16):
    """The attributes RunMonitor reads from a Trainer, around a two-weight Keras model."""
    config = trainer_lib.TrainConfig(
        model_dir=str(model_dir), input=input_pipeline.InputConfig(data_dir="unused", img_dim=32),
        model=trainer_lib.ModelConfig(backbone="MobileNetV2", img_dim=32, heads=MONITOR_HEADS,
                                      alpha=0.35, weights="none"),
        epochs=3, batch_size=batch_size, lr=1e-3, best_metric=best_metric, summary_images=0,
        verbose=verbose)
    train_results = {name: 0.0 for name in heads.metric_names(MONITOR_HEADS)}
    trainer = types.SimpleNamespace(
        config=config, chief=True, resumed=False, policy="float32",
        total_epochs=config.total_epochs, stage="train", stage_start_epoch=lambda: 0,
        model=tiny_keras_model(), steps_per_epoch=steps_per_epoch,
        epoch=tf.Variable(0, dtype=tf.int64), step_in_epoch=tf.Variable(0, dtype=tf.int64),
        global_step=tf.Variable(0, dtype=tf.int64),
        schedule=schedules.Constant(1e-3), learning_rate=lambda: 1e-3,
        train_results=train_results,
        train_metrics=types.SimpleNamespace(results=lambda: dict(trainer.train_results)))
    trainer._log = lambda message: print(message) if config.verbose else None
    return trainer


def set_weights(model, value):
    model.get_layer("dense").set_weights([np.full((2, 1), value, np.float32),
                                          np.full((1,), value, np.float32)])


def run_fake_epochs(trainer, val_values, metric):
    """One epoch per value of `metric`; before each, the weights are set to the epoch number."""
    monitor = callbacks.RunMonitor(trainer)
    for epoch, value in enumerate(val_values):
        monitor.epoch_begin(epoch)
        set_weights(trainer.model, float(epoch + 1))
        val_results = {"val_" + name: 1.0 for name in heads.metric_names(MONITOR_HEADS)}
        val_results[metric] = value
        trainer.epoch.assign_add(1)
        monitor.epoch_end(epoch, dict(trainer.train_results), val_results)
        monitor.epoch_saved()  # the trainer calls it once the epoch's checkpoint is saved
    monitor.train_end()
    return monitor


def saved_weight(path):
    model = keras.saving.load_model(path, safe_mode=True)
    kernel, bias = model.get_layer("dense").get_weights()
    assert np.all(kernel == bias[0])
    return float(bias[0])


@pytest.mark.parametrize("metric,values,best_epoch", [
    ("val_loss", [3.0, 1.0, 2.0], 2),            # lower is better; the best is not the last
    ("val_gender_accuracy", [0.5, 0.8, 0.7], 2),  # higher is better
    ("val_mae", [4.0, float("nan"), 5.0], 1),     # a NaN epoch is never the best
])
def test_best_keras_holds_the_best_epoch_not_the_last(tmp_path, metric, values, best_epoch):
    trainer = fake_trainer(tmp_path, best_metric=metric)
    monitor = run_fake_epochs(trainer, values, metric)
    assert saved_weight(os.path.join(tmp_path, "best.keras")) == best_epoch
    assert saved_weight(os.path.join(tmp_path, "final.keras")) == len(values)
    history = json.load(open(os.path.join(tmp_path, "history.json")))
    assert history["epoch"] == [1, 2, 3]
    np.testing.assert_array_equal(history[metric], values)
    assert monitor.best == values[best_epoch - 1]


def test_a_resumed_monitor_remembers_the_best_so_far(tmp_path):
    # Two epochs (best 1.0 at epoch 2), then a resumed run whose third epoch is worse:
    # best.keras must stay epoch 2's.
    trainer = fake_trainer(tmp_path)
    run_fake_epochs(trainer, [3.0, 1.0], "val_loss")
    trainer.resumed = True
    monitor = callbacks.RunMonitor(trainer)
    assert monitor.best == 1.0
    monitor.epoch_begin(2)
    set_weights(trainer.model, 3.0)
    trainer.epoch.assign_add(1)
    val_results = {"val_" + name: 1.0 for name in heads.metric_names(MONITOR_HEADS)}
    val_results["val_loss"] = 2.0
    monitor.epoch_end(2, dict(trainer.train_results), val_results)
    monitor.epoch_saved()
    monitor.train_end()
    assert saved_weight(os.path.join(tmp_path, "best.keras")) == 2
    assert saved_weight(os.path.join(tmp_path, "final.keras")) == 3


def test_progress_bar_shows_loss_metrics_and_images_per_second(tmp_path, capsys):
    trainer = fake_trainer(tmp_path, verbose=True, steps_per_epoch=4, batch_size=16)
    monitor = callbacks.RunMonitor(trainer)
    capsys.readouterr()
    monitor.epoch_begin(0)
    trainer.train_results.update(loss=1.25, mae=7.5, cs5=0.25, gender_accuracy=0.75,
                                 age_histogram_loss=0.125)
    trainer.step_in_epoch.assign(2)
    monitor.steps_end(2, 1.5, seconds=0.5)   # 32 images in 0.5 s
    trainer.train_results.update(loss=1.0625, mae=6.5, cs5=0.5, gender_accuracy=0.875)
    trainer.step_in_epoch.assign(4)
    monitor.steps_end(2, 0.75, seconds=0.25)  # 32 images in 0.25 s: 128 img/s
    out = capsys.readouterr().out
    assert out.startswith("Epoch 1/3\n")
    last = out.rstrip("\n").split("\n")[-1].split("\r")[-1]  # what the finished bar shows
    assert "4/4" in last
    for shown in ("loss: 1.0625", "mae: 6.5000", "cs5: 0.5000", "gender_accuracy: 0.8750",
                  "img/s: 128.0000"):
        assert shown in last, (shown, last)
    assert "age_histogram_loss" not in last  # per-head losses stay out of the bar


def test_progress_bar_off_a_terminal_is_one_line_an_epoch_without_redraws(tmp_path, capsys):
    # Keras takes any POSIX system for a terminal and would redraw with \r and \b into a log.
    trainer = fake_trainer(tmp_path, verbose=True, steps_per_epoch=4, batch_size=16)
    monitor = callbacks.RunMonitor(trainer)
    capsys.readouterr()
    for epoch in range(2):
        monitor.epoch_begin(epoch)
        for step in (2, 4):
            trainer.step_in_epoch.assign(step)
            monitor.steps_end(2, 1.0, seconds=0.5)
        trainer.step_in_epoch.assign(0)
    out = capsys.readouterr().out
    assert not {"\r", "\b", "\x1b"} & set(out), repr(out)
    lines = out.splitlines()
    assert [line for line in lines if line.startswith("Epoch")] == ["Epoch 1/3", "Epoch 2/3"]
    bars = [line for line in lines if not line.startswith("Epoch")]
    assert len(bars) == 2 and all(line.startswith("4/4 - ") and "img/s: 64.0000" in line
                                  for line in bars), lines


def test_progress_bar_is_silent_when_not_verbose(tmp_path, capsys):
    trainer = fake_trainer(tmp_path, verbose=False)
    monitor = callbacks.RunMonitor(trainer)
    monitor.epoch_begin(0)
    trainer.step_in_epoch.assign(4)
    monitor.steps_end(4, 1.0, seconds=1.0)
    assert capsys.readouterr().out == ""
