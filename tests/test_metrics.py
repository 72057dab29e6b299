"""Metrics in human units (heads.MetricSet) and what the loop's callbacks make of them.

No training here: known outputs and labels go into a MetricSet, and fake epochs go into the
callbacks around a tiny Keras model, so every expected number is written out by hand.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from agetf.common import head_names
from agetf.data import labels
from agetf.modeling import heads
from agetf.training import callbacks, plots

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
    assert set(results) == set(head_names.metric_names((age_head, "gender")))


@pytest.mark.parametrize("in_function", [False, True], ids=["eager", "tf_function"])
def test_every_head_at_once_reads_age_from_the_histogram_and_reports_each_head(in_function):
    batch_labels = batch_labels_for(TRUE_AGES, TRUE_GENDERS)
    results, (losses,) = run_metric_set(head_names.HEADS, [(OUTPUTS, batch_labels)], in_function,
                                        loss_weights={"gender": 2.0})
    assert results["mae"] == pytest.approx(EXPECTED["age_histogram"]["mae"], abs=1e-5)
    assert results["cs5"] == pytest.approx(EXPECTED["age_histogram"]["cs5"])
    for head in head_names.AGE_HEADS:
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
    for head in head_names.HEADS:
        assert results[f"{head}_loss"] == pytest.approx(losses[head].mean(), rel=1e-5), head
    total = sum(losses[h] for h in head_names.HEADS) + losses["gender"]  # gender weighs 2
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


# --- callbacks: best.keras, history, progress bar; fake epochs around a tiny Keras model ---

MONITOR_HEADS = ("age_histogram", "gender")
TRAIN_RESULTS = {name: 0.0 for name in head_names.metric_names(MONITOR_HEADS)}


@pytest.fixture(autouse=True)
def no_training_plot(monkeypatch):
    # matplotlib's savefig costs ~1 s an epoch here; the plot has its own tests (test_plots.py).
    monkeypatch.setattr(plots, "plot_training", lambda history, path: None)


def tiny_keras_model():
    inputs = keras.Input((2,))
    return keras.Model(inputs, keras.layers.Dense(1, name="dense")(inputs))


def set_weights(model, value):
    model.get_layer("dense").set_weights([np.full((2, 1), value, np.float32),
                                          np.full((1,), value, np.float32)])


def run_fake_epochs(model, model_dir, val_values, metric, first_epoch=0):
    """One epoch per value of `metric`, with the loop's order of calls; before each, the
    weights are set to the epoch number. Returns the best-model saver."""
    history = callbacks.load_history(str(model_dir), first_epoch)
    saver = callbacks.BestModelSaver(model, str(model_dir), metric, history, log=print)
    run = callbacks.Callbacks([saver, callbacks.HistoryWriter(str(model_dir), history)])
    for epoch, value in enumerate(val_values, start=first_epoch):
        set_weights(model, float(epoch + 1))
        val_results = {"val_" + name: 1.0 for name in head_names.metric_names(MONITOR_HEADS)}
        val_results[metric] = value
        logs = callbacks.epoch_logs(TRAIN_RESULTS, val_results, lr=1e-3, images_per_sec=1.0,
                                    seconds=1.0)
        callbacks.append_epoch(history, epoch, logs)
        run.on_epoch_end(epoch, logs, step=epoch)
        run.on_epoch_saved(epoch)  # the loop calls it once the epoch's checkpoint is saved
    run.on_train_end()
    return saver


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
    saver = run_fake_epochs(tiny_keras_model(), tmp_path, values, metric)
    assert saved_weight(os.path.join(tmp_path, "best.keras")) == best_epoch
    assert saved_weight(os.path.join(tmp_path, "final.keras")) == len(values)
    history = json.load(open(os.path.join(tmp_path, "history.json")))
    assert history["epoch"] == [1, 2, 3]
    np.testing.assert_array_equal(history[metric], values)
    assert saver.best == values[best_epoch - 1]


def test_a_resumed_saver_remembers_the_best_so_far(tmp_path):
    # Two epochs (best 1.0 at epoch 2), then a resumed run whose third epoch is worse:
    # best.keras must stay epoch 2's.
    model = tiny_keras_model()
    run_fake_epochs(model, tmp_path, [3.0, 1.0], "val_loss")
    history = callbacks.load_history(str(tmp_path), 2)
    assert callbacks.BestModelSaver(model, str(tmp_path), "val_loss", history, print).best == 1.0
    run_fake_epochs(model, tmp_path, [2.0], "val_loss", first_epoch=2)
    assert saved_weight(os.path.join(tmp_path, "best.keras")) == 2
    assert saved_weight(os.path.join(tmp_path, "final.keras")) == 3


def progress_bar(verbose, steps_per_epoch=4, batch_size=16):
    return callbacks.ProgressBar(steps_per_epoch, batch_size,
                                 log=lambda message: print(message) if verbose else None,
                                 show=verbose)


def test_progress_bar_shows_loss_metrics_and_images_per_second(capsys):
    bar = progress_bar(verbose=True)
    bar.on_epoch_begin(0, 3)
    metrics = dict(TRAIN_RESULTS, loss=1.25, mae=7.5, cs5=0.25, gender_accuracy=0.75,
                   age_histogram_loss=0.125)
    bar.on_steps_end(2, 2, 2, 1.5, 0.5, metrics, 1e-3)   # 32 images in 0.5 s
    metrics.update(loss=1.0625, mae=6.5, cs5=0.5, gender_accuracy=0.875)
    bar.on_steps_end(4, 4, 2, 0.75, 0.25, metrics, 1e-3)  # 32 images in 0.25 s: 128 img/s
    out = capsys.readouterr().out
    assert out.startswith("Epoch 1/3\n")
    last = out.rstrip("\n").split("\n")[-1].split("\r")[-1]  # what the finished bar shows
    assert "4/4" in last
    for shown in ("loss: 1.0625", "mae: 6.5000", "cs5: 0.5000", "gender_accuracy: 0.8750",
                  "img/s: 128.0000"):
        assert shown in last, (shown, last)
    assert "age_histogram_loss" not in last  # per-head losses stay out of the bar


def test_progress_bar_off_a_terminal_is_one_line_an_epoch_without_redraws(capsys):
    # Keras takes any POSIX system for a terminal and would redraw with \r and \b into a log.
    bar = progress_bar(verbose=True)
    for epoch in range(2):
        bar.on_epoch_begin(epoch, 3)
        for step in (2, 4):
            bar.on_steps_end(epoch * 4 + step, step, 2, 1.0, 0.5, TRAIN_RESULTS, 1e-3)
    out = capsys.readouterr().out
    assert not {"\r", "\b", "\x1b"} & set(out), repr(out)
    lines = out.splitlines()
    assert [line for line in lines if line.startswith("Epoch")] == ["Epoch 1/3", "Epoch 2/3"]
    bars = [line for line in lines if not line.startswith("Epoch")]
    assert len(bars) == 2 and all(line.startswith("4/4 - ") and "img/s: 64.0000" in line
                                  for line in bars), lines


def test_progress_bar_is_silent_when_not_verbose(capsys):
    bar = progress_bar(verbose=False)
    bar.on_epoch_begin(0, 3)
    bar.on_steps_end(4, 4, 4, 1.0, 1.0, TRAIN_RESULTS, 1e-3)
    assert capsys.readouterr().out == ""
