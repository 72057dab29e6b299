"""What the training loop reports and keeps, as callbacks with step- and epoch-end hooks
(in the manner of Orbit's actions): the progress bar, the TensorBoard writer, the history
files and plot, the best-model saver, and early stopping.

Each callback is given what it needs when it is made and what happened at each hook; none
reads the trainer. `History` is the run's table of epoch rows, which the history writer
saves, the best-model saver and early stopping read, and a resume cuts to its checkpoint.
"""

import os
import sys

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from tensorboard.plugins.hparams import api as hparams_api

from agetf.common import files, head_names, progress
from agetf.config import Stage
from agetf.evaluation import prediction_text
from agetf.modeling import outputs as model_outputs
from agetf.training import plots, run_files

_PROGRESS_METRICS = ("loss", "mae", "cs5", "age_range_accuracy", "gender_accuracy")


def epochs_since_best(values, minimize):
    """(epochs since the best finite value, that value): (len(values), None) when none is finite.

    Only a strict improvement counts, and a non-finite value never does.
    """
    best, since = None, 0
    for value in values:
        if np.isfinite(value) and (best is None or (value < best if minimize else value > best)):
            best, since = value, 0
        else:
            since += 1
    return since, best


def epoch_logs(train_results, val_results, *, lr, images_per_sec, seconds):
    """One epoch's row of the history: train and val_ metrics, lr, images/s, seconds."""
    logs = dict(train_results)
    logs.update({("val_" + k if not k.startswith("val_") else k): v
                 for k, v in val_results.items()})
    logs["lr"] = lr
    logs["images_per_sec"] = images_per_sec
    logs["epoch_seconds"] = seconds
    return logs


def append_epoch(history, epoch, logs):
    """Appends epoch `epoch` (0-based) of `logs` to `history`; a key new this epoch gets NaNs
    before."""
    for key, value in logs.items():
        history.setdefault(key, [np.nan] * epoch).append(float(value))
    history.setdefault("epoch", [])
    if len(history["epoch"]) < len(history["loss"]):
        history["epoch"].append(epoch + 1)


def write_history_files(model_dir, history):
    """history.json, history.csv and plots/training.png of `history`, each written atomically."""
    run_files.write_json(os.path.join(model_dir, "history.json"), history)
    run_files.write_history_csv(os.path.join(model_dir, "history.csv"), history)
    plots.plot_training(history, os.path.join(model_dir, "plots", "training.png"))


def load_history(model_dir, epochs_done):
    """model_dir's history.json cut to the checkpoint's `epochs_done` ({} for a new run): a
    kill between writing history and saving the checkpoint would otherwise repeat an epoch."""
    saved = files.read_json(os.path.join(model_dir, "history.json")) or {}
    return {key: values[:epochs_done] for key, values in saved.items()}


class Callback:
    """Hooks the loop calls; each does nothing unless overridden."""

    def on_epoch_begin(self, epoch, total_epochs):
        pass

    def on_steps_end(self, step, step_in_epoch, num_steps, loss, seconds, metrics, lr):
        """After a host call of `num_steps` steps; `step` is the global step after it."""

    def on_epoch_end(self, epoch, logs, step):
        """After validation; `logs` is the epoch's history row, already in the history."""

    def on_epoch_saved(self, epoch):
        """After the epoch's checkpoint is saved."""

    def on_train_end(self):
        pass


class ProgressBar(Callback):
    """'Epoch N/M', Keras' bar over the epoch's steps, and the epoch's summary line."""

    def __init__(self, steps_per_epoch, batch_size, log, show):
        self.steps_per_epoch, self.batch_size, self.log, self.show = (
            steps_per_epoch, batch_size, log, show)

    def _verbosity(self):
        """Keras' Progbar mode: 1 (a bar redrawn in place) on a terminal; elsewhere 2, one line
        an epoch. Keras would redraw its bar with carriage returns into a log file too: it
        takes any POSIX system for a terminal."""
        if not self.show:
            return 0
        return 1 if progress.on_terminal(sys.stdout) else 2

    def on_epoch_begin(self, epoch, total_epochs):
        self.log(f"Epoch {epoch + 1}/{total_epochs}")
        # Stateful: the loop passes running means, which the bar must show as they are.
        self.bar = keras.utils.Progbar(self.steps_per_epoch, verbose=self._verbosity(),
                                       stateful_metrics=_PROGRESS_METRICS + ("img/s",),
                                       unit_name="step")

    def on_steps_end(self, step, step_in_epoch, num_steps, loss, seconds, metrics, lr):
        shown = [(k, v) for k, v in metrics.items() if k in _PROGRESS_METRICS]
        images_per_sec = num_steps * self.batch_size / max(seconds, 1e-9)
        self.bar.update(step_in_epoch, values=shown + [("img/s", images_per_sec)])

    def on_epoch_end(self, epoch, logs, step):
        self.log("  " + "  ".join(f"{k} {v:.4g}" for k, v in logs.items()
                                  if k != "epoch_seconds")
                 + f"  ({logs['epoch_seconds']:.1f}s)")


class TensorBoardWriter(Callback):
    """Scalars per host call and per epoch, hyperparameters, skipped records, and a grid of
    validation faces with their predictions, under MODEL_DIR/logs/{train,validation}."""

    def __init__(self, logs_dir, batch_size, model=None, sample=None):
        self.batch_size, self.model, self.sample = batch_size, model, sample
        self.train_writer = tf.summary.create_file_writer(os.path.join(logs_dir, "train"))
        self.val_writer = tf.summary.create_file_writer(os.path.join(logs_dir, "validation"))

    def write_hparams(self, hparams):
        with self.train_writer.as_default():
            hparams_api.hparams(hparams)

    def write_skipped_records(self, audits, step, log):
        """Logs, and writes as data/skipped_records, how many records each split loses."""
        for audit, writer in zip(audits, (self.train_writer, self.val_writer)):
            if audit.lost:
                logging.warning(audit.describe())
            else:
                log(audit.describe())
            with writer.as_default(step=step):
                tf.summary.scalar("data/skipped_records", audit.skipped)
            writer.flush()

    def on_steps_end(self, step, step_in_epoch, num_steps, loss, seconds, metrics, lr):
        with self.train_writer.as_default(step=step):
            tf.summary.scalar("batch/loss", loss)
            tf.summary.scalar("learning_rate", lr)
            tf.summary.scalar("images_per_sec", num_steps * self.batch_size / max(seconds, 1e-9))
            tf.summary.scalar("step_time_ms", 1000.0 * seconds / num_steps)

    def on_epoch_end(self, epoch, logs, step):
        with self.train_writer.as_default(step=step):
            for name, value in logs.items():
                if name not in ("lr", "images_per_sec", "epoch_seconds") \
                        and not name.startswith("val_"):
                    tf.summary.scalar(f"epoch/{name}", value)
            tf.summary.scalar("epoch/learning_rate", logs["lr"])
            tf.summary.scalar("epoch/images_per_sec", logs["images_per_sec"])
        with self.val_writer.as_default(step=step):
            for name, value in logs.items():
                if name.startswith("val_"):
                    tf.summary.scalar(f"epoch/{name.removeprefix('val_')}", value)
            if self.sample is not None:
                tf.summary.image("faces", self._face_grid()[np.newaxis], step=step)
        self.train_writer.flush()
        self.val_writer.flush()

    def _face_grid(self):
        images, batch_labels = self.sample
        predicted = model_outputs.from_heads(self.model(images, training=False))
        captions = [prediction_text.grid_caption(
            batch_labels["age"][i], batch_labels["gender"][i], age=face.age,
            age_range=face.age_range, female_probability=face.female_probability)
            for i, face in enumerate(predicted.faces(images.shape[0]))]
        return plots.face_grid(images.numpy(), captions)

    def on_train_end(self):
        self.train_writer.close()
        self.val_writer.close()


class HistoryWriter(Callback):
    """history.json, history.csv and plots/training.png, rewritten at each epoch end: before
    the checkpoint, so a kill in between leaves rows the resume drops (the history is cut to
    the checkpoint's epoch), never a checkpoint without its row."""

    def __init__(self, model_dir, history):
        self.model_dir, self.history = model_dir, history

    def on_epoch_end(self, epoch, logs, step):
        write_history_files(self.model_dir, self.history)


class BestModelSaver(Callback):
    """best.keras: the model of the epoch with the best `metric` so far (finite values only);
    final.keras at the end (and best.keras then, if no epoch ever improved)."""

    def __init__(self, model, model_dir, metric, history, log):
        self.model, self.model_dir, self.metric, self.log = model, model_dir, metric, log
        self.minimize = head_names.lower_is_better(metric)
        self.best = epochs_since_best(history.get(metric, []), self.minimize)[1]
        self._improved = False

    def on_epoch_end(self, epoch, logs, step):
        value = logs[self.metric]
        better = self.best is None or (value < self.best if self.minimize else value > self.best)
        self._improved = bool(better and np.isfinite(value))
        if self._improved:
            self.best = value

    def on_epoch_saved(self, epoch):
        """Not before the save, or a failed save (a full disk) would leave a best.keras of an
        epoch that no checkpoint holds, which the resume then trains again differently."""
        if self._improved:
            run_files.save_model(self.model, os.path.join(self.model_dir, "best.keras"))
            self.log(f"  {self.metric} improved to {self.best:.4g}; saved best.keras")
        self._improved = False

    def on_train_end(self):
        run_files.save_model(self.model, os.path.join(self.model_dir, "final.keras"))
        best = os.path.join(self.model_dir, "best.keras")
        if not os.path.exists(best):
            run_files.save_model(self.model, best)


class EarlyStopping(Callback):
    """Ends the current stage after `patience` epochs without improvement of `metric`.

    Counted from the history, so a rerun of a stopped run stays stopped; each stage of
    --fine_tuning counts afresh from its own first epoch.
    """

    def __init__(self, metric, patience, history):
        self.metric, self.patience, self.history = metric, patience, history
        self.minimize = head_names.lower_is_better(metric)

    def reason(self, stage, stage_start_epoch):
        """Why early stopping ends `stage` now, or None."""
        if not self.patience:
            return None
        values = self.history.get(self.metric, [])[stage_start_epoch:]
        since, best = epochs_since_best(values, self.minimize)
        if since < self.patience:
            return None
        where = "" if stage is Stage.TRAIN else f" in stage {stage.value}"
        best = "none finite" if best is None else f"{best:.4g}"
        return (f"Early stopping: {self.metric} has not improved for {self.patience} epochs"
                f"{where} (best {best})")


class Callbacks(Callback):
    """Several callbacks called in order, as one."""

    def __init__(self, callbacks):
        self.callbacks = list(callbacks)

    def on_epoch_begin(self, epoch, total_epochs):
        for callback in self.callbacks:
            callback.on_epoch_begin(epoch, total_epochs)

    def on_steps_end(self, *args):
        for callback in self.callbacks:
            callback.on_steps_end(*args)

    def on_epoch_end(self, epoch, logs, step):
        for callback in self.callbacks:
            callback.on_epoch_end(epoch, logs, step)

    def on_epoch_saved(self, epoch):
        for callback in self.callbacks:
            callback.on_epoch_saved(epoch)

    def on_train_end(self):
        for callback in self.callbacks:
            callback.on_train_end()
