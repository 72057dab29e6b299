"""The learning-rate range test (Leslie Smith's, as in the older project): its arithmetic, and
running it on the real model and data.

`LRRangeTest` holds the arithmetic, testable without a model: exponential LR growth per
batch, loss smoothed by a bias-corrected moving average, stop once the smoothed loss exceeds
4x its best, and the suggestion. `run_lr_finder` drives the unchanged training loop with that
LR, writes what it found (plot, JSON, TensorBoard), then puts the weights and optimizer back.
"""

import dataclasses
import math
import os

import keras
import numpy as np
import tensorflow as tf

from agetf import UsageError
from agetf.common import files, progress
from agetf.training import distributed_trainer as trainer_lib
from agetf.training import plots, run_files, schedules

# Points ignored at the start of the curve when suggesting: the moving average is
# still settling there and its slope is noise.
MIN_SKIP_START = 3
# Fewer points than this and there is no curve to read a slope from.
MIN_POINTS_FOR_SUGGESTION = 10


class LRRangeTest:
    """One range test: feed `record(lr_at(i), loss)` after each step until it returns False."""

    def __init__(self, min_lr=1e-10, max_lr=10.0, num_steps=100, beta=0.98, stop_factor=4.0):
        if not 0 < min_lr < max_lr:
            raise UsageError(f"LR range test needs 0 < min_lr < max_lr, got {min_lr} and {max_lr}")
        if num_steps < 2:
            raise UsageError(f"LR range test needs at least 2 steps, got {num_steps}; "
                             "use more batches or epochs")
        if not 0 <= beta < 1:
            raise UsageError(f"LR range test smoothing beta must be in [0, 1), got {beta}")
        if stop_factor <= 1:
            raise UsageError(f"LR range test stop_factor must be > 1, got {stop_factor}")
        self.min_lr = float(min_lr)
        self.max_lr = float(max_lr)
        self.num_steps = int(num_steps)
        self.beta = float(beta)
        self.stop_factor = float(stop_factor)
        self.lrs, self.losses, self.smoothed = [], [], []
        self.best = math.inf
        self.stop_reason = None
        self._average = 0.0

    def lr_at(self, i):
        """LR for step i: min_lr at 0, max_lr at num_steps - 1, a constant ratio in between."""
        fraction = i / (self.num_steps - 1)
        return self.min_lr * (self.max_lr / self.min_lr) ** fraction

    def record(self, lr, loss):
        """Records one step's loss; returns False when the test should stop."""
        loss = float(loss)
        if not math.isfinite(loss):
            self.stop_reason = f"loss became {loss} at lr {lr:.3g}"
            return False
        self._average = self.beta * self._average + (1.0 - self.beta) * loss
        smoothed = self._average / (1.0 - self.beta ** (len(self.losses) + 1))
        self.lrs.append(float(lr))
        self.losses.append(loss)
        self.smoothed.append(smoothed)
        if len(self.smoothed) > 1 and smoothed > self.stop_factor * self.best:
            self.stop_reason = (f"smoothed loss {smoothed:.4g} exceeded {self.stop_factor:g}x "
                                f"the best {self.best:.4g} at lr {lr:.3g}")
            return False
        self.best = min(self.best, smoothed)
        return True

    def suggestion(self):
        """LR where the loss falls fastest: the steepest drop of the smoothed loss vs log10(lr).

        Only points between the first few and the smoothed minimum count, so the
        blown-up tail never wins. The moving average trails the loss it follows, so it
        is smoothed once more backwards in time, which cancels the lag. None when there
        are too few points or the loss never falls.
        """
        n = len(self.smoothed)
        if n < MIN_POINTS_FOR_SUGGESTION:
            return None
        start = max(MIN_SKIP_START, n // 20)
        end = int(np.argmin(self.smoothed)) + 1
        if end - start < 3:
            return None
        centred = _moving_average(self.smoothed[:end][::-1], self.beta)[::-1]
        log_lrs = np.log10(np.asarray(self.lrs[start:end]))
        slopes = np.gradient(centred[start:end], log_lrs)
        steepest = int(np.argmin(slopes))
        if slopes[steepest] >= 0:
            return None
        return self.lrs[start + steepest]

    def to_json(self):
        """The curve, the suggestion and the settings, as plain JSON-ready types."""
        return {
            "lrs": list(self.lrs),
            "losses": list(self.losses),
            "smoothed": list(self.smoothed),
            "suggestion": self.suggestion(),
            "best_smoothed_loss": self.best if math.isfinite(self.best) else None,
            "stop_reason": self.stop_reason,
            "settings": {"min_lr": self.min_lr, "max_lr": self.max_lr,
                         "num_steps": self.num_steps, "beta": self.beta,
                         "stop_factor": self.stop_factor},
        }


def _moving_average(values, beta):
    """Bias-corrected exponential moving average, as `record` computes it."""
    out = np.empty(len(values), dtype=np.float64)
    average = 0.0
    for i, value in enumerate(values):
        average = beta * average + (1.0 - beta) * value
        out[i] = average / (1.0 - beta ** (i + 1))
    return out


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
        found = files.read_json(os.path.join(model_dir, "lr_find.json"))
        suggestion = float(found["suggestion"])
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return suggestion if math.isfinite(suggestion) and suggestion > 0 else None


def run_lr_finder(config, *, min_lr=1e-10, max_lr=10.0, epochs=3.0, steps=0, strategy=None):
    """The whole range test for a TrainConfig; prints and returns the suggested LR (or None)."""
    trainer = trainer_lib.Trainer(dataclasses.replace(config, verbose=False), strategy=strategy)
    num_steps = steps or max(2, round(epochs * trainer.steps_per_epoch))
    test = LRRangeTest(min_lr, max_lr, num_steps)
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
