"""The custom distributed training loop: one loop for every tf.distribute strategy.

Not `model.fit`: under MultiWorkerMirroredStrategy it fails with Keras 3 (see
docs/training.md). A `tf.function` runs `steps_per_loop` steps of `strategy.run` per host
call; state (model, optimizer, schedule, epoch, step) lives in a `tf.train.Checkpoint`
so a rerun of the same command resumes where the last one stopped (`Trainer.restore`).
What the loop reports and keeps at step and epoch ends is in agetf.training.callbacks;
the stages of --fine_tuning in agetf.training.stages.
"""

import dataclasses
import json
import os

import keras
import tensorflow as tf
from absl import logging

from agetf.common import files
from agetf.config import Stage, TrainConfig
from agetf.data import augment, dataset_mix, input_pipeline
from agetf.modeling import heads
from agetf.modeling import model as model_lib
from agetf.training import (
    checkpoints,
    distribution,
    epoch_loop,
    profiling,
    run_files,
    schedules,
    stages,
    termination,
    warm_start,
)
from agetf.training.checkpoints import one_line

__all__ = ["NonFiniteLossError", "Trainer", "config_to_json", "make_optimizer"]

# Checkpointed epoch at which FINE_TUNE begins (newer than the other objects).
_FINE_TUNE_START = "fine_tune_start_epoch"


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


def make_optimizer(name, lr, momentum, policy):
    """Adam, or SGD with Nesterov momentum; wrapped for loss scaling under mixed_float16."""
    if name == "adam":
        optimizer = keras.optimizers.Adam(learning_rate=lr)
    else:
        optimizer = keras.optimizers.SGD(learning_rate=lr, momentum=momentum, nesterov=True)
    if policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def set_batchnorm_momentum(model, momentum):
    """Sets the moving-average momentum of every BatchNormalization layer in `model`."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def config_to_json(config):
    """The whole configuration as JSON values; the schedule carries its name (a ClassVar,
    which dataclasses.asdict leaves out)."""
    settings = dataclasses.asdict(config)
    settings["schedule"] = {"name": config.schedule.name, **settings["schedule"]}
    return json.loads(json.dumps(settings, default=str))


def _counter(name, initial=0):
    """A checkpointed int64 counter that every replica reads and the first one writes."""
    return tf.Variable(initial, name=name, trainable=False, dtype=tf.int64,
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


class Trainer:
    """Builds everything a run needs inside the strategy's scope, and trains it."""

    def __init__(self, config: TrainConfig, strategy=None):
        self.config = config
        runtime = config.runtime
        self.strategy = strategy or distribution.strategy_for(runtime)
        self.chief = distribution.is_chief(self.strategy)
        distribution.check_batch_size(config.batch_size, self.strategy.num_replicas_in_sync)
        self.policy = distribution.resolve_mixed_precision(runtime.mixed_precision, self.strategy)
        distribution.set_precision_policy(self.policy)
        # Here, where checkpoints are restored: every way of building a Trainer is checked.
        checkpoints.check_run_definition(config.model_dir, config.model)
        self.num_train = dataset_mix.train_faces(config.input, config.batch_size)
        self.steps_per_epoch = config.steps_per_epoch or self.num_train // config.batch_size
        if config.input.mixed:
            self.log(dataset_mix.describe(config.input, dataset_mix.split_sizes(config.input),
                                          config.batch_size, self.steps_per_epoch))
        # Said when training starts (fit), so a trainer that never trains (the LR finder's)
        # does not repeat them.
        self.schedule_warnings = stages.check_schedules(config, self.steps_per_epoch)
        # The chief's steps only: every worker runs the same ones.
        self.profiler = profiling.StepProfiler(runtime.profile_steps if self.chief else None,
                                               os.path.join(config.model_dir, "logs"),
                                               log=self.log)
        self.restore_dir = os.path.join(config.model_dir, "checkpoints")
        self.checkpoint_dir = distribution.worker_dir(config.model_dir, self.strategy,
                                                      "checkpoints")
        mc = config.model
        with self.strategy.scope():
            self.model = model_lib.build_model(backbone=mc.backbone, img_dim=mc.img_dim,
                                               heads=mc.heads, alpha=mc.alpha, weights=mc.weights,
                                               dropout=mc.dropout)
            if mc.batchnorm_momentum is not None:
                set_batchnorm_momentum(self.model, mc.batchnorm_momentum)
            self.epoch = _counter("epoch")
            self.step_in_epoch = _counter("step_in_epoch")
            self.global_step = _counter("global_step")
            self.fine_tune_start_epoch = _counter(_FINE_TUNE_START, config.fine_tune.head_epochs)
            self.train_metrics = heads.MetricSet(mc.heads)
            self.val_metrics = heads.MetricSet(mc.heads, prefix="val_")
        self.train_data = self.strategy.distribute_datasets_from_function(
            lambda ctx: self._dataset("train", ctx, training=True))
        self.stage = None
        self.resumed = False
        self.restore()

    def restore(self):
        """Resumes from the newest checkpoint that reads whole (a damaged newer one is skipped
        with a warning), or enters the first stage of a new run."""
        latest = checkpoints.restorable_checkpoint(self.restore_dir, warn=self.warn)
        start_epoch = checkpoints.saved_value(latest, "epoch") if latest else 0
        saved_start = checkpoints.saved_value(latest, _FINE_TUNE_START) if latest else None
        if saved_start is not None:  # early stopping may have ended the first stage early
            self.fine_tune_start_epoch.assign(saved_start)
        self.enter_stage(self.stage_for_epoch(start_epoch))
        if not latest:
            if self.config.init_from:  # a new run only: a resumed one has its own weights
                warm_start.init_from_run(self.model, self.config.init_from, self.log)
            return
        fresh_stage = self._stage_two_begins_at(latest, start_epoch)
        checkpoint = self.checkpoint
        if saved_start is None or fresh_stage:
            objects = self._checkpoint_objects()
            if saved_start is None:  # made before the fine-tuning start was checkpointed
                del objects[_FINE_TUNE_START]
            if fresh_stage:
                del objects["optimizer"], objects["stage_start_step"]
            checkpoint = tf.train.Checkpoint(**objects)
        checkpoints.restore(checkpoint, latest, self.restore_dir, partial=fresh_stage)
        if fresh_stage:
            self.stage_start_step.assign(self.global_step)
        self.log(f"Resumed from {latest} at epoch {int(self.epoch.numpy())}, step "
                 f"{int(self.step_in_epoch.numpy())} of {self.steps_per_epoch}")
        self.resumed = True

    def log(self, message):
        """A line of the run's story: printed, and in absl's INFO log (--log_dir's file)."""
        if self.config.verbose and self.chief:
            print(message, flush=True)
            logging.info(message)

    def _stage_two_begins_at(self, latest, start_epoch):
        """Whether checkpoint `latest` ends a stage 1 that stage 2 now follows, saved before
        stage 2 was entered (a heads-only run, --fine_tune_epochs=0, continued with more): its
        optimizer trained the heads alone, and stage 2 starts with a fresh one anyway."""
        return (self.stage is Stage.FINE_TUNE
                and start_epoch == int(self.fine_tune_start_epoch.numpy())
                and checkpoints.saved_value(latest, "step_in_epoch") == 0
                and checkpoints.saved_optimizer_size(latest) != len(
                    self.model.trainable_variables))

    def warn(self, message):
        """A warning line through absl logging (the chief's only), verbose or not."""
        if self.chief:
            logging.warning(message)

    def _dataset(self, split, input_context, training):
        batch = input_context.get_per_replica_batch_size(self.config.batch_size)
        return input_pipeline.build_dataset(self.config.input, split, batch, training=training,
                                            input_context=input_context)

    def stage_for_epoch(self, epoch):
        return stages.stage_for_epoch(self.config, epoch, int(self.fine_tune_start_epoch.numpy()))

    @property
    def total_epochs(self):
        """The run's length: --epochs, or stage 1 (as long as it lasted) plus --fine_tune_epochs."""
        if not self.config.fine_tune.enabled:
            return self.config.epochs
        return int(self.fine_tune_start_epoch.numpy()) + self.config.fine_tune.fine_tune_epochs

    def stage_start_epoch(self):
        """The first epoch (0-based) of the current stage."""
        return int(self.fine_tune_start_epoch.numpy()) if self.stage is Stage.FINE_TUNE else 0

    def end_stage_early(self):
        """Early stopping ends the current stage: FROZEN_BACKBONE gives way to FINE_TUNE from the
        current epoch on (returns True: train on); any other stage ends the run (False)."""
        if self.stage is not Stage.FROZEN_BACKBONE:
            return False
        self.fine_tune_start_epoch.assign(self.epoch)
        self.enter_due_stage()
        return True

    def enter_due_stage(self):
        """Enters the stage of the current epoch if the trainer is not in it yet."""
        stage = self.stage_for_epoch(int(self.epoch.numpy()))
        if stage is not self.stage:
            self.enter_stage(stage)

    def enter_stage(self, stage):
        """Sets trainable layers and a fresh optimizer and schedule for a stage, then retraces."""
        config = self.config
        stages.set_trainable_for(self.model, config, stage)
        lr, stage_epochs = stages.stage_lr_and_epochs(config, stage)
        schedule_config, _ = stages.stage_schedule(config, stage, self.steps_per_epoch)
        with self.strategy.scope():
            self.optimizer = make_optimizer(config.optimizer, lr, config.momentum, self.policy)
            self.optimizer.build(self.model.trainable_variables)
            self.schedule = schedules.make_schedule(
                schedule_config, lr=lr, steps_per_epoch=self.steps_per_epoch,
                total_steps=stage_epochs * self.steps_per_epoch)
            self.stage_start_step = _counter("stage_start_step", self.global_step.read_value())
            self.non_finite = tf.Variable(False, trainable=False,
                                          aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.checkpoint = tf.train.Checkpoint(**self._checkpoint_objects())
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.checkpoint_dir,
                                                  max_to_keep=self.config.keep_checkpoints)
        self._train_loop = make_train_loop(self)
        self._eval_step = make_eval_step(self)
        self.stage = stage
        if stage is Stage.FINE_TUNE:
            self.log(stages.describe_fine_tune_stage(config, self.schedule))

    def _checkpoint_objects(self):
        return dict(model=self.model, optimizer=self.optimizer, schedule=self.schedule,
                    epoch=self.epoch, step_in_epoch=self.step_in_epoch,
                    global_step=self.global_step, stage_start_step=self.stage_start_step,
                    **{_FINE_TUNE_START: self.fine_tune_start_epoch})

    def evaluate(self, split="validation"):
        """Runs the eval metrics over one pass of `split`; returns {val_name: value}."""
        self.val_metrics.reset()
        data = self.strategy.distribute_datasets_from_function(
            lambda ctx: self._dataset(split, ctx, training=False))
        for i, batch in enumerate(data):
            if self.config.validation_steps and i >= self.config.validation_steps:
                break
            self._eval_step(batch)
        return self.val_metrics.results()

    def train_steps(self, iterator, num_steps):
        """Runs `num_steps` training steps; returns the last global-batch loss (python float)."""
        loss = float(self._train_loop(iterator, num_steps))
        if bool(self.non_finite.numpy()):
            raise NonFiniteLossError(
                f"non-finite loss ({loss}) at epoch {int(self.epoch.numpy()) + 1}, step "
                f"{int(self.step_in_epoch.numpy())}; stopped. "
                f"{what_is_kept(self.restore_dir, self.config.model_dir)}; lower --lr "
                "or check the data")
        return loss

    def use_schedule(self, schedule):
        """Replaces the stage's schedule (counting from the current step) and retraces the loop."""
        self.schedule = schedule
        self.stage_start_step.assign(self.global_step)
        self._train_loop = make_train_loop(self)

    def learning_rate(self):
        return float(self.schedule.learning_rate(self.global_step - self.stage_start_step))

    def save_checkpoint(self):
        """Saves on every worker (the save is collective); only the chief's lands in model_dir.

        A full disk is a one-line files.DiskFullError naming the folder, not TensorFlow's
        traceback (ENOSPC and EDQUOT reach Python as ResourceExhaustedError).
        """
        try:
            return self.manager.save(checkpoint_number=self.global_step)
        except (tf.errors.ResourceExhaustedError, OSError) as error:
            if isinstance(error, OSError) and not files.is_disk_full(error):
                raise
            raise run_files.disk_full_error(
                self.checkpoint_dir, f"checkpoint ckpt-{int(self.global_step.numpy())}",
                detail=one_line(error)) from error

    def fit(self, extra_callbacks=()):
        """Trains from the current state to `total_epochs`; returns the history dict.

        On SIGTERM it saves a checkpoint between host calls and raises `termination.Preempted`.
        """
        with termination.TerminationWatcher(self.strategy) as watcher:
            try:
                self.history = epoch_loop.fit(self, watcher, extra_callbacks)
                return self.history
            finally:
                self.profiler.stop()  # a profile of fewer steps when the run ends inside it


def what_is_kept(restore_dir, model_dir):
    """What a stop leaves untouched to resume from or use, for its message."""
    latest = tf.train.latest_checkpoint(restore_dir)
    best = os.path.exists(os.path.join(model_dir, "best.keras"))
    if latest and best:
        return f"The last good checkpoint, {latest}, and best.keras are intact"
    if latest:
        return f"The last good checkpoint, {latest}, is intact"
    return "The run's best.keras is intact" if best else "Nothing was saved yet"


def make_train_loop(trainer):
    """The compiled host call: `num_steps` steps of `strategy.run`, each with its learning
    rate from the schedule, augmentation seeded by global step and replica, and a stop at the
    first non-finite loss."""
    strategy, model, config = trainer.strategy, trainer.model, trainer.config
    optimizer, schedule = trainer.optimizer, trainer.schedule
    input_config = config.input
    seed = 0 if input_config.seed is None else input_config.seed

    def forward_backward(images, batch_labels):
        with tf.GradientTape() as tape:
            outputs = model(images, training=True)
            per_head = heads.per_example_losses(batch_labels, outputs, config.regression_loss)
            per_example = heads.total_loss(per_head, config.loss_weights)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=config.batch_size)
            scaled = (optimizer.scale_loss(loss)
                      if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        return loss, outputs, per_head, grads

    if config.runtime.jit_compile:
        forward_backward = tf.function(forward_backward, jit_compile=True)

    def replica_step(images, batch_labels, step):
        # A seed per global step and replica: a resumed run crops as the first run did.
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        step_seed = tf.stack([tf.constant(seed, tf.int64),
                              step * strategy.num_replicas_in_sync + tf.cast(replica, tf.int64)])
        images = augment.augment_batch(images, input_config.img_dim, input_config.augment,
                                       step_seed)
        loss, outputs, per_head, grads = forward_backward(images, batch_labels)
        optimizer.apply(grads, model.trainable_variables)
        trainer.train_metrics.update(batch_labels, outputs, per_head, config.loss_weights)
        return loss

    def step(iterator):
        stage_step = trainer.global_step - trainer.stage_start_step
        optimizer.learning_rate.assign(schedule.learning_rate(stage_step))
        images, batch_labels = next(iterator)
        per_replica = strategy.run(replica_step,
                                   args=(images, batch_labels, trainer.global_step.value()))
        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
        trainer.global_step.assign_add(1)
        trainer.step_in_epoch.assign_add(1)
        return loss

    @tf.function
    def one_step(iterator):
        loss = step(iterator)
        if not tf.math.is_finite(loss):
            trainer.non_finite.assign(True)
        return loss

    @tf.function
    def train_loop(iterator, num_steps):
        loss = tf.constant(0.0)
        for _ in tf.range(num_steps):
            loss = step(iterator)
            if not tf.math.is_finite(loss):
                trainer.non_finite.assign(True)
                break
        return loss

    def train_steps(iterator, num_steps):
        # With --steps_per_loop=1 a host call is one step, run without the tf.range loop, as
        # Keras runs steps_per_execution=1: the loop costs time (docs/performance.md).
        # Otherwise a call of one step (an epoch's last) takes the loop: no second trace.
        if num_steps == 1 and config.runtime.steps_per_loop == 1:
            return one_step(iterator)
        return train_loop(iterator, tf.constant(num_steps, tf.int64))

    train_steps.compiled = {"one_step": one_step, "loop": train_loop}  # for tests to inspect
    return train_steps


def make_eval_step(trainer):
    """The compiled validation step: the eval metrics updated on one batch, per replica."""
    def replica_step(images, batch_labels):
        outputs = trainer.model(images, training=False)
        per_head = heads.per_example_losses(batch_labels, outputs, trainer.config.regression_loss)
        trainer.val_metrics.update(batch_labels, outputs, per_head, trainer.config.loss_weights)

    @tf.function
    def eval_step(batch):
        trainer.strategy.run(replica_step, args=batch)

    return eval_step
