"""Learning-rate schedules: values against hand-computed formulas, plateau logic, checkpoints."""

import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from agetf import config
from agetf.training import schedules


def lr_at(schedule, step):
    return float(schedule.learning_rate(tf.constant(step, tf.int64)))


def test_constant():
    s = schedules.Constant(3e-4)
    assert lr_at(s, 0) == pytest.approx(3e-4)
    assert lr_at(s, 10**6) == pytest.approx(3e-4)


# Smith's example: base 0.001, max 0.006, half cycle 2000 steps.
@pytest.mark.parametrize("mode, gamma, expected", [
    ("triangular", 1.0, {0: 0.001, 1000: 0.0035, 2000: 0.006, 3000: 0.0035,
                         4000: 0.001, 5000: 0.0035, 6000: 0.006}),
    ("triangular2", 1.0, {0: 0.001, 2000: 0.006, 4000: 0.001, 5000: 0.00225,
                          6000: 0.0035, 10000: 0.00225}),
    ("exp_range", 0.999, {0: 0.001, 1000: 0.0019192386, 2000: 0.0016759996, 4000: 0.001}),
])
def test_cyclic_matches_smith_formulas(mode, gamma, expected):
    s = schedules.Cyclic(base_lr=0.001, max_lr=0.006, step_size=2000, mode=mode, gamma=gamma)
    for step, lr in expected.items():
        assert lr_at(s, step) == pytest.approx(lr, rel=1e-5), step


def test_cosine_warmup_then_decay_then_flat():
    s = schedules.Cosine(0.1, total_steps=110, warmup_steps=10, min_lr=0.01)
    expected = {0: 0.01, 4: 0.05, 9: 0.1, 10: 0.1, 35: 0.0868198052, 60: 0.055,
                110: 0.01, 500: 0.01}
    for step, lr in expected.items():
        assert lr_at(s, step) == pytest.approx(lr, rel=1e-5), step


def test_cosine_without_warmup_starts_at_lr():
    s = schedules.Cosine(0.2, total_steps=100)
    assert lr_at(s, 0) == pytest.approx(0.2)
    assert lr_at(s, 50) == pytest.approx(0.1)
    assert lr_at(s, 100) == pytest.approx(0.0, abs=1e-9)


def run_plateau(schedule, values, key="val_loss"):
    lrs, messages = [], []
    for epoch, value in enumerate(values):
        messages.append(schedule.on_epoch_end(epoch, {key: value, "loss": 0.0}))
        lrs.append(lr_at(schedule, 0))
    return lrs, messages


def test_plateau_patience_cooldown_and_floor():
    s = schedules.ReduceOnPlateau(1.0, factor=0.5, patience=2, cooldown=1, min_lr=0.2,
                                  min_delta=0.0)
    lrs, messages = run_plateau(s, [1.0, 0.9] + [0.95] * 8)
    assert lrs == pytest.approx([1, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2, 0.2])
    changed = [epoch for epoch, m in enumerate(messages) if m]
    assert changed == [3, 5, 7]
    assert "lr 0.5 -> 0.25" in messages[5]


def test_plateau_max_mode():
    s = schedules.ReduceOnPlateau(0.01, monitor="val_gender_accuracy", mode="max",
                                  factor=0.1, patience=1, min_lr=0.0)
    lrs, _ = run_plateau(s, [0.5, 0.6, 0.6, 0.7, 0.65], key="val_gender_accuracy")
    assert lrs == pytest.approx([0.01, 0.01, 0.001, 0.001, 0.0001])


def test_plateau_min_delta_ignores_tiny_improvements():
    s = schedules.ReduceOnPlateau(1.0, factor=0.5, patience=1, min_delta=0.1)
    lrs, _ = run_plateau(s, [1.0, 0.95, 0.5])
    assert lrs == pytest.approx([1.0, 0.5, 0.5])


def test_plateau_agrees_with_keras_callback():
    rng = np.random.default_rng(3)
    values = list(np.cumsum(rng.normal(0.0, 1.0, 40)))
    ours = schedules.ReduceOnPlateau(0.1, factor=0.5, patience=2, cooldown=2, min_lr=1e-3)
    ref = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", mode="min", factor=0.5,
                                            patience=2, cooldown=2, min_lr=1e-3)
    optimizer = types.SimpleNamespace(learning_rate=0.1)
    ref.set_model(types.SimpleNamespace(optimizer=optimizer))
    ref.on_train_begin()
    ours_lrs, ref_lrs = [], []
    for epoch, value in enumerate(values):
        ours.on_epoch_end(epoch, {"val_loss": value})
        ref.on_epoch_end(epoch, {"val_loss": value})
        ours_lrs.append(lr_at(ours, 0))
        ref_lrs.append(float(optimizer.learning_rate))
    assert len(set(ref_lrs)) > 2  # the sequence exercised several reductions
    assert ours_lrs == pytest.approx(ref_lrs, rel=1e-6)


def test_plateau_missing_metric_names_available_keys():
    s = schedules.ReduceOnPlateau(1e-3, monitor="val_mae")
    with pytest.raises(ValueError, match="val_loss") as info:
        s.on_epoch_end(0, {"val_loss": 1.0, "loss": 2.0})
    assert "\n" not in str(info.value)


def test_plateau_state_survives_checkpoint(tmp_path):
    kwargs = dict(factor=0.5, patience=3, min_delta=0.0)
    first = schedules.ReduceOnPlateau(1.0, **kwargs)
    run_plateau(first, [1.0, 2.0, 2.0, 2.0, 2.0, 2.0])  # one reduction, then wait == 2
    assert lr_at(first, 0) == pytest.approx(0.5)
    path = tf.train.Checkpoint(schedule=first).write(str(tmp_path / "ckpt"))

    fresh = schedules.ReduceOnPlateau(1.0, **kwargs)
    tf.train.Checkpoint(schedule=fresh).read(path).assert_consumed()
    assert lr_at(fresh, 0) == pytest.approx(0.5)
    assert int(fresh.wait.numpy()) == 2
    assert float(fresh.best.numpy()) == 1.0
    message = fresh.on_epoch_end(6, {"val_loss": 2.0})  # third bad epoch since the reduction
    assert message and lr_at(fresh, 0) == pytest.approx(0.25)


def test_cyclic_resumes_where_it_was(tmp_path):
    step = tf.Variable(0, dtype=tf.int64)
    first = schedules.Cyclic(base_lr=1e-4, max_lr=1e-2, step_size=7, mode="triangular2")
    uninterrupted = [lr_at(first, k) for k in range(40)]
    step.assign(23)
    path = tf.train.Checkpoint(schedule=first, step=step).write(str(tmp_path / "ckpt"))

    fresh_step = tf.Variable(0, dtype=tf.int64)
    fresh = schedules.Cyclic(base_lr=1e-4, max_lr=1e-2, step_size=7, mode="triangular2")
    tf.train.Checkpoint(schedule=fresh, step=fresh_step).read(path).assert_consumed()
    resumed = [lr_at(fresh, k) for k in range(int(fresh_step.numpy()), 40)]
    assert resumed == uninterrupted[23:]


ALL_SCHEDULES = [
    lambda: schedules.Constant(0.01),
    lambda: schedules.ReduceOnPlateau(0.01),
    lambda: schedules.Cyclic(step_size=5, mode="exp_range", gamma=0.99),
    lambda: schedules.Cosine(0.01, total_steps=50, warmup_steps=5),
]


@pytest.mark.parametrize("make", ALL_SCHEDULES)
def test_learning_rate_inside_tf_function_matches_eager(make):
    s = make()
    graph_lr = tf.function(s.learning_rate)
    for step in (0, 3, 17, 49, 1000):
        step = tf.constant(step, tf.int64)
        value = graph_lr(step)
        assert value.dtype == tf.float32
        assert float(value) == pytest.approx(float(s.learning_rate(step)), rel=1e-6)


def test_plateau_change_is_seen_by_a_traced_function():
    s = schedules.ReduceOnPlateau(1.0, factor=0.5, patience=0)
    graph_lr = tf.function(s.learning_rate)
    assert float(graph_lr(tf.constant(0, tf.int64))) == 1.0
    s.on_epoch_end(0, {"val_loss": 1.0})
    s.on_epoch_end(1, {"val_loss": 1.0})
    assert float(graph_lr(tf.constant(1, tf.int64))) == 0.5


def test_plateau_under_mirrored_strategy():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        s = schedules.ReduceOnPlateau(1.0, factor=0.5, patience=0)

    @tf.function
    def replica_lrs(step):
        return strategy.experimental_local_results(strategy.run(s.learning_rate, args=(step,)))

    assert [float(v) for v in replica_lrs(tf.constant(0, tf.int64))] == [1.0, 1.0]
    s.on_epoch_end(0, {"val_loss": 1.0})
    s.on_epoch_end(1, {"val_loss": 1.0})
    assert [float(v) for v in replica_lrs(tf.constant(1, tf.int64))] == [0.5, 0.5]


def test_make_schedule_builds_each_name():
    common = dict(lr=0.01, steps_per_epoch=10, total_steps=100)
    kinds = {name: type(schedules.make_schedule(settings(), **common))
             for name, settings in config.SCHEDULES.items()}
    assert kinds == {"constant": schedules.Constant,
                     "reduce_lr_on_plateau": schedules.ReduceOnPlateau,
                     "cyclic_lr": schedules.Cyclic, "cosine": schedules.Cosine}


def test_make_schedule_passes_the_configs_settings():
    common = dict(lr=0.01, steps_per_epoch=10, total_steps=100)
    cyclic = schedules.make_schedule(
        config.CyclicSchedule(base_lr=0.001, max_lr=0.005, half_cycle_epochs=2), **common)
    assert lr_at(cyclic, 20) == pytest.approx(0.005)  # 2 epochs of 10 steps
    by_steps = schedules.make_schedule(
        config.CyclicSchedule(max_lr=0.005, half_cycle_epochs=2, half_cycle_steps=5), **common)
    assert lr_at(by_steps, 5) == pytest.approx(0.005)
    default = schedules.make_schedule(config.CyclicSchedule(), **common)
    assert lr_at(default, 0) == pytest.approx(1e-4)
    assert lr_at(default, 80) == pytest.approx(0.1)  # default half cycle: 8 epochs
    cosine = schedules.make_schedule(config.CosineSchedule(warmup_epochs=1, min_lr=0.001),
                                     **common)
    assert lr_at(cosine, 4) == pytest.approx(0.005)
    assert lr_at(cosine, 100) == pytest.approx(0.001)
    plateau = schedules.make_schedule(
        config.PlateauSchedule(monitor="val_mae", patience=0, factor=0.5), **common)
    plateau.on_epoch_end(0, {"val_mae": 5.0})
    plateau.on_epoch_end(1, {"val_mae": 5.0})
    assert lr_at(plateau, 0) == pytest.approx(0.005)


@pytest.mark.parametrize("make, match", [
    (lambda: "step_decay", "cyclic_lr"),
    (lambda: config.CyclicSchedule(mode="sawtooth"), "triangular2"),
    (lambda: config.CyclicSchedule(base_lr=0.5, max_lr=0.1), "max_lr"),
    (lambda: config.PlateauSchedule(factor=1.5), "factor"),
    (lambda: config.PlateauSchedule(mode="down"), "min, max"),
    (lambda: config.CosineSchedule(warmup_steps=200), "warm-up"),
])
def test_make_schedule_rejects_bad_input_in_one_line(make, match):
    with pytest.raises(ValueError, match=match) as info:
        schedules.make_schedule(make(), lr=0.01, steps_per_epoch=10, total_steps=100)
    assert "\n" not in str(info.value)


def test_a_misspelt_schedule_setting_is_refused_by_name():
    with pytest.raises(TypeError, match="patiense"):
        config.PlateauSchedule(patiense=2)
