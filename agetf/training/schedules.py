"""Learning-rate schedules the training loop queries every step and informs every epoch.

Built from agetf.config's schedule dataclasses, which have checked their settings; a
schedule checks only what depends on the stage (its length in steps).

Each schedule is a `tf.Module`, so `tf.train.Checkpoint(schedule=...)` saves and
restores whatever state it keeps (only ReduceOnPlateau has any). `learning_rate(step)`
is graph-safe and runs inside the loop's `tf.function`; `on_epoch_end` runs on the
host after validation.
"""

import math

import numpy as np
import tensorflow as tf

from agetf import UsageError, config

SCHEDULES = tuple(config.SCHEDULES)

# Metric names where larger is better, for mode="auto".
_MAX_MODE_HINTS = ("acc", "cs5", "cs@")


def _state_variable(value, dtype, name):
    """A non-trainable variable that is safe to create under any tf.distribute strategy.

    Updates happen on the host in cross-replica context, which writes every replica's
    copy; ONLY_FIRST_REPLICA keeps an accidental replica-context write well defined.
    """
    return tf.Variable(
        value, dtype=dtype, trainable=False, name=name,
        synchronization=tf.VariableSynchronization.ON_WRITE,
        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


def _format_lr(lr):
    return f"{lr:.3g}"


def _require(condition, message):
    if not condition:
        raise UsageError(message)


class Schedule(tf.Module):
    """Base class: a learning rate per optimizer step plus an epoch-end hook."""

    def learning_rate(self, step):
        """Returns the float32 learning rate for 0-based global optimizer step `step`."""
        raise NotImplementedError

    def on_epoch_end(self, epoch, metrics):
        """Host-side hook after validation; returns a message when it changed the LR."""
        del epoch, metrics
        return None


class Constant(Schedule):
    """The same learning rate at every step."""

    def __init__(self, lr):
        super().__init__(name="constant_schedule")
        self.lr = float(lr)

    def learning_rate(self, step):
        del step
        return tf.constant(self.lr, tf.float32)


class ReduceOnPlateau(Schedule):
    """keras.callbacks.ReduceLROnPlateau semantics, with its state in checkpointable variables."""

    def __init__(self, lr, *, monitor="val_loss", mode="min", factor=0.2, patience=3,
                 cooldown=0, min_lr=1e-6, min_delta=1e-4):
        super().__init__(name="reduce_on_plateau_schedule")
        self.monitor = monitor
        self.mode = _resolve_mode(mode, monitor)
        self.factor = float(factor)
        self.patience = int(patience)
        self.cooldown = int(cooldown)
        self.min_lr = float(min_lr)
        self.min_delta = abs(float(min_delta))
        # float64 so repeated reductions and the min_lr floor compare exactly.
        self.lr = _state_variable(float(lr), tf.float64, "lr")
        worst = math.inf if self.mode == "min" else -math.inf
        self.best = _state_variable(worst, tf.float64, "best")
        self.wait = _state_variable(0, tf.int64, "wait")
        self.cooldown_counter = _state_variable(0, tf.int64, "cooldown_counter")

    def learning_rate(self, step):
        del step
        return tf.cast(self.lr, tf.float32)

    def _is_improvement(self, current):
        best = float(self.best.numpy())
        if self.mode == "min":
            return current < best - self.min_delta
        return current > best + self.min_delta

    def on_epoch_end(self, epoch, metrics):
        if self.monitor not in metrics:
            raise UsageError(
                f"ReduceLROnPlateau monitors {self.monitor!r}, which is not among the "
                f"metrics ({', '.join(sorted(metrics)) or 'none'}); pick one of those.")
        current = float(metrics[self.monitor])
        cooldown_counter = int(self.cooldown_counter.numpy())
        wait = int(self.wait.numpy())
        message = None
        if cooldown_counter > 0:
            cooldown_counter -= 1
            wait = 0
        if self._is_improvement(current):
            self.best.assign(current)
            wait = 0
        elif cooldown_counter == 0:
            wait += 1
            if wait >= self.patience:
                old_lr = float(self.lr.numpy())
                # Compared in float32 as Keras does, so a floor reached once stays put.
                if np.float32(old_lr) > np.float32(self.min_lr):
                    new_lr = max(old_lr * self.factor, self.min_lr)
                    self.lr.assign(new_lr)
                    cooldown_counter = self.cooldown
                    wait = 0
                    message = (
                        f"ReduceLROnPlateau: {self.monitor} did not improve on "
                        f"{float(self.best.numpy()):.4g} for {self.patience} epochs "
                        f"(epoch {epoch + 1}); lr {_format_lr(old_lr)} -> {_format_lr(new_lr)}")
        self.wait.assign(wait)
        self.cooldown_counter.assign(cooldown_counter)
        return message


def _resolve_mode(mode, monitor):
    if mode != "auto":
        return mode
    name = monitor.lower()
    return "max" if any(hint in name for hint in _MAX_MODE_HINTS) else "min"


class Cyclic(Schedule):
    """Smith's cyclical learning rate (triangular, triangular2, exp_range), per step."""

    def __init__(self, base_lr=1e-4, max_lr=1e-1, step_size=2000,
                 mode="triangular", gamma=1.0):
        super().__init__(name="cyclic_schedule")
        _require(step_size >= 1, f"cyclic half cycle must be >= 1 step, got {step_size}")
        self.base_lr = float(base_lr)
        self.max_lr = float(max_lr)
        self.step_size = float(step_size)
        self.mode = mode
        self.gamma = float(gamma)

    def learning_rate(self, step):
        # float64: gamma**step and step/step_size lose precision in float32 after ~1e6 steps.
        step = tf.cast(step, tf.float64)
        cycle = tf.floor(1.0 + step / (2.0 * self.step_size))
        x = tf.abs(step / self.step_size - 2.0 * cycle + 1.0)
        if self.mode == "triangular":
            scale = tf.constant(1.0, tf.float64)
        elif self.mode == "triangular2":
            scale = 1.0 / tf.pow(tf.constant(2.0, tf.float64), cycle - 1.0)
        else:
            scale = tf.pow(tf.constant(self.gamma, tf.float64), step)
        lr = self.base_lr + (self.max_lr - self.base_lr) * tf.nn.relu(1.0 - x) * scale
        return tf.cast(lr, tf.float32)


class Cosine(Schedule):
    """Linear warm-up to `lr`, then cosine decay to `min_lr` at `total_steps`, flat after."""

    def __init__(self, lr, *, total_steps, warmup_steps=0, min_lr=0.0):
        super().__init__(name="cosine_schedule")
        _require(0 <= min_lr <= lr, f"cosine min_lr must be in [0, lr={lr}], got {min_lr}")
        _require(total_steps > warmup_steps,
                 f"cosine total_steps ({total_steps}) must exceed warm-up steps "
                 f"({warmup_steps}); train longer or shorten the warm-up")
        self.lr = float(lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.min_lr = float(min_lr)

    def learning_rate(self, step):
        step = tf.cast(step, tf.float64)
        # (step + 1) so the first step already moves; the warm-up ends exactly at lr.
        warmup = self.lr * (step + 1.0) / max(self.warmup_steps, 1)
        decay_steps = float(self.total_steps - self.warmup_steps)
        progress = tf.clip_by_value((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        cosine = self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + tf.cos(math.pi * progress))
        lr = tf.where(step < self.warmup_steps, warmup, cosine)
        return tf.cast(lr, tf.float32)


def make_schedule(schedule, *, lr, steps_per_epoch, total_steps):
    """Builds the schedule that `schedule` (an agetf.config schedule dataclass) describes.

    `lr` is unused by cyclic_lr, whose range is base_lr..max_lr; `total_steps` is the stage's
    length, where cosine ends its decay.
    """
    _require(steps_per_epoch >= 1, f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    if isinstance(schedule, config.ConstantSchedule):
        return Constant(lr)
    if isinstance(schedule, config.PlateauSchedule):
        return ReduceOnPlateau(lr, monitor=schedule.monitor, mode=schedule.mode,
                               factor=schedule.factor, patience=schedule.patience,
                               cooldown=schedule.cooldown, min_lr=schedule.min_lr,
                               min_delta=schedule.min_delta)
    if isinstance(schedule, config.CyclicSchedule):
        half_cycle = schedule.half_cycle_steps
        if half_cycle <= 0:
            half_cycle = max(1, round(schedule.half_cycle_epochs * steps_per_epoch))
        return Cyclic(base_lr=schedule.base_lr, max_lr=schedule.max_lr, step_size=half_cycle,
                      mode=schedule.mode, gamma=schedule.gamma)
    if isinstance(schedule, config.CosineSchedule):
        return Cosine(lr, total_steps=total_steps, warmup_steps=warmup_steps(schedule,
                                                                              steps_per_epoch),
                      min_lr=schedule.min_lr)
    raise UsageError(f"unknown learning-rate schedule {schedule!r}; use one of "
                     f"{', '.join(config.SCHEDULES)}")


def warmup_steps(schedule, steps_per_epoch):
    """A cosine schedule's warm-up in steps: warmup_steps when > 0, else warmup_epochs."""
    if schedule.warmup_steps > 0:
        return schedule.warmup_steps
    return round(schedule.warmup_epochs * steps_per_epoch)
