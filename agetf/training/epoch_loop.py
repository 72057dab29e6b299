"""The epoch loop of `Trainer.fit`: host calls of steps, validation, the stage switch,
checkpoints, and the callbacks at each step and epoch end."""

import os
import time

import numpy as np
import tensorflow as tf

from agetf.config import Stage
from agetf.data import input_pipeline, record_audit
from agetf.training import callbacks as callbacks_lib
from agetf.training import termination


def make_callbacks(trainer, history):
    """(the run's callbacks as one, its early stopping): everything the chief writes, and the
    progress bar; a worker that is not the chief writes nothing."""
    config = trainer.config
    early_stopping = callbacks_lib.EarlyStopping(config.best_metric,
                                                 config.early_stopping_patience, history)
    progress = callbacks_lib.ProgressBar(trainer.steps_per_epoch, config.batch_size, trainer.log,
                                         show=trainer.chief and config.verbose)
    if not trainer.chief:
        return callbacks_lib.Callbacks([progress]), early_stopping
    tensorboard = callbacks_lib.TensorBoardWriter(
        os.path.join(config.model_dir, "logs"), config.batch_size, model=trainer.model,
        sample=sample_faces(config))
    if not trainer.resumed:
        tensorboard.write_hparams(hparams(trainer))
    if config.input.skip_corrupt_records:
        audits = [record_audit.audit_split(source.path, split)
                  for source in config.input.sources for split in ("train", "validation")]
        tensorboard.write_skipped_records(audits, int(trainer.global_step.numpy()), trainer.log)
    return callbacks_lib.Callbacks([
        progress, tensorboard,
        callbacks_lib.BestModelSaver(trainer.model, config.model_dir, config.best_metric, history,
                                     trainer.log),
        callbacks_lib.HistoryWriter(config.model_dir, history)]), early_stopping


def hparams(trainer):
    config = trainer.config
    return {"backbone": config.model.backbone, "img_dim": config.model.img_dim,
            "heads": ",".join(config.model.heads), "alpha": config.model.alpha,
            "batch_size": config.batch_size, "lr": config.lr, "optimizer": config.optimizer,
            "schedule": config.schedule.name, "fine_tuning": config.fine_tune.enabled,
            "precision": trainer.policy, "epochs": config.planned_epochs}


def sample_faces(config):
    """A fixed batch of validation faces for TensorBoard's grid, or None."""
    if not config.summary_images:
        return None
    data = input_pipeline.build_dataset(config.input, "validation", config.summary_images,
                                        training=False)
    for images, batch_labels in data.take(1):
        return images, batch_labels
    return None


def average_moving_statistics(strategy, model):
    """Under multi-worker, sets BatchNorm moving statistics to their mean over workers.

    Each worker updates them from its own batches only, so without this the workers'
    models (and the chief's saved one) drift apart in these variables.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    variables = [v for v in model.non_trainable_variables if tf.as_dtype(v.dtype).is_floating]
    if not variables:
        return
    flat = tf.concat([tf.reshape(tf.cast(v.value, tf.float32), [-1]) for v in variables], 0)
    mean = strategy.reduce(
        tf.distribute.ReduceOp.MEAN,
        strategy.experimental_distribute_values_from_function(lambda _: tf.identity(flat)),
        axis=None)
    offset = 0
    for v in variables:
        size = int(np.prod(v.shape))
        v.assign(tf.cast(tf.reshape(mean[offset:offset + size], v.shape), v.dtype))
        offset += size


def _stop_for_termination(trainer, save):
    if save:
        trainer.save_checkpoint()
    raise termination.Preempted(
        f"terminated (SIGTERM) at epoch {int(trainer.epoch.numpy()) + 1}, step "
        f"{int(trainer.step_in_epoch.numpy())}; checkpoint saved in {trainer.restore_dir}; "
        "rerun the same command to resume")


def _steps_this_call(trainer):
    """Steps of the next host call: up to --steps_per_loop, ending at the epoch's end, at a
    --checkpoint_every_steps boundary and at the profiler's START and END."""
    config = trainer.config
    n = min(config.runtime.steps_per_loop,
            trainer.steps_per_epoch - int(trainer.step_in_epoch.numpy()))
    step = int(trainer.global_step.numpy())
    if config.checkpoint_every_steps:
        n = min(n, config.checkpoint_every_steps - step % config.checkpoint_every_steps)
    return trainer.profiler.steps_before_boundary(step, n)


def _train_epoch(trainer, iterator, callbacks, watcher):
    """The rest of the current epoch's steps; returns the images trained on."""
    config = trainer.config
    images = 0
    while int(trainer.step_in_epoch.numpy()) < trainer.steps_per_epoch:
        n = _steps_this_call(trainer)
        step = int(trainer.global_step.numpy())
        trainer.profiler.before_steps(step)
        start = time.perf_counter()
        with trainer.profiler.trace(step):
            loss = trainer.train_steps(iterator, n)
        seconds = time.perf_counter() - start
        images += n * config.batch_size
        step = int(trainer.global_step.numpy())
        metrics = trainer.train_metrics.results()  # every worker: the read is collective
        callbacks.on_steps_end(step, int(trainer.step_in_epoch.numpy()), n, loss, seconds,
                               metrics, trainer.learning_rate())
        trainer.profiler.after_steps(step)
        if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0:
            trainer.save_checkpoint()
        if watcher.requested():
            _stop_for_termination(trainer, save=True)
    return images


def fit(trainer, watcher, extra_callbacks=()):
    """Trains `trainer` from its current state to its total_epochs; returns the history."""
    for warning in trainer.schedule_warnings:
        trainer.warn(warning)
    history = callbacks_lib.load_history(trainer.config.model_dir, int(trainer.epoch.numpy()))
    callbacks, early_stopping = make_callbacks(trainer, history)
    callbacks.callbacks.extend(extra_callbacks)
    iterator = iter(trainer.train_data)
    while int(trainer.epoch.numpy()) < trainer.total_epochs:
        epoch = int(trainer.epoch.numpy())
        trainer.enter_due_stage()
        # A rerun of a run that early stopping ended stays stopped (the history says so).
        stopped = early_stopping.reason(trainer.stage, trainer.stage_start_epoch())
        if stopped and trainer.stage is Stage.FROZEN_BACKBONE:
            trainer.log(f"{stopped}: stage {Stage.FROZEN_BACKBONE.value} ends after epoch {epoch}")
            trainer.end_stage_early()
            continue
        if stopped:
            trainer.log(f"Nothing to train: early stopping ended this run after epoch {epoch}: "
                        f"{stopped.removeprefix('Early stopping: ')}. To train on, rerun with "
                        "a larger --early_stopping_patience, or 0")
            break
        callbacks.on_epoch_begin(epoch, trainer.total_epochs)
        start = time.perf_counter()
        trainer.train_metrics.reset()
        images = _train_epoch(trainer, iterator, callbacks, watcher)
        train_results = trainer.train_metrics.results()
        average_moving_statistics(trainer.strategy, trainer.model)
        val_results = trainer.evaluate("validation")
        trainer.epoch.assign_add(1)
        trainer.step_in_epoch.assign(0)
        seconds = time.perf_counter() - start
        logs = callbacks_lib.epoch_logs(train_results, val_results, lr=trainer.learning_rate(),
                                        images_per_sec=images / max(seconds, 1e-9),
                                        seconds=seconds)
        message = trainer.schedule.on_epoch_end(epoch, logs)
        if message:
            trainer.log(message)
        callbacks_lib.append_epoch(history, epoch, logs)
        callbacks.on_epoch_end(epoch, logs, int(trainer.global_step.numpy()))
        stop_reason = early_stopping.reason(trainer.stage, trainer.stage_start_epoch())
        if stop_reason:
            ends = (f"stage {Stage.FROZEN_BACKBONE.value} ends; stage {Stage.FINE_TUNE.value} "
                    "begins with a fresh patience count"
                    if trainer.stage is Stage.FROZEN_BACKBONE else "the run ends")
            trainer.log(f"{stop_reason}: {ends}")
        # An early stop in stage 1 starts stage 2 now; in the last stage it ends the run.
        run_ends = bool(stop_reason) and not trainer.end_stage_early()
        # Before the save, so a run killed at the switch resumes with stage 2's optimizer.
        trainer.enter_due_stage()
        trainer.save_checkpoint()
        # After the checkpoint: a failed save leaves no best.keras of an unsaved epoch.
        callbacks.on_epoch_saved(epoch)
        if watcher.requested():
            _stop_for_termination(trainer, save=False)
        if run_ends:
            break
    callbacks.on_train_end()
    return history
