"""Running the LR range test on the real model and data, and writing what it found.

`lr_finder.LRRangeTest` holds the arithmetic; this drives the training loop with an
exponentially growing learning rate, then puts the weights and optimizer back.
"""

import dataclasses
import math
import os

import keras
import tensorflow as tf

from agetf import lr_finder, plots, progress, run_files, schedules, trainer as trainer_lib


class _ExponentialRange(schedules.Schedule):
    """The range test's LR as a schedule, so the unchanged training loop can run it."""

    def __init__(self, test):
        super().__init__(name="lr_range_schedule")
        self.min_lr = test.min_lr
        self.ratio = test.max_lr / test.min_lr
        self.last = float(test.num_steps - 1)

    def learning_rate(self, step):
        fraction = tf.cast(step, tf.float64) / self.last
        return tf.cast(self.min_lr * tf.pow(tf.constant(self.ratio, tf.float64), fraction),
                       tf.float32)


def _snapshot(variables):
    # A Keras variable wraps the tf.Variable in `.value`; on a tf.Variable `.value` is a method.
    return [tf.identity(v.value if isinstance(v, keras.Variable) else v) for v in variables]


def _state_variables(trainer):
    return list(trainer.model.variables) + list(trainer.optimizer.variables) + [
        trainer.global_step, trainer.step_in_epoch]


def find_lr(trainer, test, show_progress=None):
    """Runs `test` on `trainer`'s model and data; restores weights and optimizer afterwards.
    show_progress: a progress bar on stderr (the chief's); None: when stderr is a terminal."""
    variables = _state_variables(trainer)
    saved = _snapshot(variables)
    iterator = iter(trainer.train_data)
    show = show_progress if trainer.chief else False  # every worker runs it; the chief draws
    with progress.progress_bar(test.num_steps, "LR finder", "step", show) as bar:
        for i in range(test.num_steps):
            lr = test.lr_at(i)
            try:
                loss = trainer.train_steps(iterator, 1)
            except trainer_lib.NonFiniteLossError:
                test.record(lr, float("nan"))
                break
            bar.update(1)
            bar.set_postfix_str(f"lr {lr:.3g}, loss {loss:.4g}", refresh=False)
            if not test.record(lr, loss):
                break
    for variable, value in zip(variables, saved):
        variable.assign(value)
    trainer.non_finite.assign(False)
    return test


def write_results(test, model_dir, chief=True):
    """plots/lr_find.png, lr_find.json and TensorBoard scalars under logs/lr_find."""
    if not chief:
        return
    run_files.write_json(os.path.join(model_dir, "lr_find.json"), test.to_json())
    plots.plot_lr_find(test.lrs, test.losses, test.smoothed, test.suggestion(),
                       os.path.join(model_dir, "plots", "lr_find.png"))
    writer = tf.summary.create_file_writer(os.path.join(model_dir, "logs", "lr_find"))
    with writer.as_default():
        for step, (lr, loss, smoothed) in enumerate(zip(test.lrs, test.losses, test.smoothed)):
            tf.summary.scalar("lr_find/learning_rate", lr, step=step)
            tf.summary.scalar("lr_find/loss", loss, step=step)
            tf.summary.scalar("lr_find/smoothed_loss", smoothed, step=step)
    writer.close()


def saved_suggestion(model_dir):
    """The suggestion in model_dir/lr_find.json, or None when it is missing, unreadable or empty."""
    try:
        found = run_files.read_json(os.path.join(model_dir, "lr_find.json"))
        suggestion = float(found["suggestion"])
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return suggestion if math.isfinite(suggestion) and suggestion > 0 else None


def run_lr_finder(config, *, min_lr=1e-10, max_lr=10.0, epochs=3.0, steps=0, strategy=None):
    """The whole range test for a TrainConfig; prints and returns the suggested LR (or None)."""
    trainer = trainer_lib.Trainer(dataclasses.replace(config, verbose=False), strategy=strategy)
    num_steps = steps or max(2, round(epochs * trainer.steps_per_epoch))
    test = lr_finder.LRRangeTest(min_lr, max_lr, num_steps)
    trainer.use_schedule(_ExponentialRange(test))
    find_lr(trainer, test)
    write_results(test, config.model_dir, trainer.chief)
    suggestion = test.suggestion()
    if trainer.chief:
        print(f"LR finder: {len(test.lrs)} steps from {test.min_lr:.3g} to "
              f"{test.lrs[-1] if test.lrs else test.min_lr:.3g}"
              + (f"; stopped: {test.stop_reason}" if test.stop_reason else ""))
        print(f"LR finder: suggested learning rate {suggestion:.3g}" if suggestion else
              "LR finder: no suggestion (the loss never fell)")
        print(f"LR finder: plot in {os.path.join(config.model_dir, 'plots', 'lr_find.png')}")
    return suggestion
