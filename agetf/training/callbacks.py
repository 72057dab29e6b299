"""What the training loop reports and keeps at step and epoch ends.

Progress bar, TensorBoard, history files and plots, LR schedule updates, best-model
saving and early stopping: small pieces the loop calls, kept out of the loop itself.
"""

import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from tensorboard.plugins.hparams import api as hparams_api

from agetf.common import progress
from agetf.data import labels
from agetf.modeling import heads
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
    logs.update({("val_" + k if not k.startswith("val_") else k): v for k, v in val_results.items()})
    logs["lr"] = lr
    logs["images_per_sec"] = images_per_sec
    logs["epoch_seconds"] = seconds
    return logs


def append_epoch(history, epoch, logs):
    """Appends epoch `epoch` (0-based) of `logs` to `history`; a key new this epoch gets NaNs before."""
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


class RunMonitor:
    """Called by `Trainer.fit` at step and epoch ends; owns every file the loop writes."""

    def __init__(self, trainer):
        self.trainer = trainer
        config = trainer.config
        self.model_dir = config.model_dir
        self.chief = trainer.chief
        self.best_metric = config.best_metric
        allowed = ["val_" + name for name in heads.metric_names(config.model.heads)]
        if self.best_metric not in allowed:
            raise ValueError(f"--best_metric={self.best_metric} is not reported for these heads; "
                             f"use one of {', '.join(allowed)}")
        self.minimize = heads.lower_is_better(self.best_metric)
        done = int(trainer.epoch.numpy())
        saved = run_files.read_json(self._path("history.json")) or {}
        # A kill between writing history and saving the checkpoint would duplicate an epoch.
        self.history = {key: values[:done] for key, values in saved.items()}
        # The best value so far (for best.keras); early stopping counts within the stage.
        self.best = epochs_since_best(self.history.get(self.best_metric, []), self.minimize)[1]
        if self.chief:
            logs = self._path("logs")
            self.train_writer = tf.summary.create_file_writer(os.path.join(logs, "train"))
            self.val_writer = tf.summary.create_file_writer(os.path.join(logs, "validation"))
            if not trainer.resumed:
                self._write_hparams()
            if config.input.skip_corrupt_records:
                self._report_skipped_records()
        else:
            self.train_writer = self.val_writer = tf.summary.create_noop_writer()
        self._sample = self._take_sample_faces(config)
        self.stop_reason = None
        self._improved = False  # set by epoch_end, acted on by epoch_saved

    def _path(self, *parts):
        return os.path.join(self.model_dir, *parts)

    def _log(self, message):
        self.trainer._log(message)

    def _write_hparams(self):
        config = self.trainer.config
        hparams = {
            "backbone": config.model.backbone, "img_dim": config.model.img_dim,
            "heads": ",".join(config.model.heads), "alpha": config.model.alpha,
            "batch_size": config.batch_size, "lr": config.lr, "optimizer": config.optimizer,
            "schedule": config.schedule, "fine_tuning": config.fine_tune.enabled,
            "precision": self.trainer.policy, "epochs": config.total_epochs,
        }
        with self.train_writer.as_default():
            hparams_api.hparams(hparams)

    def _report_skipped_records(self):
        """Logs, and writes as data/skipped_records, how many records each split loses."""
        from agetf.data import record_audit

        step = int(self.trainer.global_step.numpy())
        for split, writer in (("train", self.train_writer), ("validation", self.val_writer)):
            audit = record_audit.audit_split(self.trainer.config.input.data_dir, split)
            if audit.lost:
                logging.warning(audit.describe())
            else:
                self._log(audit.describe())
            with writer.as_default(step=step):
                tf.summary.scalar("data/skipped_records", audit.skipped)
            writer.flush()

    def _take_sample_faces(self, config):
        if not config.summary_images:
            return None
        from agetf.data import input_pipeline

        data = input_pipeline.build_dataset(config.input, "validation", config.summary_images,
                                            training=False)
        for images, batch_labels in data.take(1):
            return images, batch_labels
        return None

    # -- step level ---------------------------------------------------------------------

    def epoch_begin(self, epoch):
        trainer = self.trainer
        self._epoch_start = time.perf_counter()
        self._epoch_images = 0
        self._log(f"Epoch {epoch + 1}/{trainer.total_epochs}")
        # Stateful: the loop passes running means, which the bar must show as they are.
        self.progbar = keras.utils.Progbar(trainer.steps_per_epoch,
                                           verbose=self._progbar_verbosity(),
                                           stateful_metrics=_PROGRESS_METRICS + ("img/s",),
                                           unit_name="step")

    def _progbar_verbosity(self):
        """Keras' Progbar mode: 1 (a bar redrawn in place) on a terminal; elsewhere 2, one line
        an epoch. Keras would redraw its bar with carriage returns into a log file too: it
        takes any POSIX system for a terminal."""
        if not (self.chief and self.trainer.config.verbose):
            return 0
        return 1 if progress.on_terminal(sys.stdout) else 2

    def steps_end(self, num_steps, loss, seconds):
        trainer = self.trainer
        images = num_steps * trainer.config.batch_size
        self._epoch_images += images
        images_per_sec = images / max(seconds, 1e-9)
        metrics = trainer.train_metrics.results()  # every worker: the read is collective
        step = int(trainer.global_step.numpy())
        lr = trainer.learning_rate()
        if self.chief:
            shown = [(k, v) for k, v in metrics.items() if k in _PROGRESS_METRICS]
            self.progbar.update(int(trainer.step_in_epoch.numpy()),
                                values=shown + [("img/s", images_per_sec)])
        with self.train_writer.as_default(step=step):
            tf.summary.scalar("batch/loss", loss)
            tf.summary.scalar("learning_rate", lr)
            tf.summary.scalar("images_per_sec", images_per_sec)
            tf.summary.scalar("step_time_ms", 1000.0 * seconds / num_steps)

    # -- epoch level --------------------------------------------------------------------

    def epoch_end(self, epoch, train_results, val_results):
        """Records the epoch; returns True when training should stop (early stopping)."""
        trainer = self.trainer
        seconds = time.perf_counter() - self._epoch_start
        logs = epoch_logs(train_results, val_results, lr=trainer.learning_rate(),
                          images_per_sec=self._epoch_images / max(seconds, 1e-9), seconds=seconds)
        message = trainer.schedule.on_epoch_end(epoch, logs)
        if message:
            self._log(message)
        append_epoch(self.history, epoch, logs)
        self._log("  " + "  ".join(f"{k} {v:.4g}" for k, v in logs.items() if k != "epoch_seconds")
                  + f"  ({seconds:.1f}s)")
        step = int(trainer.global_step.numpy())
        self._write_epoch_summaries(step, train_results, val_results, logs)
        self._improved = self._track_best(logs[self.best_metric])
        if self.chief:
            # Before the checkpoint, so a kill in between leaves rows the resume drops
            # (history is cut to the checkpoint's epoch), never a checkpoint without its row.
            write_history_files(self.model_dir, self.history)
        self.stop_reason = self.early_stop_reason()
        if self.stop_reason:
            ends = ("stage heads ends; stage fine_tune begins with a fresh patience count"
                    if trainer.stage == "heads" else "the run ends")
            self._log(f"{self.stop_reason}: {ends}")
        return self.stop_reason is not None

    def epoch_saved(self):
        """After the epoch's checkpoint is saved: best.keras, if the epoch improved on the best.

        Not before the save, or a failed save (a full disk) would leave a best.keras of an
        epoch that no checkpoint holds, which the resume then trains again differently.
        """
        if self.chief and self._improved:
            run_files.save_model(self.trainer.model, self._path("best.keras"))
            self._log(f"  {self.best_metric} improved to {self.best:.4g}; saved best.keras")
        self._improved = False

    def early_stop_reason(self):
        """Why early stopping ends the current stage now, or None.

        Counted from the history, so a rerun of a stopped run stays stopped; each stage of
        --fine_tuning counts afresh from its own first epoch.
        """
        patience = self.trainer.config.early_stopping_patience
        if not patience:
            return None
        values = self.history.get(self.best_metric, [])[self.trainer.stage_start_epoch():]
        since, best = epochs_since_best(values, self.minimize)
        if since < patience:
            return None
        where = " in stage heads" if self.trainer.stage == "heads" else (
            " in stage fine_tune" if self.trainer.stage == "fine_tune" else "")
        best = "none finite" if best is None else f"{best:.4g}"
        return (f"Early stopping: {self.best_metric} has not improved for {patience} epochs"
                f"{where} (best {best})")

    def _track_best(self, value):
        better = self.best is None or (value < self.best if self.minimize else value > self.best)
        if better and np.isfinite(value):
            self.best = value
            return True
        return False

    def _write_epoch_summaries(self, step, train_results, val_results, logs):
        with self.train_writer.as_default(step=step):
            for name, value in train_results.items():
                tf.summary.scalar(f"epoch/{name}", value)
            tf.summary.scalar("epoch/learning_rate", logs["lr"])
            tf.summary.scalar("epoch/images_per_sec", logs["images_per_sec"])
        with self.val_writer.as_default(step=step):
            for name, value in val_results.items():
                tf.summary.scalar(f"epoch/{name.removeprefix('val_')}", value)
            if self._sample is not None:
                tf.summary.image("faces", self._face_grid()[np.newaxis], step=step)
        self.train_writer.flush()
        self.val_writer.flush()

    def _face_grid(self):
        images, batch_labels = self._sample
        outputs = self.trainer.model(images, training=False)
        captions = []
        ages = heads.predicted_age_years(outputs)
        ages = None if ages is None else ages.numpy()
        for i in range(images.shape[0]):
            caption = f"true {int(batch_labels['age'][i])} {'F' if batch_labels['gender'][i] > 0.5 else 'M'}"
            predicted = []
            if ages is not None:
                predicted.append(f"{ages[i]:.0f}")
            if "age_range" in outputs:
                predicted.append(labels.AGE_RANGE_NAMES[int(np.argmax(outputs['age_range'][i]))])
            if "gender" in outputs:
                predicted.append("F" if float(outputs["gender"][i]) > 0.5 else "M")
            captions.append(caption + "\npred " + " ".join(predicted))
        return plots.face_grid(images.numpy(), captions)

    def train_end(self):
        trainer = self.trainer
        if self.chief:
            run_files.save_model(trainer.model, self._path("final.keras"))
            if not os.path.exists(self._path("best.keras")):
                run_files.save_model(trainer.model, self._path("best.keras"))
            self.train_writer.close()
            self.val_writer.close()
